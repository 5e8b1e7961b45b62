"""The stand-in's config: which SCIDs, templates and hoppers exist, who may only read,
and the FGRL budgets. Everything the stand-in is told rather than taught by requests.

Read through `mpsdproxy.yamlfile`, the package's one YAML-with-positions loader, so
a problem reads as every input file's do: `file:line:column: key.path: problem`.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from mpsdproxy import fgrl
from mpsdproxy import yamlfile
from mpsdproxy.yamlfile import KeyPath

__all__ = [
    "CONFIG_VERSION",
    "DEFAULT_CONFIG_PATH",
    "ConfigError",
    "RateLimit",
    "TemplateConfig",
    "ScidConfig",
    "Overload",
    "MatchmakingConfig",
    "EmulatorConfig",
    "DEFAULT_TITLE_ID",
    "default_gamertag",
    "parse_config",
    "template_config",
    "load_config",
    "default_config",
]

CONFIG_VERSION = 1
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "data" / "emulator.yaml"

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_EMPTY = f"the file is empty; it needs at least `version: {CONFIG_VERSION}`"
#: The title id the stand-in reports when the config names none (members' activeTitleId,
#: handles' titleId). Any 32-bit unsigned number will do: the library reads it as one.
DEFAULT_TITLE_ID = 1234567890
_XUID = re.compile(r"[0-9]{1,20}")


class ConfigError(yamlfile.InputError):
    """A config that does not describe a stand-in; each problem names file, line, column
    and key."""


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} should be a whole number of at least 1, "
                         f"not {yamlfile.show(value)}")


@dataclass(frozen=True)
class RateLimit:
    """FGRL limits per caller: requests in the 15 s burst and 300 s sustained windows."""

    burst: int = 30
    sustained: int = 300

    def __post_init__(self) -> None:
        _positive("burst", self.burst)
        _positive("sustained", self.sustained)

    @property
    def budget(self) -> fgrl.Budget:
        """The same limits as the FGRL window counts them."""
        return fgrl.Budget(self.burst, self.sustained)


@dataclass(frozen=True)
class TemplateConfig:
    """A session template: its constants, whether it is large, and its own rate limit.

    `large` is what the template's `constants.system.capabilities.large` says (the
    parser keeps the two in step); a session is large when its own constants say so
    (`documents.is_large`), so a request may make a session of any template large.
    """

    name: str
    constants: dict[str, Any] = field(
        default_factory=lambda: {"system": {}, "custom": {}}, hash=False
    )
    large: bool = False
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class ScidConfig:
    """A service configuration: its templates and hoppers (names match without case)."""

    scid: str
    templates: tuple[TemplateConfig, ...] = ()
    hoppers: tuple[str, ...] = ()

    def template(self, name: str) -> TemplateConfig | None:
        low = name.lower()
        return next((t for t in self.templates if t.name.lower() == low), None)

    def hopper(self, name: str) -> str | None:
        low = name.lower()
        return next((h for h in self.hoppers if h.lower() == low), None)


@dataclass(frozen=True)
class Overload:
    """The overload switch: 503 with this Retry-After for the next `requests` (None: all)."""

    retry_after: int
    requests: int | None = None

    def __post_init__(self) -> None:
        _positive("retry_after", self.retry_after)
        if self.requests is not None:
            _positive("requests", self.requests)


@dataclass(frozen=True)
class MatchmakingConfig:
    """How SmartMatch progresses: a ticket is found after `found_after_s` seconds when
    `players_per_match` tickets wait in its hopper, and expires after `expires_after_s`
    (or its own giveUpDuration, whichever comes first)."""

    found_after_s: float = 2.0
    expires_after_s: float = 60.0
    players_per_match: int = 2

    def __post_init__(self) -> None:
        for name in ("found_after_s", "expires_after_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} should be a number of seconds, "
                                 f"not {yamlfile.show(value)}")
        _positive("players_per_match", self.players_per_match)


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything the stand-in is told rather than taught by requests.

    `server_principals` are caller user hashes that act as a server (may delete
    other members); `gamertags` and `friends` are keyed by XUID (decimal strings);
    `require_signature` makes a request without a `Signature` header answer 403;
    `control_token`, when set, is required on the control API (`X-Emulator-Token`).
    """

    scids: tuple[ScidConfig, ...] = ()
    read_only_users: frozenset[str] = frozenset()
    rate_limit: RateLimit = field(default_factory=RateLimit)
    overload: Overload | None = None
    require_signature: bool = False
    server_principals: frozenset[str] = frozenset()
    gamertags: dict[str, str] = field(default_factory=dict, hash=False)
    friends: dict[str, frozenset[str]] = field(default_factory=dict, hash=False)
    matchmaking: MatchmakingConfig = field(default_factory=MatchmakingConfig)
    title_id: int = DEFAULT_TITLE_ID
    control_token: str | None = None

    def gamertag(self, xuid: str) -> str:
        """The gamertag the service shows for a XUID: the configured one, else "Player"
        and the XUID's last four digits."""
        return self.gamertags.get(xuid) or default_gamertag(xuid)

    def scid(self, scid: str) -> ScidConfig | None:
        low = scid.lower()
        return next((s for s in self.scids if s.scid.lower() == low), None)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> EmulatorConfig:
        """The config in a YAML file, or the shipped one for None (see load_config)."""
        return default_config() if path is None else load_config(path)


