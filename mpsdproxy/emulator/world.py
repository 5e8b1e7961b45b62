"""The stand-in's world widened by recordings: every SCID, session template and hopper
their MPSD calls name, so a capture re-sent to the stand-in (`resend --to`) meets the
service configurations it was made against instead of a 404 for each unknown one.

A template gets the constants the service reported for the first session of it that
the recordings show (a template is the title's configuration, which the service merges
into every new session and holds a request's constants against: protocol notes §4.1,
409), and empty ones when no answer shows them. Whatever the config names already
stays as the config says it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy.emulator.config import EmulatorConfig
from mpsdproxy.emulator.config import ScidConfig
from mpsdproxy.emulator.config import TemplateConfig
from mpsdproxy.resources import Kind

__all__ = ["with_world_of", "world_of_files"]


@dataclasses.dataclass
class _Scid:
    """A SCID as the recordings name it: each template with the constants reported for it
    (None until an answer shows them), and the hoppers (an ordered set)."""

    name: str
    templates: dict[str, dict[str, Any] | None] = dataclasses.field(default_factory=dict)
    hoppers: dict[str, None] = dataclasses.field(default_factory=dict)


def _learn(world: dict[str, _Scid], exchange: model.Exchange) -> None:
    resource = exchange.request.resource
    if not resource.scid:
        return
    scid = world.setdefault(resource.scid.lower(), _Scid(resource.scid))
    if resource.template:
        known = scid.templates.setdefault(resource.template, None)
        document = exchange.response.json if exchange.response is not None else None
        if known is None and isinstance(document, dict) and isinstance(
                document.get("constants"), dict):
            scid.templates[resource.template] = document["constants"]
    if resource.kind in (Kind.HOPPER, Kind.TICKET) and resource.name:
        scid.hoppers.setdefault(resource.name, None)


def world_of_files(paths: Iterable[str | os.PathLike[str]]) -> list[ScidConfig]:
    """The SCIDs, templates and hoppers the recordings' calls name (unreadable lines
    skipped, as `report` skips them). Raises ValueError when a file names none."""
    world: dict[str, _Scid] = {}
    for path in paths:
        before = sum(len(s.templates) + len(s.hoppers) for s in world.values())
        for item in recording.iter_records(path, messages=False):
            if isinstance(item, dict):
                try:
                    _learn(world, recording.to_exchange(item))
                except ValueError:
                    continue  # a record no wire could carry: nothing to learn from it
        if sum(len(s.templates) + len(s.hoppers) for s in world.values()) == before:
            raise ValueError(f"{os.fspath(path)}: no session template or hopper of "
                             "any SCID in it: nothing to add to the stand-in's world")
    return [ScidConfig(s.name, tuple(_template(name, constants)
                                     for name, constants in s.templates.items()),
                       tuple(s.hoppers)) for s in world.values()]


def _template(name: str, constants: dict[str, Any] | None) -> TemplateConfig:
    constants = constants or {"system": {}, "custom": {}}
    system = constants.get("system")
    capabilities = system.get("capabilities") if isinstance(system, dict) else None
    large = isinstance(capabilities, dict) and capabilities.get("large") is True
    return TemplateConfig(name, constants, large)


def with_world_of(config: EmulatorConfig, scids: Iterable[ScidConfig]) -> EmulatorConfig:
    """`config` with `scids` added: a SCID it lacks whole, and to a SCID it has, the
    templates and hoppers it lacks (names compare without case, as the service's do)."""
    merged = {s.scid.lower(): s for s in config.scids}
    for scid in scids:
        have = merged.get(scid.scid.lower())
        if have is None:
            merged[scid.scid.lower()] = scid
            continue
        templates = [t for t in scid.templates if have.template(t.name) is None]
        hoppers = [h for h in scid.hoppers if have.hopper(h) is None]
        merged[scid.scid.lower()] = dataclasses.replace(
            have, templates=(*have.templates, *templates), hoppers=(*have.hoppers, *hoppers))
    return dataclasses.replace(config, scids=tuple(merged.values()))
