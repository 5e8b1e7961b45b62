"""The stand-in's world widened by recordings: every SCID, session template and hopper
their MPSD calls name, so a capture re-sent to the stand-in (`resend --to`) meets the
service configurations it was made against instead of a 404 for each unknown one.

A template gets the constants the service reported for the first session of it that
the recordings show (a template is the title's configuration, which the service merges
into every new session and holds a request's constants against: protocol notes §4.1,
409), and empty ones when no answer shows them. The members' gamertags and the title id
the answers show come along too, so the documents the stand-in writes read as the
service's did. Whatever the config says already stays as the config says it: its
templates, hoppers and gamertags, and its title id unless left at the default.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy.emulator.config import DEFAULT_TITLE_ID
from mpsdproxy.emulator.config import EmulatorConfig
from mpsdproxy.emulator.config import ScidConfig
from mpsdproxy.emulator.config import TemplateConfig
from mpsdproxy.emulator.config import template_config
from mpsdproxy.resources import Kind

__all__ = ["World", "with_world_of", "world_of_files"]


@dataclasses.dataclass(frozen=True)
class World:
    """What recordings tell of the service they were made against."""

    scids: tuple[ScidConfig, ...] = ()
    gamertags: Mapping[str, str] = dataclasses.field(default_factory=dict)  # XUID -> gamertag
    title_id: int | None = None


@dataclasses.dataclass
class _Scid:
    """A SCID as the recordings name it: each template with the constants reported for it
    (None until an answer shows them), and the hoppers (an ordered set)."""

    name: str
    templates: dict[str, dict[str, Any] | None] = dataclasses.field(default_factory=dict)
    hoppers: dict[str, None] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Learner:
    scids: dict[str, _Scid] = dataclasses.field(default_factory=dict)
    gamertags: dict[str, str] = dataclasses.field(default_factory=dict)
    title_id: int | None = None

    def learn(self, exchange: model.Exchange) -> bool:
        """Take in what one exchange names; whether it names a template or a hopper."""
        resource = exchange.request.resource
        document = exchange.response.json if exchange.response is not None else None
        if isinstance(document, dict):
            self._people(document)
        if not resource.scid:
            return False
        scid = self.scids.setdefault(resource.scid.lower(), _Scid(resource.scid))
        if resource.template:
            known = scid.templates.setdefault(resource.template, None)
            constants = document.get("constants") if isinstance(document, dict) else None
            if known is None and isinstance(constants, dict):
                scid.templates[resource.template] = constants
        if resource.kind in (Kind.HOPPER, Kind.TICKET) and resource.name:
            scid.hoppers.setdefault(resource.name, None)
        return bool(resource.template) or resource.kind in (Kind.HOPPER, Kind.TICKET)

    def _people(self, document: dict[str, Any]) -> None:
        """Gamertags by XUID from a session's members, the title id from a member's
        `activeTitleId` or a handle's `titleId` (the first one seen)."""
        members = document.get("members")
        for member in members.values() if isinstance(members, dict) else ():
            if not isinstance(member, dict):
                continue
            constants = member.get("constants")
            system = constants.get("system") if isinstance(constants, dict) else None
            xuid = system.get("xuid") if isinstance(system, dict) else None
            gamertag = member.get("gamertag")
            if isinstance(xuid, str) and isinstance(gamertag, str) and gamertag:
                self.gamertags.setdefault(xuid, gamertag)
            self._title(member.get("activeTitleId"))
        self._title(document.get("titleId"))

    def _title(self, value: Any) -> None:
        if self.title_id is None and isinstance(value, str) and value.isascii() \
                and value.isdigit():
            self.title_id = int(value)

    def world(self) -> World:
        return World(tuple(ScidConfig(s.name, tuple(_template(name, constants)
                                                    for name, constants in s.templates.items()),
                                      tuple(s.hoppers)) for s in self.scids.values()),
                     dict(self.gamertags), self.title_id)


def world_of_files(paths: Iterable[str | os.PathLike[str]]) -> World:
    """What the recordings' calls and answers name (unreadable lines skipped, as `report`
    skips them). Raises ValueError when a file names no template or hopper."""
    learner = _Learner()
    for path in paths:
        named = False
        for item in recording.iter_records(path, messages=False):
            if isinstance(item, dict):
                try:
                    named = learner.learn(recording.to_exchange(item)) or named
                except ValueError:
                    continue  # a record no wire could carry: nothing to learn from it
        if not named:
            raise ValueError(f"{os.fspath(path)}: no session template or hopper of "
                             "any SCID in it: nothing to add to the stand-in's world")
    return learner.world()


def _template(name: str, constants: dict[str, Any] | None) -> TemplateConfig:
    """The template as the config would hold it; constants the config would refuse (no
    service sends them) are left out rather than trusted."""
    try:
        return template_config(name, constants)
    except ValueError:
        return template_config(name)


def with_world_of(config: EmulatorConfig, world: World) -> EmulatorConfig:
    """`config` with `world` added: a SCID it lacks whole, to a SCID it has the templates
    and hoppers it lacks (names compare without case, as the service's do), the gamertags
    it lacks, and the title id when it has the default one."""
    merged = {s.scid.lower(): s for s in config.scids}
    for scid in world.scids:
        have = merged.get(scid.scid.lower())
        if have is None:
            merged[scid.scid.lower()] = scid
            continue
        templates = [t for t in scid.templates if have.template(t.name) is None]
        hoppers = [h for h in scid.hoppers if have.hopper(h) is None]
        merged[scid.scid.lower()] = dataclasses.replace(
            have, templates=(*have.templates, *templates), hoppers=(*have.hoppers, *hoppers))
    title_id = config.title_id
    if title_id == DEFAULT_TITLE_ID and world.title_id is not None:
        title_id = world.title_id
    return dataclasses.replace(config, scids=tuple(merged.values()), title_id=title_id,
                               gamertags={**world.gamertags, **config.gamertags})