def default_gamertag(xuid: str) -> str:
    """The gamertag of a XUID the config does not name: "Player" and its last 4 digits."""
    return f"Player{xuid[-4:]}"


# --------------------------------------------------------------------------------------
# Parsing: plain data (with positions) -> EmulatorConfig


class _Invalid(yamlfile.FieldError):
    """A problem at a key path; `on_key` places it at the key rather than its value."""

    def __init__(self, key: KeyPath, message: str, on_key: bool = False) -> None:
        super().__init__(key, message)
        self.on_key = on_key


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), f"a {type(value).__name__}")


def _mapping(value: Any, path: KeyPath, allowed: Iterable[str]) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise _Invalid(path, f"should be a mapping, not {_kind_of(value)}")
    valid = tuple(allowed)
    for key in value:
        if key not in valid:
            raise _Invalid((*path, key), f"unknown key; valid keys are: {', '.join(valid)}",
                           on_key=True)
    return value


def _whole(value: Any, path: KeyPath) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Invalid(path, f"should be a whole number of at least 1, not {yamlfile.show(value)}")
    return value


def _parse_rate_limit(value: Any, path: KeyPath, inherit: RateLimit) -> RateLimit:
    data = _mapping(value, path, ("burst", "sustained"))
    burst = _whole(data.get("burst", inherit.burst), (*path, "burst"))
    sustained = _whole(data.get("sustained", inherit.sustained), (*path, "sustained"))
    return RateLimit(burst, sustained)


def _parse_constants(value: Any, path: KeyPath) -> dict[str, Any]:
    data = _mapping(value, path, ("system", "custom"))
    out: dict[str, Any] = {}
    for part in ("system", "custom"):
        section = data.get(part) or {}
        if not isinstance(section, dict):
            raise _Invalid((*path, part), f"should be a mapping, not {_kind_of(section)}")
        out[part] = copy.deepcopy(section)
    return out


def _parse_template(name: Any, value: Any, path: KeyPath, inherit: RateLimit) -> TemplateConfig:
    if not isinstance(name, str) or not name or "/" in name:
        raise _Invalid(path, f"a template name should be a non-empty string, not {name!r}",
                       on_key=True)
    data = _mapping(value if value is not None else {}, path,
                    ("constants", "large", "rate_limit"))
    large = data.get("large", False)
    if not isinstance(large, bool):
        raise _Invalid((*path, "large"), f"should be true or false, not {large!r}")
    limit = data.get("rate_limit")
    constants = _parse_constants(data.get("constants") or {}, (*path, "constants"))
    large = _large(constants, large, path)
    return TemplateConfig(
        name=name,
        constants=constants,
        large=large,
        rate_limit=None if limit is None else _parse_rate_limit(
            limit, (*path, "rate_limit"), inherit),
    )


def template_config(name: str, constants: Any = None) -> TemplateConfig:
    """A template as a config file's `templates: {NAME: {constants: ...}}` gives it: the
    same checks and the same large-ness (`world` builds templates from recordings with
    it). Raises ValueError for what the file would refuse."""
    return _parse_template(name, {} if constants is None else {"constants": constants},
                           ("templates", name), RateLimit())


def _large(constants: dict[str, Any], large: bool, path: KeyPath) -> bool:
    """Whether the template is large: `large: true` or `constants.system.capabilities.large`
    (the field the library reads, multiplayer_session.cpp ~L1478); `large: true` writes
    the capability into the constants so sessions carry it."""
    capabilities = constants["system"].get("capabilities")
    if capabilities is not None and not isinstance(capabilities, dict):
        raise _Invalid((*path, "constants", "system", "capabilities"),
                       f"should be a mapping, not {_kind_of(capabilities)}")
    stated = (capabilities or {}).get("large")
    if stated is not None and not isinstance(stated, bool):
        raise _Invalid((*path, "constants", "system", "capabilities", "large"),
                       f"should be true or false, not {stated!r}")
    if large and stated is False:
        raise _Invalid((*path, "large"), "is true but constants.system.capabilities.large "
                                         "is false; say it once")
    if large:
        constants["system"]["capabilities"] = {**(capabilities or {}), "large": True}
    return large or stated is True


def _names(value: Any, path: KeyPath) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Invalid(path, f"should be a list of names, not {_kind_of(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str | int) or isinstance(item, bool) or not str(item):
            raise _Invalid((*path, i), f"should be a name, not {item!r}")
    return tuple(str(item) for item in value)


def _unique(names: Iterable[tuple[str, KeyPath]], on_key: bool = False) -> None:
    """Refuse a name given twice (names match without case), at its second place."""
    seen: set[str] = set()
    for name, path in names:
        if name.lower() in seen:
            raise _Invalid(path, f"{name!r} is listed twice (names match without case)",
                           on_key=on_key)
        seen.add(name.lower())


def _parse_scid(scid: Any, value: Any, path: KeyPath, inherit: RateLimit) -> ScidConfig:
    if not isinstance(scid, str) or not _GUID.fullmatch(scid):
        raise _Invalid(path, f"a SCID should be a GUID like 7492baca-c1b4-440d-a391-"
                             f"b7ef00000001, not {scid!r}", on_key=True)
    data = _mapping(value if value is not None else {}, path, ("templates", "hoppers"))
    templates_path = (*path, "templates")
    raw = data.get("templates") or {}
    if not isinstance(raw, dict):
        raise _Invalid(templates_path, f"should be a mapping of names, not {_kind_of(raw)}")
    templates = tuple(_parse_template(name, spec, (*templates_path, name), inherit)
                      for name, spec in raw.items())
    _unique(((t.name, (*templates_path, t.name)) for t in templates), on_key=True)
    hoppers = _names(data.get("hoppers"), (*path, "hoppers"))
    _unique((h, (*path, "hoppers", i)) for i, h in enumerate(hoppers))
    return ScidConfig(scid, templates, hoppers)


def _parse_overload(value: Any, path: KeyPath) -> Overload | None:
    if value is None or value is False:
        return None
    data = _mapping(value, path, ("retry_after", "requests"))
    if "retry_after" not in data:
        raise _Invalid(path, "needs retry_after (whole seconds)", on_key=True)
    retry_after = _whole(data["retry_after"], (*path, "retry_after"))
    requests = data.get("requests")
    return Overload(retry_after,
                    None if requests is None else _whole(requests, (*path, "requests")))


def _flag(value: Any, path: KeyPath) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _Invalid(path, f"should be true or false, not {yamlfile.show(value)}")
    return value


def _xuid(value: Any, path: KeyPath, on_key: bool = False) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _XUID.fullmatch(text):
        raise _Invalid(path, f"a XUID should be a decimal number like 2533274800000001, "
                             f"not {yamlfile.show(value)}", on_key=on_key)
    return text


def _parse_gamertags(value: Any, path: KeyPath) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid(path, f"should be a mapping of XUIDs to gamertags, not {_kind_of(value)}")
    out: dict[str, str] = {}
    for key, tag in value.items():
        xuid = _xuid(key, (*path, key), on_key=True)
        if not isinstance(tag, str | int) or isinstance(tag, bool) or not str(tag).strip():
            raise _Invalid((*path, key), f"should be a gamertag, not {tag!r}")
        out[xuid] = str(tag)
    return out


def _parse_friends(value: Any, path: KeyPath) -> dict[str, frozenset[str]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid(path, f"should be a mapping of XUIDs to lists of XUIDs, not "
                             f"{_kind_of(value)}")
    out: dict[str, frozenset[str]] = {}
    for key, listed in value.items():
        xuid = _xuid(key, (*path, key), on_key=True)
        if listed is None:
            listed = []
        if not isinstance(listed, list):
            raise _Invalid((*path, key), f"should be a list of XUIDs, not {_kind_of(listed)}")
        out[xuid] = frozenset(_xuid(item, (*path, key, i)) for i, item in enumerate(listed))
    return out


def _seconds(value: Any, path: KeyPath) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _Invalid(path, "should be a number of seconds (0 or more), "
                             f"not {yamlfile.show(value)}")
    return float(value)


def _parse_matchmaking(value: Any, path: KeyPath) -> MatchmakingConfig:
    if value is None:
        return MatchmakingConfig()
    data = _mapping(value, path, ("found_after_s", "expires_after_s", "players_per_match"))
    default = MatchmakingConfig()
    return MatchmakingConfig(
        found_after_s=_seconds(data.get("found_after_s", default.found_after_s),
                               (*path, "found_after_s")),
        expires_after_s=_seconds(data.get("expires_after_s", default.expires_after_s),
                                 (*path, "expires_after_s")),
        players_per_match=_whole(data.get("players_per_match", default.players_per_match),
                                 (*path, "players_per_match")),
    )


def _title_id(value: Any, path: KeyPath) -> int:
    if value is None:
        return DEFAULT_TITLE_ID
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**32:
        raise _Invalid(path, f"should be a title id, a whole number 1-4294967295, "
                             f"not {yamlfile.show(value)}")
    return value


def _token(value: Any, path: KeyPath) -> str | None:
    """The control API's token (`X-Emulator-Token`); `emulate --control-token` wins."""
    if value is None:
        return None
    if isinstance(value, str) and value and value == value.strip() and value.isprintable():
        return value
    kind = ("an empty, padded or unprintable string" if isinstance(value, str)
            else _kind_of(value))  # never the value itself: it is a secret
    raise _Invalid(path, f"should be a token: printable characters, no spaces at either end; "
                         f"not {kind}")


_TOP_KEYS = ("version", "scids", "read_only_users", "rate_limit", "overload",
             "require_signature", "server_principals", "gamertags", "friends", "matchmaking",
             "title_id", "control_token")


def _parse(data: Any) -> EmulatorConfig:
    top = _mapping(data, (), _TOP_KEYS)
    if "version" not in top:
        raise _Invalid((), f"missing `version: {CONFIG_VERSION}` at the top of the file")
    if top["version"] != CONFIG_VERSION:
        raise _Invalid(("version",), f"this stand-in reads version {CONFIG_VERSION}, not "
                                     f"{top['version']!r}; start from the shipped emulator.yaml")
    limit = RateLimit()
    if top.get("rate_limit") is not None:
        limit = _parse_rate_limit(top["rate_limit"], ("rate_limit",), limit)
    raw = top.get("scids") or {}
    if not isinstance(raw, dict):
        raise _Invalid(("scids",), f"should be a mapping of SCIDs, not {_kind_of(raw)}")
    scids = tuple(_parse_scid(scid, spec, ("scids", scid), limit) for scid, spec in raw.items())
    _unique(((s.scid, ("scids", s.scid)) for s in scids), on_key=True)
    return EmulatorConfig(
        scids=scids,
        read_only_users=frozenset(_names(top.get("read_only_users"), ("read_only_users",))),
        rate_limit=limit,
        overload=_parse_overload(top.get("overload"), ("overload",)),
        require_signature=_flag(top.get("require_signature"), ("require_signature",)),
        server_principals=frozenset(_names(top.get("server_principals"),
                                           ("server_principals",))),
        gamertags=_parse_gamertags(top.get("gamertags"), ("gamertags",)),
        friends=_parse_friends(top.get("friends"), ("friends",)),
        matchmaking=_parse_matchmaking(top.get("matchmaking"), ("matchmaking",)),
        title_id=_title_id(top.get("title_id"), ("title_id",)),
        control_token=_token(top.get("control_token"), ("control_token",)),
    )


def _validate(document: yamlfile.Document, source: str) -> EmulatorConfig:
    if document.problems:
        raise ConfigError(document.problems)
    try:
        return _parse(document.data)
    except _Invalid as e:
        raise ConfigError([document.problem(e.key, e.message, source, key=e.on_key)]) from None


def parse_config(text: str, source: str = "<config>") -> EmulatorConfig:
    """Validate YAML text into an EmulatorConfig; ConfigError (a ValueError) names the
    line, column and key of the first problem."""
    return _validate(yamlfile.read_text(text, source, empty=_EMPTY), source)


def load_config(path: str | os.PathLike[str]) -> EmulatorConfig:
    """Read and validate a YAML config file; ConfigError names the file, line and key."""
    return _validate(yamlfile.read_file(path, empty=_EMPTY), os.fspath(path))


def default_config() -> EmulatorConfig:
    """The shipped config (`mpsdproxy/data/emulator.yaml`)."""
    return load_config(DEFAULT_CONFIG_PATH)
