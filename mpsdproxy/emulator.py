"""A local MPSD stand-in: the session directory's semantics, in memory.

It is the default upstream for the demo, the tests and anyone without access
to the real service, and it can produce every row of the status table from a
real request. Responses are built with `faults.build`, so their content type,
body kind and required headers come from the catalog, exactly as an injected
fault's do; the stand-in adds what the service adds around them (`Date`,
`X-XblCorrelationId`, `ETag`, `Content-Location`, `Location`; protocol notes
§2.2).

Which request produces which row, with the shipped config
(`mpsdproxy/data/emulator.yaml`). `S` is
`/serviceconfigs/7492baca-c1b4-440d-a391-b7ef00000001/sessiontemplates/LobbySession/sessions/lobby`
and `H` is `/serviceconfigs/7492baca-c1b4-440d-a391-b7ef00000001/hoppers/QuickMatch`.
Every request carries `Authorization: XBL3.0 x=<userhash>;<token>` and
`x-xbl-contract-version: 107` unless the row says otherwise.

    entry id                  request
    ------------------------  ---------------------------------------------------------------
    200.ok                    GET S; PUT S on an existing session; GET/POST handles, queries,
                              POST H (a ticket), GET H/stats
    201.created               PUT S {"members":{"me":{}}} on a new session; POST /handles
    202.accepted              DELETE H/tickets/{ticketId}
    204.get-session           GET S when the session does not exist
    204.get-element           GET S/members/7 (or S/servers/x) on a session without it
    204.put-session-deleted   PUT S {"members":{"me":null}} by the last member; PUT S that
                              creates a session with no member (nothing is created)
    204.element-gone          DELETE S/members/me, S/members/{index} or S/servers/{name}
    304.not-modified          GET S with If-None-Match: <its current ETag>
    400.bad-request           PUT S with a body that is not a JSON object (or wrong types);
                              any request without x-xbl-contract-version
    403.forbidden             any request without, or with a malformed, Authorization
    403.read-only             PUT S by a `read_only_users` caller (`spectator`) when S exists
    404.not-found             unknown SCID, template, handle, hopper or ticket; unparsable URI
    405.method-not-allowed    POST or DELETE S (Allow: GET, PUT); PUT /handles (Allow: POST)
    409.conflict              PUT S {"constants":{"system":{"maxMembersCount":99}}}
    412.precondition-failed   PUT S with If-None-Match: * when S exists, or with If-Match
                              (any value) when it does not
    412.if-match-session      PUT S with If-Match: <an older ETag> (the reply carries the
                              whole current session and its current ETag)
    429.too-many-requests     a third request within 15 s by one caller on ThrottledSession
                              (its burst limit is 2)
    503.service-unavailable   any MPSD request after POST /_emulator/overload

Choices where the protocol notes are silent:

- DELETE of a matchmaking ticket answers 202 Accepted: the cancellation is
  accepted and, on the real service, completes asynchronously. The stand-in
  forgets the ticket at once, so a later GET of it answers 404.
- DELETE /handles/{id} answers 200 with the deleted handle (404 when unknown).
- GET /handles/{id}/session for a handle whose session does not exist answers
  204 (a GET for a session that doesn't exist).
- The caller's XUID is the one its first write names in
  `members.me.constants.system.xuid`; before that, the user hash itself when
  it is all digits, else a stable number derived from it. A later write that
  names another XUID for the same caller gets 403.
- Rate limits: every request counts toward the caller's title-wide windows
  (`rate_limit`); a request on a template that sets its own `rate_limit`
  counts toward that template's windows as well, and is throttled when either
  is exceeded. Accepted requests fill the burst window, every request (the
  throttled ones too) the sustain window. Retry-After is the whole number of
  seconds until both windows admit one more request; the FGRL body names the
  window that sets it. Matchmaking (hoppers, tickets) counts separately from
  the session directory, as the two are separate services.
- Every committed write bumps `changeNumber` and the ETag, even one that
  changes nothing; so does creating a handle that names an existing session.
- Reads of a `large: true` session show only the caller's own member.

Switches for scripts, never MPSD paths and never throttled or overloaded:
`POST /_emulator/overload` (`{"retry_after": 2, "requests": 1}`),
`POST /_emulator/recover`, `POST /_emulator/reset` and `GET /_emulator/sessions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import email.utils
import hashlib
import itertools
import json
import logging
import math
import os
import re
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from urllib.parse import urlsplit

import h11
import yaml

from mpsdproxy import faults
from mpsdproxy import resources
from mpsdproxy.resources import Kind
from mpsdproxy.resources import Resource

__all__ = [
    "BURST_PERIOD",
    "SUSTAIN_PERIOD",
    "CONFIG_VERSION",
    "DEFAULT_CONFIG_PATH",
    "ConfigError",
    "RateLimit",
    "TemplateConfig",
    "ScidConfig",
    "Overload",
    "EmulatorConfig",
    "parse_config",
    "load_config",
    "default_config",
    "Emulator",
    "serve",
    "run",
    "running",
]

logger = logging.getLogger(__name__)

#: The FGRL windows, in seconds (protocol notes §5.1).
BURST_PERIOD = 15
SUSTAIN_PERIOD = 300
CONFIG_VERSION = 1
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "data" / "emulator.yaml"

#: How long a ticket's search is said to take, in seconds.
TICKET_WAIT_TIME = 60
#: The contract version template listings report.
TEMPLATE_CONTRACT_VERSION = 107
#: Request heads may carry long XBL tokens; bodies are session deltas.
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
#: A keep-alive connection that stays silent this long is closed.
IDLE_TIMEOUT = 60.0
READ_SIZE = 64 * 1024

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_AUTH = re.compile(r"XBL3\.0\s+x=([^;\s]+);(\S.*)", re.IGNORECASE | re.DOTALL)
_RESERVE = re.compile(r"reserve_\d+", re.IGNORECASE)
_HANDLE_TYPES = ("activity", "invite", "transfer", "search")
#: Member constants a write may repeat without conflict and the service does not store
#: as sent: the caller's identity (checked before the merge), the index it assigns, and
#: the one-shot `initialize` request (absent from real responses, protocol notes §3.2).
_MEMBER_DIRECTIVES = ("xuid", "index", "initialize")
_NO_STORE = ("Cache-Control", "no-cache, no-store")
_REVALIDATE = ("Cache-Control", "max-age=0, must-revalidate")


# --------------------------------------------------------------------------------------
# Configuration


class ConfigError(ValueError):
    """A config that does not describe a stand-in. The message names file, line and key."""

    def __init__(self, source: str, line: int | None, key: str, problem: str) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")
        self.source = source
        self.line = line
        self.key = key
        self.problem = problem


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} should be a whole number of at least 1, not {value!r}")


@dataclass(frozen=True)
class RateLimit:
    """FGRL limits per caller: requests in the 15 s burst and 300 s sustain windows."""

    burst: int = 30
    sustained: int = 300

    def __post_init__(self) -> None:
        _positive("burst", self.burst)
        _positive("sustained", self.sustained)


@dataclass(frozen=True)
class TemplateConfig:
    """A session template: its constants, whether it is large, and its own rate limit."""

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


def _handle_type(body: dict[str, Any]) -> str:
    """The handle `type` of a request body; 400 when it is not one MPSD knows."""
    kind = body.get("type")
    if kind not in _HANDLE_TYPES:
        raise _Refusal("400.bad-request", f"type should be one of {', '.join(_HANDLE_TYPES)}"
                                          f", not {json.dumps(kind)}.")
    return kind


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything the stand-in is told rather than taught by requests."""

    scids: tuple[ScidConfig, ...] = ()
    read_only_users: frozenset[str] = frozenset()
    rate_limit: RateLimit = field(default_factory=RateLimit)
    overload: Overload | None = None

    def scid(self, scid: str) -> ScidConfig | None:
        low = scid.lower()
        return next((s for s in self.scids if s.scid.lower() == low), None)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> EmulatorConfig:
        """The config in a YAML file, or the shipped one for None (see load_config)."""
        return _resolve(path)


_ConfigPath = tuple[str | int, ...]


class _Invalid(Exception):
    """A config problem at a key path; turned into ConfigError with the line."""

    def __init__(self, path: _ConfigPath, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _mapping(value: Any, path: _ConfigPath, allowed: Iterable[str]) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise _Invalid(path, f"should be a mapping, not {_kind_of(value)}")
    valid = tuple(allowed)
    for key in value:
        if key not in valid:
            raise _Invalid((*path, key), f"unknown key; valid keys are: {', '.join(valid)}")
    return value


def _whole(value: Any, path: _ConfigPath) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Invalid(path, f"should be a whole number of at least 1, not {value!r}")
    return value


def _parse_rate_limit(value: Any, path: _ConfigPath, inherit: RateLimit) -> RateLimit:
    data = _mapping(value, path, ("burst", "sustained"))
    burst = _whole(data.get("burst", inherit.burst), (*path, "burst"))
    sustained = _whole(data.get("sustained", inherit.sustained), (*path, "sustained"))
    return RateLimit(burst, sustained)


def _parse_constants(value: Any, path: _ConfigPath) -> dict[str, Any]:
    data = _mapping(value, path, ("system", "custom"))
    out: dict[str, Any] = {}
    for part in ("system", "custom"):
        section = data.get(part) or {}
        if not isinstance(section, dict):
            raise _Invalid((*path, part), f"should be a mapping, not {_kind_of(section)}")
        out[part] = copy.deepcopy(section)
    return out


def _parse_template(name: Any, value: Any, path: _ConfigPath,
                    inherit: RateLimit) -> TemplateConfig:
    if not isinstance(name, str) or not name or "/" in name:
        raise _Invalid(path, f"a template name should be a non-empty string, not {name!r}")
    data = _mapping(value if value is not None else {}, path,
                    ("constants", "large", "rate_limit"))
    large = data.get("large", False)
    if not isinstance(large, bool):
        raise _Invalid((*path, "large"), f"should be true or false, not {large!r}")
    limit = data.get("rate_limit")
    return TemplateConfig(
        name=name,
        constants=_parse_constants(data.get("constants") or {}, (*path, "constants")),
        large=large,
        rate_limit=None if limit is None else _parse_rate_limit(
            limit, (*path, "rate_limit"), inherit),
    )


def _names(value: Any, path: _ConfigPath) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Invalid(path, f"should be a list of names, not {_kind_of(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str | int) or isinstance(item, bool) or not str(item):
            raise _Invalid((*path, i), f"should be a name, not {item!r}")
    return tuple(str(item) for item in value)


def _parse_scid(scid: Any, value: Any, path: _ConfigPath, inherit: RateLimit) -> ScidConfig:
    if not isinstance(scid, str) or not _GUID.fullmatch(scid):
        raise _Invalid(path, f"a SCID should be a GUID like 7492baca-c1b4-440d-a391-"
                             f"b7ef00000001, not {scid!r}")
    data = _mapping(value if value is not None else {}, path, ("templates", "hoppers"))
    templates_path = (*path, "templates")
    raw = data.get("templates") or {}
    if not isinstance(raw, dict):
        raise _Invalid(templates_path, f"should be a mapping of names, not {_kind_of(raw)}")
    templates = tuple(_parse_template(name, spec, (*templates_path, name), inherit)
                      for name, spec in raw.items())
    _unique([t.name for t in templates], templates_path)
    hoppers = _names(data.get("hoppers"), (*path, "hoppers"))
    _unique(list(hoppers), (*path, "hoppers"))
    return ScidConfig(scid, templates, hoppers)


def _unique(names: list[str], path: _ConfigPath) -> None:
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise _Invalid(path, f"{name!r} is listed twice (names match without case)")
        seen.add(name.lower())


def _parse_overload(value: Any, path: _ConfigPath) -> Overload | None:
    if value is None or value is False:
        return None
    data = _mapping(value, path, ("retry_after", "requests"))
    if "retry_after" not in data:
        raise _Invalid(path, "needs retry_after (whole seconds)")
    retry_after = _whole(data["retry_after"], (*path, "retry_after"))
    requests = data.get("requests")
    return Overload(retry_after, None if requests is None else _whole(requests,
                                                                         (*path, "requests")))


def _parse(data: Any) -> EmulatorConfig:
    if data is None:
        raise _Invalid((), f"the file is empty; it needs at least `version: {CONFIG_VERSION}`")
    top = _mapping(data, (), ("version", "scids", "read_only_users", "rate_limit", "overload"))
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
    _unique([s.scid for s in scids], ("scids",))
    return EmulatorConfig(
        scids=scids,
        read_only_users=frozenset(_names(top.get("read_only_users"), ("read_only_users",))),
        rate_limit=limit,
        overload=_parse_overload(top.get("overload"), ("overload",)),
    )


def _line_of(node: yaml.Node | None, path: _ConfigPath) -> int | None:
    """The 1-based line of the deepest node along `path` (the key's line in mappings)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in path:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    line, child = key.start_mark.line + 1, value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def parse_config(data: Any, source: str = "<config>",
                 node: yaml.Node | None = None) -> EmulatorConfig:
    """Validate plain data (as `yaml.safe_load` returns it) into an EmulatorConfig.

    `node`, the composed YAML of the same text, lets errors name the line.
    Raises ConfigError (a ValueError).
    """
    try:
        return _parse(data)
    except _Invalid as e:
        key = ".".join(str(p) for p in e.path)
        raise ConfigError(source, _line_of(node, e.path), key, e.problem) from None


def load_config(path: str | os.PathLike[str]) -> EmulatorConfig:
    """Read and validate a YAML config file; ConfigError names the file, line and key."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(source, None, "", f"cannot read the file: {e}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(source, line, "", f"not valid YAML: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(source, None, "", f"not valid YAML: {e}") from None
    return parse_config(data, source, node)


def default_config() -> EmulatorConfig:
    """The shipped config (`mpsdproxy/data/emulator.yaml`)."""
    return load_config(DEFAULT_CONFIG_PATH)


# --------------------------------------------------------------------------------------
# Fine-grained rate limiting


@dataclass(frozen=True)
class _Throttle:
    wait: float  # seconds until the windows admit one more request
    current: int
    maximum: int
    period: int


class _Limiter:
    """One caller's FGRL windows (protocol notes §5.1).

    Accepted requests fill the burst window; every request, throttled ones too,
    fills the sustain window, so a caller that keeps hammering stays throttled.
    The deques only hold timestamps inside their window: memory stays flat.
    """

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.burst: deque[float] = deque()
        self.sustain: deque[float] = deque()

    def _prune(self, now: float) -> None:
        while self.burst and now - self.burst[0] >= BURST_PERIOD:
            self.burst.popleft()
        while self.sustain and now - self.sustain[0] >= SUSTAIN_PERIOD:
            self.sustain.popleft()

    def tripped(self, now: float) -> bool:
        self._prune(now)
        return (len(self.burst) >= self.limit.burst
                or len(self.sustain) >= self.limit.sustained)

    def record(self, now: float, accepted: bool) -> None:
        self.sustain.append(now)
        if accepted:
            self.burst.append(now)

    def throttle(self, now: float) -> _Throttle | None:
        """After a request was recorded: the window that keeps the next one waiting longest."""
        found: list[_Throttle] = []
        n, limit = len(self.burst), self.limit.burst
        if n >= limit:
            found.append(_Throttle(self.burst[n - limit] + BURST_PERIOD - now, n + 1, limit,
                                   BURST_PERIOD))
        n, limit = len(self.sustain), self.limit.sustained
        if n >= limit:
            found.append(_Throttle(self.sustain[n - limit] + SUSTAIN_PERIOD - now, n, limit,
                                   SUSTAIN_PERIOD))
        return max(found, key=lambda t: t.wait, default=None)


# --------------------------------------------------------------------------------------
# The core


class _Refusal(Exception):
    """Answers the request at once with a row of the table (raised deep in a handler)."""

    def __init__(self, entry_id: str, message: str | bytes | None = None, *,
                 session: Any = None, etag: str | None = None, retry_after: int | None = None,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(entry_id, message)
        self.entry_id = entry_id
        self.message = message
        self.session = session
        self.etag = etag
        self.retry_after = retry_after
        self.headers = list(headers)


@dataclass(frozen=True)
class _Call:
    """One request as the handlers see it (header names and query keys lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    user: str = ""
    contract: int = 0

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").strip().lower() == "true"


def _make_call(method: str, target: str,
               headers: Iterable[tuple[str, str]] | Mapping[str, str], body: bytes) -> _Call:
    if "://" in target:
        parts = urlsplit(target)
        path, query = parts.path, parts.query
    else:
        path, _, query = target.split("#", 1)[0].partition("?")
    args: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        args.setdefault(key.lower(), value)
    names: dict[str, str] = {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        names.setdefault(str(key).lower(), str(value))
    return _Call(method.upper(), path or "/", args, names, bytes(body or b""))


@dataclass
class _Session:
    """A stored session: where it lives, its document and its current ETag."""

    scid: str
    template: TemplateConfig
    name: str
    document: dict[str, Any]
    etag: str

    @property
    def path(self) -> str:
        return (f"/serviceconfigs/{self.scid}/sessiontemplates/{self.template.name}"
                f"/sessions/{self.name}")

    @property
    def key(self) -> str:
        return f"{self.scid}~{self.template.name}~{self.name}".lower()


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _json_object(body: bytes, *, empty_ok: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or 400 saying what is wrong with it."""
    if not body.strip():
        if empty_ok:
            return {}
        raise _Refusal("400.bad-request",
                       "The request body is empty; it must be a JSON object ({} is valid).")
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise _Refusal("400.bad-request", f"The request body is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise _Refusal("400.bad-request",
                       f"The request body must be a JSON object, not {_json_kind(value)}.")
    return value


def _require_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Refusal("400.bad-request",
                       f"{where} must be a JSON object, not {_json_kind(value)}.")
    return value


def _require_sections(value: Any, where: str) -> dict[str, Any]:
    """An object whose `system` and `custom` parts, when present, are objects (or null)."""
    data = _require_object(value, where)
    for part in ("system", "custom"):
        if data.get(part) is not None:
            _require_object(data[part], f"{where}.{part}")
    return data


def _part(container: dict[str, Any], key: str) -> dict[str, Any]:
    """container[key] as an object, made one if missing (seeded documents may be partial)."""
    value = container.get(key)
    if not isinstance(value, dict):
        value = container[key] = {}
    return value


def _deep_merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Merge a delta into a document part: objects merge, null removes, the rest replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            _deep_merge(_part(target, key), value)
        else:
            target[key] = copy.deepcopy(value)


def _conflict(current: Mapping[str, Any], requested: Mapping[str, Any], where: str,
              *, new_keys: bool) -> str | None:
    """The first requested constant that differs from the stored one (None: compatible).

    Constants are fixed once set: a key the stored constants lack is a conflict
    too, unless `new_keys` (the session or member is being created).
    """
    for key, value in requested.items():
        here = f"{where}.{key}"
        if key not in current:
            if new_keys:
                continue
            return f"{here} is not set and can't be added once the session exists"
        stored = current[key]
        if isinstance(value, dict) and isinstance(stored, dict):
            found = _conflict(stored, value, here, new_keys=new_keys)
            if found:
                return found
        elif value != stored:
            return f"{here} is {json.dumps(stored)}, not {json.dumps(value)}"
    return None


def _member_xuid(member: Any) -> str | None:
    try:
        xuid = member["constants"]["system"]["xuid"]
    except (KeyError, TypeError):
        return None
    if isinstance(xuid, bool) or not isinstance(xuid, str | int):
        return None
    return str(xuid)


def _find_member(document: Mapping[str, Any], xuid: str) -> str | None:
    for index, member in document.get("members", {}).items():
        if _member_xuid(member) == xuid:
            return index
    return None


def _index_order(key: str) -> tuple[int, int, str]:
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def _refresh_members(document: dict[str, Any]) -> None:
    """Recompute membersInfo and each member's `next` link after the members changed."""
    members = document["members"]
    order = sorted(members, key=_index_order)
    info = document["membersInfo"]
    indices = [int(k) for k in order if k.isdigit()]
    info["next"] = max([int(info.get("next", 0)), *(i + 1 for i in indices)])
    info["first"] = indices[0] if indices else info["next"]
    info["count"] = len(order)
    info["accepted"] = sum(1 for k in order if not members[k].get("reserved"))
    info["active"] = sum(1 for k in order if _is_active(members[k]))
    document["members"] = {k: members[k] for k in order}
    for position, index in enumerate(indices):
        following = indices[position + 1] if position + 1 < len(indices) else info["next"]
        members[str(index)]["next"] = following


def _is_active(member: Mapping[str, Any]) -> bool:
    properties = member.get("properties")
    system = properties.get("system") if isinstance(properties, dict) else None
    return isinstance(system, dict) and system.get("active") is True


def _complete(document: dict[str, Any]) -> dict[str, Any]:
    """Give a document (a seeded one may be partial) every top-level key the core needs."""
    for key, default in (("constants", {}), ("properties", {}), ("members", {}),
                         ("servers", {}), ("membersInfo", {})):
        if not isinstance(document.get(key), dict):
            document[key] = copy.deepcopy(default)
    for part in ("constants", "properties"):
        _part(document[part], "system")
        _part(document[part], "custom")
    document["members"] = {str(k): v for k, v in document["members"].items()
                           if isinstance(v, dict)}
    if not isinstance(document.get("changeNumber"), int):
        document["changeNumber"] = 0
    document.setdefault("branch", str(uuid.uuid4()))
    document.setdefault("correlationId", str(uuid.uuid4()))
    return document


class _Merge:
    """Applies a PUT body (a delta, protocol notes §3.3) to a copy of a session document.

    Raises _Refusal for wrong types (400), changed constants and, on large
    sessions, members other than the caller added or removed (409), and member
    references that need a server principal (403).
    """

    def __init__(self, document: dict[str, Any], *, caller: str, now: str, creating: bool,
                 large: bool) -> None:
        self.document = document
        self.caller = caller
        self.now = now
        self.creating = creating
        self.large = large

    def apply(self, delta: Mapping[str, Any]) -> dict[str, Any]:
        if delta.get("constants") is not None:
            self._constants(delta["constants"])
        if delta.get("properties") is not None:
            self._properties(delta["properties"])
        if delta.get("servers") is not None:
            self._servers(delta["servers"])
        if delta.get("members") is not None:
            self._members(delta["members"])
        _refresh_members(self.document)
        return self.document

    def _constants(self, value: Any) -> None:
        requested = _require_sections(value, "constants")
        found = _conflict(self.document["constants"], requested, "constants",
                          new_keys=self.creating)
        if found:
            source = "the session template" if self.creating else "the session"
            raise _Refusal("409.conflict", f"Constants conflict with {source}: {found}.")
        _deep_merge(self.document["constants"], requested)

    def _properties(self, value: Any) -> None:
        _deep_merge(self.document["properties"], _require_sections(value, "properties"))
        self.document["properties"].setdefault("system", {})
        self.document["properties"].setdefault("custom", {})

    def _servers(self, value: Any) -> None:
        servers = self.document["servers"]
        for name, server in _require_object(value, "servers").items():
            if server is None:
                servers.pop(name, None)
                continue
            _deep_merge(_part(servers, name), _require_object(server, f"servers.{name}"))

    def _members(self, value: Any) -> None:
        for key, member in _require_object(value, "members").items():
            if key.lower() == "me":
                self._me(member)
            elif _RESERVE.fullmatch(key):
                self._reserve(key, member)
            elif key.isdigit():
                self._remove(key, member)
            else:
                raise _Refusal("400.bad-request", f"members.{key}: member keys are 'me', "
                                                  "'reserve_<n>' or a member index.")

    def _me(self, member: Any) -> None:
        members = self.document["members"]
        index = _find_member(self.document, self.caller)
        if member is None:
            if index is not None:
                del members[index]
            return
        _require_object(member, "members.me")
        fresh = index is None
        if index is None:
            index = self._add(self.caller, reserved=False)
        elif members[index].pop("reserved", False):
            members[index]["joinTime"] = self.now
            fresh = True
        self._merge_member(members[index], member, "members.me", fresh)

    def _reserve(self, key: str, member: Any) -> None:
        if self.large:
            raise _Refusal("409.conflict", f"members.{key}: members other than the caller "
                                           "can't be added to a large session.")
        xuid = _member_xuid(_require_object(member, f"members.{key}"))
        if xuid is None:
            raise _Refusal("400.bad-request",
                           f"members.{key}.constants.system.xuid is required.")
        if _find_member(self.document, xuid) is None:
            index = self._add(xuid, reserved=True)
            self._merge_member(self.document["members"][index], member, f"members.{key}", True)

    def _remove(self, key: str, member: Any) -> None:
        if member is not None:
            raise _Refusal("403.forbidden", "The request body can't contain existing member "
                                            "references unless the authentication principal "
                                            "includes a server.")
        index = str(int(key))
        if self.large and index != _find_member(self.document, self.caller):
            raise _Refusal("409.conflict", f"members.{key}: members other than the caller "
                                           "can't be removed from a large session.")
        self.document["members"].pop(index, None)

    def _add(self, xuid: str, *, reserved: bool) -> str:
        info = self.document["membersInfo"]
        taken = [int(k) + 1 for k in self.document["members"] if k.isdigit()]
        index = max([int(info.get("next", 0)), *taken])
        info["next"] = index + 1
        member: dict[str, Any] = {
            "constants": {"system": {"xuid": xuid, "index": index}, "custom": {}},
            "properties": {"system": {}, "custom": {}},
        }
        if reserved:
            member["reserved"] = True
        else:
            member["joinTime"] = self.now
        self.document["members"][str(index)] = member
        return str(index)

    def _merge_member(self, member: dict[str, Any], value: Mapping[str, Any], where: str,
                      fresh: bool) -> None:
        if value.get("constants") is not None:
            requested = copy.deepcopy(_require_sections(value["constants"],
                                                        f"{where}.constants"))
            if isinstance(requested.get("system"), dict):
                for directive in _MEMBER_DIRECTIVES:
                    requested["system"].pop(directive, None)
            constants = _part(member, "constants")
            found = _conflict(constants, requested, f"{where}.constants", new_keys=fresh)
            if found:
                raise _Refusal("409.conflict", f"Member constants conflict: {found}.")
            _deep_merge(constants, requested)
        if value.get("properties") is not None:
            _deep_merge(_part(member, "properties"),
                        _require_sections(value["properties"], f"{where}.properties"))


def _element_delta(resource: Resource, value: Any) -> dict[str, Any]:
    """The session-level delta that a PUT or DELETE of an element stands for."""
    part, _, rest = (resource.element or "").partition("/")
    match part.lower():
        case "members":
            return {"members": {"me" if rest.lower() == "me" else rest: value}}
        case "servers":
            return {"servers": {rest: value}}
    return {"properties": value}


def _etag_matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return etag in (v.strip() for v in header.split(","))


def _named_xuid(delta: Mapping[str, Any]) -> str | None:
    """The XUID a write names for the caller (members.me.constants.system.xuid)."""
    members = delta.get("members")
    if not isinstance(members, dict):
        return None
    me = next((v for k, v in members.items() if k.lower() == "me"), None)
    return _member_xuid(me)


def _derived_xuid(user: str) -> str:
    if user.isdigit() and len(user) <= 20:
        return user
    digest = int(hashlib.sha256(user.encode()).hexdigest()[:12], 16)
    return str(2_533_274_000_000_000 + digest % 1_000_000_000_000)


def _session_ref(value: Any, where: str) -> dict[str, str]:
    data = _require_object(value, where)
    for key in ("scid", "templateName", "name"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise _Refusal("400.bad-request", f"{where}.{key} is required (a string).")
    return {"scid": data["scid"], "templateName": data["templateName"], "name": data["name"]}


def _member_status(member: Mapping[str, Any]) -> str:
    if member.get("reserved"):
        return "reserved"
    return "active" if _is_active(member) else "inactive"


def _take(value: str | None) -> int:
    if value is None:
        return 100
    if not value.isdigit() or int(value) > 100:
        raise _Refusal("400.bad-request", f"take should be a whole number 0-100, not {value!r}.")
    return int(value)


#: Which handler answers which method, per kind of resource. A method missing
#: here for a known resource is a 405 whose Allow lists the keys.
_ROUTES: dict[str, dict[str, str]] = {
    "session": {"GET": "_get_session", "PUT": "_put_session"},
    "member-me": {"GET": "_get_element", "PUT": "_put_element", "DELETE": "_delete_element"},
    "member-index": {"GET": "_get_element", "DELETE": "_delete_element"},
    "server": {"GET": "_get_element", "PUT": "_put_element", "DELETE": "_delete_element"},
    "properties": {"GET": "_get_element", "PUT": "_put_element"},
    "handles": {"POST": "_post_handle"},
    "handle": {"GET": "_get_handle", "DELETE": "_delete_handle"},
    "handle-session": {"GET": "_get_handle_session", "PUT": "_put_handle_session"},
    "handle-query": {"POST": "_query_handles"},
    "hopper": {"POST": "_post_ticket"},
    "hopper-stats": {"GET": "_hopper_stats"},
    "ticket": {"GET": "_get_ticket", "DELETE": "_delete_ticket"},
    "query": {"GET": "_query_sessions"},
    "batch": {"POST": "_batch_query"},
    "templates": {"GET": "_list_templates"},
    "template": {"GET": "_get_template"},
}

#: The stand-in's own switches, below /_emulator/: action -> (method, handler).
_CONTROL: dict[str, tuple[str, str]] = {
    "overload": ("POST", "_control_overload"),
    "recover": ("POST", "_control_recover"),
    "reset": ("POST", "_control_reset"),
    "sessions": ("GET", "_control_sessions"),
}


def _variant(resource: Resource) -> str | None:
    """The _ROUTES key for a resource; None when the URI names nothing (404)."""
    element = (resource.element or "").lower()
    match resource.kind:
        case Kind.SESSION | Kind.SERVER | Kind.PROPERTIES | Kind.HANDLE_SESSION:
            return {Kind.SESSION: "session", Kind.SERVER: "server",
                    Kind.PROPERTIES: "properties",
                    Kind.HANDLE_SESSION: "handle-session"}[resource.kind]
        case Kind.MEMBER:
            index = element.removeprefix("members/")
            if index == "me":
                return "member-me"
            return "member-index" if index.isdigit() else None
        case Kind.HANDLE:
            return "handle" if element else "handles"
        case Kind.HANDLE_QUERY:
            return "handle-query"
        case Kind.HOPPER:
            return "hopper-stats" if element else "hopper"
        case Kind.TICKET:
            return "ticket" if element else None
        case Kind.QUERY:
            return "query"
        case Kind.BATCH:
            return "batch"
        case Kind.TEMPLATE:
            return "template" if resource.template else "templates"
    return None


def _is_control(path: str) -> bool:
    low = path.lower()
    return low == "/_emulator" or low.startswith("/_emulator/")


def _standard_headers(wallclock: float) -> list[tuple[str, str]]:
    """What the service puts on every response (protocol notes §2.2)."""
    return [
        ("Date", email.utils.formatdate(wallclock, usegmt=True)),
        ("X-XblCorrelationId", str(uuid.uuid4())),
        ("X-Content-Type-Options", "nosniff"),
    ]


class Emulator:
    """The session directory in memory. `handle` is pure request -> Reply (no I/O).

    `clock` drives the rate-limit windows (inject one in tests); `wallclock`
    gives the document timestamps and the Date header. Thread-safe: `serve`
    answers from its event loop while tests read state from another thread.
    """

    def __init__(self, config: EmulatorConfig | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.config = config if config is not None else default_config()
        self._clock = clock
        self._wallclock = wallclock
        self._lock = threading.RLock()
        self._etags = itertools.count(1)
        self._sessions: dict[str, _Session] = {}
        self._handles: dict[str, dict[str, Any]] = {}
        self._tickets: dict[str, dict[str, Any]] = {}
        self._xuids: dict[str, str] = {}
        self._limiters: dict[tuple[str, ...], _Limiter] = {}
        self._learned: dict[tuple[str, str], TemplateConfig] = {}
        self._overload: Overload | None = None
        self._overload_left: int | None = None
        self.reset()

    # -- state for scripts and other modules ---------------------------------------------

    def reset(self) -> None:
        """Forget every session, handle, ticket, identity and rate-limit window."""
        with self._lock:
            self._sessions.clear()
            self._handles.clear()
            self._tickets.clear()
            self._xuids.clear()
            self._limiters.clear()
            self._learned.clear()
            self._overload = self._overload_left = None
            if self.config.overload is not None:
                self.overload(self.config.overload.retry_after, self.config.overload.requests)

    def overload(self, retry_after: int, requests: int | None = None) -> None:
        """Answer 503 with this Retry-After to the next `requests` MPSD requests (None: all,
        until `recover`). Raises ValueError for a Retry-After that is not whole seconds."""
        spec = Overload(retry_after, requests)
        with self._lock:
            self._overload = spec
            self._overload_left = requests

    def recover(self) -> None:
        """End the overload at once (the next request is answered normally)."""
        with self._lock:
            self._overload = self._overload_left = None

    @property
    def overloaded(self) -> bool:
        return self._overload is not None

    def session(self, key: str) -> tuple[dict[str, Any], str] | None:
        """A copy of the stored document and its ETag, by `scid~template~name` key."""
        with self._lock:
            stored = self._sessions.get(key.lower())
            if stored is None:
                return None
            return copy.deepcopy(stored.document), stored.etag

    def sessions(self) -> list[dict[str, Any]]:
        """Every stored session: key, path, changeNumber and ETag, ordered by key."""
        with self._lock:
            return [
                {"key": s.key, "path": s.path, "changeNumber": s.document["changeNumber"],
                 "etag": s.etag}
                for s in sorted(self._sessions.values(), key=lambda s: s.key)
            ]

    def seed(self, path: str, document: dict[str, Any], etag: str | None) -> None:
        """Store a session as it was seen elsewhere (a recording), under its path.

        A SCID or template the config does not list is learned as a plain
        template, so the seeded session can be read and written at once. A
        document recorded without its ETag (None) gets a fresh one. Raises
        ValueError for a path that is not a session's or a document that is
        not a JSON object.
        """
        resource = resources.parse(path)
        if resource.kind is not Kind.SESSION:
            raise ValueError(f"seed needs a session path (/serviceconfigs/{{scid}}/"
                             f"sessiontemplates/{{template}}/sessions/{{name}}), not {path!r}")
        if not isinstance(document, dict):
            raise ValueError(f"seed needs the session document as a JSON object, not "
                             f"{type(document).__name__}")
        if etag is not None and (not isinstance(etag, str) or not etag.strip()):
            raise ValueError(f"seed needs the session's ETag (or None), not {etag!r}")
        assert resource.scid and resource.template and resource.name
        with self._lock:
            template = self._find_template(resource.scid, resource.template)
            if template is None:
                template = TemplateConfig(resource.template)
                self._learned[(resource.scid.lower(), resource.template.lower())] = template
            stored = _complete(copy.deepcopy(document))
            session = _Session(resource.scid, template, resource.name, stored,
                               etag.strip() if etag else self._new_etag(stored))
            self._sessions[session.key] = session

    # -- requests ------------------------------------------------------------------------

    def handle(self, method: str, target: str,
               headers: Iterable[tuple[str, str]] | Mapping[str, str],
               body: bytes = b"") -> faults.Reply:
        """Answer one request (target = path + query) as the session directory would."""
        call = _make_call(method, target, headers, body)
        with self._lock:
            try:
                return self._dispatch(call)
            except _Refusal as r:
                return self._reply(r.entry_id, session=r.session, etag=r.etag,
                                   message=r.message, retry_after=r.retry_after,
                                   headers=r.headers)

    def _reply(self, entry_id: str, *, session: Any = None, etag: str | None = None,
               message: str | bytes | None = None, retry_after: int | None = None,
               headers: Iterable[tuple[str, str]] = ()) -> faults.Reply:
        extra = _standard_headers(self._wallclock())
        extra.extend(headers)
        return faults.build(entry_id, session=session, etag=etag, message=message,
                            retry_after=retry_after, extra_headers=extra)

    def _dispatch(self, call: _Call) -> faults.Reply:
        if _is_control(call.path):
            return self._control(call)
        if self._overload is not None:
            return self._outage()
        resource = resources.parse(call.path)
        call = self._authenticate(call)
        self._throttle(call, resource)
        variant = _variant(resource)
        if variant is None:
            raise _Refusal("404.not-found", f"The URI names no session directory resource: "
                                            f"{call.path}")
        handlers = _ROUTES[variant]
        name = handlers.get(call.method)
        if name is None:
            allow = ", ".join(handlers)
            raise _Refusal("405.method-not-allowed",
                           f"{call.method} is not allowed on {resource.short}; use {allow}.",
                           headers=[("Allow", allow)])
        return getattr(self, name)(call, resource)

    def _outage(self) -> faults.Reply:
        spec = self._overload
        assert spec is not None
        if self._overload_left is not None:
            self._overload_left -= 1
            if self._overload_left <= 0:
                self._overload = self._overload_left = None
        return self._reply("503.service-unavailable", retry_after=spec.retry_after)

    def _authenticate(self, call: _Call) -> _Call:
        auth = call.header("authorization")
        match = _AUTH.fullmatch(auth.strip()) if auth else None
        if match is None:
            raise _Refusal("403.forbidden", "Authorization failed: the request needs "
                                            "'Authorization: XBL3.0 x=<userhash>;<token>'.")
        version = call.header("x-xbl-contract-version")
        if version is None:
            raise _Refusal("400.bad-request", "The x-xbl-contract-version header is required.")
        if not version.strip().isdigit():
            raise _Refusal("400.bad-request", f"x-xbl-contract-version should be a whole "
                                              f"number, not {version!r}.")
        return replace(call, user=match[1], contract=int(version))

    def _throttle(self, call: _Call, resource: Resource) -> None:
        """Count the request in the caller's FGRL windows; 429 when either is exceeded."""
        service = "smartmatch" if resource.kind in (Kind.HOPPER, Kind.TICKET) else "mpsd"
        keys: list[tuple[tuple[str, ...], RateLimit]] = [
            ((service, call.user), self.config.rate_limit)]
        if resource.scid and resource.template:
            template = self._find_template(resource.scid, resource.template)
            if template is not None and template.rate_limit is not None:
                keys.append(((service, call.user, resource.scid.lower(), template.name.lower()),
                             template.rate_limit))
        limiters = [self._limiters.setdefault(key, _Limiter(limit)) for key, limit in keys]
        now = self._clock()
        accepted = not any([limiter.tripped(now) for limiter in limiters])
        for limiter in limiters:
            limiter.record(now, accepted)
        if accepted:
            return
        found = [t for limiter in limiters if (t := limiter.throttle(now)) is not None]
        worst = max(found, key=lambda t: t.wait)
        body = faults.fgrl_message(worst.current, worst.maximum, worst.period)
        raise _Refusal("429.too-many-requests", faults.encode_json(body),
                       retry_after=max(1, math.ceil(worst.wait - 1e-9)))

    # -- lookups -------------------------------------------------------------------------

    def _find_template(self, scid: str, name: str) -> TemplateConfig | None:
        config = self.config.scid(scid)
        found = config.template(name) if config is not None else None
        return found or self._learned.get((scid.lower(), name.lower()))

    def _templates_of(self, scid: str) -> list[TemplateConfig]:
        config = self.config.scid(scid)
        known = list(config.templates) if config is not None else []
        known += [t for (s, _), t in self._learned.items() if s == scid.lower()]
        return known

    def _require_scid(self, scid: str | None) -> str:
        if not scid or (self.config.scid(scid) is None and not self._templates_of(scid)):
            raise _Refusal("404.not-found", "The requested service config is either invalid "
                                            "or not configured for sessions.")
        return scid

    def _template(self, resource: Resource) -> TemplateConfig:
        scid = self._require_scid(resource.scid)
        template = self._find_template(scid, resource.template or "")
        if template is None:
            raise _Refusal("404.not-found",
                           f"The session template {resource.template!r} wasn't found.")
        return template

    def _existing(self, resource: Resource) -> _Session:
        session = self._sessions.get(resource.key or "")
        if session is None:
            raise _Refusal("404.not-found", "The requested session wasn't found.")
        return session

    def _xuid(self, user: str) -> str:
        return self._xuids.get(user) or _derived_xuid(user)

    def _now(self) -> str:
        moment = datetime.fromtimestamp(self._wallclock(), UTC)
        return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")

    def _new_etag(self, document: Mapping[str, Any]) -> str:
        seed = f"{document.get('branch')}:{document.get('changeNumber')}:{next(self._etags)}"
        return '"' + hashlib.sha256(seed.encode()).hexdigest()[:32] + '"'

    def _view(self, session: _Session, call: _Call) -> dict[str, Any]:
        """The document as the caller sees it: large sessions show only the caller."""
        document = session.document
        if not session.template.large:
            return document
        xuid = self._xuid(call.user)
        mine = {k: v for k, v in document["members"].items() if _member_xuid(v) == xuid}
        return {**document, "members": mine}

    def _session_reply(self, entry_id: str, session: _Session, call: _Call) -> faults.Reply:
        return self._reply(entry_id, session=self._view(session, call), etag=session.etag,
                           headers=[("Content-Location", session.path), _REVALIDATE])

    # -- sessions and their elements -------------------------------------------------------

    def _get_session(self, call: _Call, resource: Resource) -> faults.Reply:
        self._template(resource)
        session = self._sessions.get(resource.key or "")
        if session is None:
            return self._reply("204.get-session")
        if _etag_matches(call.header("if-none-match"), session.etag):
            return self._reply("304.not-modified", headers=[("ETag", session.etag)])
        return self._session_reply("200.ok", session, call)

    def _put_session(self, call: _Call, resource: Resource) -> faults.Reply:
        template = self._template(resource)
        return self._write(call, resource, template, _json_object(call.body))

    def _get_element(self, call: _Call, resource: Resource) -> faults.Reply:
        self._template(resource)
        session = self._existing(resource)
        if _etag_matches(call.header("if-none-match"), session.etag):
            return self._reply("304.not-modified", headers=[("ETag", session.etag)])
        value = self._element(session, resource, call)
        if value is None:
            return self._reply("204.get-element")
        location = f"{session.path}/{resource.element}"
        return self._reply("200.ok", session=value, etag=session.etag,
                           headers=[("Content-Location", location), _REVALIDATE])

    def _element(self, session: _Session, resource: Resource, call: _Call) -> Any:
        document = session.document
        part, _, rest = (resource.element or "").partition("/")
        if part.lower() == "properties":
            return document["properties"]
        if part.lower() == "servers":
            return document["servers"].get(rest)
        caller = self._xuid(call.user)
        if rest.lower() == "me":
            index = _find_member(document, caller)
            return document["members"].get(index) if index is not None else None
        member = document["members"].get(str(int(rest)))
        if member is not None and session.template.large and _member_xuid(member) != caller:
            return None  # large sessions show no member but the caller's own
        return member

    def _put_element(self, call: _Call, resource: Resource) -> faults.Reply:
        template = self._template(resource)
        self._existing(resource)
        delta = _element_delta(resource, _json_object(call.body))
        return self._write(call, resource, template, delta, element=True)

    def _delete_element(self, call: _Call, resource: Resource) -> faults.Reply:
        template = self._template(resource)
        self._existing(resource)
        delta = _element_delta(resource, None)
        self._write(call, resource, template, delta, element=True)
        return self._reply("204.element-gone")

    def _write(self, call: _Call, resource: Resource, template: TemplateConfig,
               delta: dict[str, Any], *, element: bool = False) -> faults.Reply:
        """PUT semantics shared by sessions, elements and handles (protocol notes §4)."""
        session = self._sessions.get(resource.key or "")
        self._check_writer(call, session)
        self._check_preconditions(call, session)
        xuid, named = self._writer_xuid(call, delta)
        before = session.document if session is not None else self._new_document(call, template)
        document = _Merge(copy.deepcopy(before), caller=xuid, now=self._now(),
                          creating=session is None, large=template.large).apply(delta)
        commit = not call.flag("nocommit")
        if not document["members"]:
            if session is not None and commit:
                del self._sessions[session.key]
            return self._reply("204.element-gone" if element else "204.put-session-deleted")
        document["changeNumber"] = int(document.get("changeNumber", 0)) + 1
        document["contractVersion"] = call.contract
        where = session or _Session(resource.scid or "", template, resource.name or "", {}, "")
        stored = _Session(where.scid, template, where.name, document, self._new_etag(document))
        if commit:
            self._sessions[stored.key] = stored
            if named:
                self._xuids.setdefault(call.user, xuid)
        return self._session_reply("201.created" if session is None else "200.ok", stored, call)

    def _new_document(self, call: _Call, template: TemplateConfig) -> dict[str, Any]:
        now = self._now()
        constants = copy.deepcopy(template.constants)
        constants.setdefault("system", {})
        constants.setdefault("custom", {})
        return {
            "contractVersion": call.contract,
            "branch": str(uuid.uuid4()),
            "changeNumber": 0,
            "correlationId": str(uuid.uuid4()),
            "startTime": now,
            "constants": constants,
            "properties": {"system": {}, "custom": {}},
            "members": {},
            "membersInfo": {"first": 0, "next": 0, "count": 0, "accepted": 0, "active": 0},
            "servers": {},
        }

    def _check_writer(self, call: _Call, session: _Session | None) -> None:
        if call.user not in self.config.read_only_users:
            return
        if session is None:
            raise _Refusal("403.forbidden", "This caller may read sessions but not create them.")
        raise _Refusal("403.read-only", session=self._view(session, call), etag=session.etag)

    def _check_preconditions(self, call: _Call, session: _Session | None) -> None:
        """If-Match / If-None-Match on a write (protocol notes §4.2)."""
        if_match = call.header("if-match")
        if_none_match = call.header("if-none-match")
        if session is None:
            if if_match is not None:
                raise _Refusal("412.precondition-failed")
            return
        if _etag_matches(if_none_match, session.etag):
            raise _Refusal("412.precondition-failed")
        if if_match is not None and not _etag_matches(if_match, session.etag):
            raise _Refusal("412.if-match-session", session=self._view(session, call),
                           etag=session.etag)

    def _writer_xuid(self, call: _Call, delta: Mapping[str, Any]) -> tuple[str, bool]:
        """The caller's XUID for this write, and whether the write itself names it."""
        bound = self._xuids.get(call.user)
        named = _named_xuid(delta)
        if named is None:
            return bound or _derived_xuid(call.user), False
        if not named.isdigit():
            raise _Refusal("400.bad-request", f"members.me.constants.system.xuid should be a "
                                              f"decimal XUID, not {named!r}.")
        if bound is not None and named != bound:
            raise _Refusal("403.forbidden", f"members.me names XUID {named}, but this caller "
                                            f"is XUID {bound}.")
        return named, True

    def _touch(self, key: str) -> None:
        """A change the document does not show (a new handle) still bumps changeNumber."""
        session = self._sessions.get(key)
        if session is not None:
            session.document["changeNumber"] += 1
            session.etag = self._new_etag(session.document)

    # -- handles -------------------------------------------------------------------------

    def _post_handle(self, call: _Call, resource: Resource) -> faults.Reply:
        body = _json_object(call.body)
        kind = _handle_type(body)
        if body.get("version") != 1 or isinstance(body.get("version"), bool):
            raise _Refusal("400.bad-request",
                           f"version should be 1, not {json.dumps(body.get('version'))}.")
        ref = _session_ref(body.get("sessionRef"), "sessionRef")
        target = Resource(Kind.SESSION, ref["scid"], ref["templateName"], ref["name"])
        self._template(target)
        handle = copy.deepcopy(body)
        handle.update(id=str(uuid.uuid4()), type=kind, version=1, sessionRef=ref,
                      ownerXuid=self._xuid(call.user), createTime=self._now())
        self._handles[handle["id"]] = handle
        self._touch(target.key or "")
        location = f"/handles/{handle['id']}"
        return self._reply("201.created", session=handle, headers=[
            ("Location", location), ("Content-Location", location), _NO_STORE])

    def _handle_of(self, resource: Resource) -> dict[str, Any]:
        handle = self._handles.get((resource.element or "").lower())
        if handle is None:
            raise _Refusal("404.not-found", f"The handle {resource.element!r} wasn't found.")
        return handle

    def _get_handle(self, call: _Call, resource: Resource) -> faults.Reply:
        return self._reply("200.ok", session=self._handle_of(resource), headers=[_NO_STORE])

    def _delete_handle(self, call: _Call, resource: Resource) -> faults.Reply:
        handle = self._handles.pop(self._handle_of(resource)["id"])
        return self._reply("200.ok", session=handle, headers=[_NO_STORE])

    def _handle_session(self, resource: Resource) -> Resource:
        ref = self._handle_of(resource)["sessionRef"]
        return Resource(Kind.SESSION, ref["scid"], ref["templateName"], ref["name"])

    def _get_handle_session(self, call: _Call, resource: Resource) -> faults.Reply:
        return self._get_session(call, self._handle_session(resource))

    def _put_handle_session(self, call: _Call, resource: Resource) -> faults.Reply:
        return self._put_session(call, self._handle_session(resource))

    def _query_handles(self, call: _Call, resource: Resource) -> faults.Reply:
        body = _json_object(call.body)
        kind = _handle_type(body)
        scid = body.get("scid")
        owners = body.get("owners")
        xuids = None
        if owners is not None and _require_object(owners, "owners").get("xuids") is not None:
            xuids = owners["xuids"]
            if not isinstance(xuids, list) or not all(isinstance(x, str) for x in xuids):
                raise _Refusal("400.bad-request", "owners.xuids must be a list of strings.")
        include = {p.strip().lower() for p in call.query.get("include", "").split(",")}
        results = []
        for handle in self._handles.values():
            if handle["type"] != kind or (xuids is not None and handle["ownerXuid"] not in xuids):
                continue
            if isinstance(scid, str) and handle["sessionRef"]["scid"].lower() != scid.lower():
                continue
            item = dict(handle)
            related = self._related_info(handle)
            if "relatedinfo" in include and related is not None:
                item["relatedInfo"] = related
            results.append(item)
        return self._reply("200.ok", session={"results": results[:100]}, headers=[_NO_STORE])

    def _related_info(self, handle: Mapping[str, Any]) -> dict[str, Any] | None:
        ref = handle["sessionRef"]
        key = f"{ref['scid']}~{ref['templateName']}~{ref['name']}".lower()
        session = self._sessions.get(key)
        if session is None:
            return None
        document = session.document
        system = document["constants"]["system"]
        properties = document["properties"]["system"]
        return {
            "visibility": system.get("visibility", "open"),
            "joinRestriction": properties.get("joinRestriction", "none"),
            "closed": bool(properties.get("closed", False)),
            "maxMembersCount": system.get("maxMembersCount", 100),
            "membersCount": document["membersInfo"].get("count", 0),
        }

    # -- queries -------------------------------------------------------------------------

    def _query_sessions(self, call: _Call, resource: Resource) -> faults.Reply:
        self._query_scope(resource)
        xuid = call.query.get("xuid")
        keyword = call.query.get("keyword")
        if not xuid and not keyword:
            raise _Refusal("400.bad-request", "A session query needs a keyword or an xuid "
                                              "filter (or both).")
        return self._session_results(call, resource, [xuid] if xuid else [], keyword)

    def _batch_query(self, call: _Call, resource: Resource) -> faults.Reply:
        self._query_scope(resource)
        xuids = _json_object(call.body).get("xuids")
        if not isinstance(xuids, list) or not xuids or not all(
                isinstance(x, str) for x in xuids):
            raise _Refusal("400.bad-request", "A batch query needs {\"xuids\": [...]}, a "
                                              "non-empty list of strings.")
        return self._session_results(call, resource, xuids, call.query.get("keyword"))

    def _query_scope(self, resource: Resource) -> None:
        if resource.template:
            self._template(resource)
        else:
            self._require_scid(resource.scid)

    def _session_results(self, call: _Call, resource: Resource, xuids: list[str],
                         keyword: str | None) -> faults.Reply:
        if call.flag("private") or call.flag("reservations"):
            caller = self._xuid(call.user)
            if not xuids or any(x != caller for x in xuids):
                raise _Refusal("403.forbidden", "private=true and reservations=true need an "
                                                "xuid filter that is the caller's own.")
        take = _take(call.query.get("take"))
        scope = [s for s in sorted(self._sessions.values(), key=lambda s: s.key)
                 if s.scid.lower() == (resource.scid or "").lower()
                 and (not resource.template
                      or s.template.name.lower() == resource.template.lower())
                 and self._listed(call, s, keyword)]
        results: list[dict[str, Any]] = []
        for xuid in xuids:
            for session in scope:
                index = _find_member(session.document, xuid)
                if index is not None and self._member_listed(call, session, index):
                    results.append(_query_result(session, xuid, index))
        if not xuids:
            results = [_query_result(s, None, None) for s in scope]
        return self._reply("200.ok", session={"results": results[:take]}, headers=[_NO_STORE])

    def _listed(self, call: _Call, session: _Session, keyword: str | None) -> bool:
        document = session.document
        visibility = document["constants"]["system"].get("visibility", "open")
        if visibility == "private" and not call.flag("private"):
            return False
        wanted = call.query.get("visibility")
        if wanted and wanted.lower() != str(visibility).lower():
            return False
        if keyword:
            keywords = document["properties"]["system"].get("keywords") or []
            return keyword.lower() in (str(k).lower() for k in keywords)
        return True

    def _member_listed(self, call: _Call, session: _Session, index: str) -> bool:
        status = _member_status(session.document["members"][index])
        if status == "reserved":
            return call.flag("reservations")
        return status == "active" or call.flag("inactive")

    def _list_templates(self, call: _Call, resource: Resource) -> faults.Reply:
        scid = self._require_scid(resource.scid)
        results = [{"name": t.name, "contractVersion": TEMPLATE_CONTRACT_VERSION}
                   for t in self._templates_of(scid)]
        return self._reply("200.ok", session={"results": results}, headers=[_NO_STORE])

    def _get_template(self, call: _Call, resource: Resource) -> faults.Reply:
        template = self._template(resource)
        document = {"contractVersion": TEMPLATE_CONTRACT_VERSION,
                    "constants": template.constants}
        return self._reply("200.ok", session=document, headers=[_NO_STORE])

    # -- matchmaking (hoppers and tickets) ---------------------------------------------------

    def _hopper(self, resource: Resource) -> str:
        config = self.config.scid(self._require_scid(resource.scid))
        hopper = config.hopper(resource.name or "") if config is not None else None
        if hopper is None:
            raise _Refusal("404.not-found", f"The hopper {resource.name!r} wasn't found.")
        return hopper

    def _post_ticket(self, call: _Call, resource: Resource) -> faults.Reply:
        hopper = self._hopper(resource)
        body = _json_object(call.body, empty_ok=True)
        give_up = body.get("giveUpDuration", 60)
        if isinstance(give_up, bool) or not isinstance(give_up, int) or give_up < 0:
            raise _Refusal("400.bad-request", f"giveUpDuration should be whole seconds, not "
                                              f"{json.dumps(give_up)}.")
        preserve = body.get("preserveSession", "never")
        if preserve not in ("always", "never"):
            raise _Refusal("400.bad-request", f"preserveSession should be always or never, "
                                              f"not {json.dumps(preserve)}.")
        ticket: dict[str, Any] = {
            "ticketId": str(uuid.uuid4()), "hopperName": hopper, "status": "searching",
            "waitTime": TICKET_WAIT_TIME, "giveUpDuration": give_up, "preserveSession": preserve,
            "ownerXuid": self._xuid(call.user), "createTime": self._now(),
        }
        if body.get("ticketSessionRef") is not None:
            ticket["ticketSessionRef"] = _session_ref(body["ticketSessionRef"],
                                                      "ticketSessionRef")
        if body.get("ticketAttributes") is not None:
            ticket["ticketAttributes"] = _require_object(body["ticketAttributes"],
                                                         "ticketAttributes")
        self._tickets[ticket["ticketId"]] = ticket
        return self._reply("200.ok", session={"ticketId": ticket["ticketId"],
                                              "waitTime": TICKET_WAIT_TIME},
                           headers=[_NO_STORE])

    def _hopper_stats(self, call: _Call, resource: Resource) -> faults.Reply:
        hopper = self._hopper(resource)
        population = sum(1 for t in self._tickets.values() if t["hopperName"] == hopper)
        return self._reply("200.ok", session={"hopperName": hopper, "waitTime": TICKET_WAIT_TIME,
                                              "population": population}, headers=[_NO_STORE])

    def _ticket_of(self, resource: Resource) -> dict[str, Any]:
        hopper = self._hopper(resource)
        ticket = self._tickets.get((resource.element or "").lower())
        if ticket is None or ticket["hopperName"] != hopper:
            raise _Refusal("404.not-found", f"The ticket {resource.element!r} wasn't found.")
        return ticket

    def _get_ticket(self, call: _Call, resource: Resource) -> faults.Reply:
        return self._reply("200.ok", session=self._ticket_of(resource), headers=[_NO_STORE])

    def _delete_ticket(self, call: _Call, resource: Resource) -> faults.Reply:
        del self._tickets[self._ticket_of(resource)["ticketId"]]
        return self._reply("202.accepted")

    # -- the stand-in's own switches ----------------------------------------------------------

    def _control(self, call: _Call) -> faults.Reply:
        action = call.path.lower().removeprefix("/_emulator").strip("/")
        if action not in _CONTROL:
            valid = ", ".join(f"/_emulator/{a}" for a in _CONTROL)
            raise _Refusal("404.not-found", f"No stand-in switch at {call.path}; the switches "
                                            f"are {valid}.")
        method, name = _CONTROL[action]
        if call.method != method:
            raise _Refusal("405.method-not-allowed", f"Use {method} for /_emulator/{action}.",
                           headers=[("Allow", method)])
        return getattr(self, name)(call)

    def _control_overload(self, call: _Call) -> faults.Reply:
        body = _json_object(call.body, empty_ok=True)
        unknown = sorted(set(body) - {"retry_after", "requests"})
        if unknown:
            raise _Refusal("400.bad-request", f"Unknown field {unknown[0]!r}; the fields are "
                                              "retry_after and requests.")
        try:
            self.overload(body.get("retry_after", faults.DEFAULT_RETRY_AFTER),
                          body.get("requests"))
        except ValueError as e:
            raise _Refusal("400.bad-request", str(e)) from None
        state = {"retry_after": self._overload.retry_after if self._overload else None,
                 "requests": self._overload_left}
        return self._reply("200.ok", session={"overload": state}, headers=[_NO_STORE])

    def _control_recover(self, call: _Call) -> faults.Reply:
        self.recover()
        return self._reply("200.ok", session={"overload": None}, headers=[_NO_STORE])

    def _control_reset(self, call: _Call) -> faults.Reply:
        self.reset()
        return self._reply("200.ok", session={"reset": True}, headers=[_NO_STORE])

    def _control_sessions(self, call: _Call) -> faults.Reply:
        return self._reply("200.ok", session=self.sessions(), headers=[_NO_STORE])


def _query_result(session: _Session, xuid: str | None, index: str | None) -> dict[str, Any]:
    """One entry of a query's `results` (protocol notes §1.3)."""
    document = session.document
    system = document["properties"]["system"]
    result: dict[str, Any] = {} if xuid is None else {"xuid": xuid}
    member = document["members"].get(index) if index is not None else None
    turn = system.get("turn") or []
    result.update(
        startTime=document.get("startTime"),
        sessionRef={"scid": session.scid, "templateName": session.template.name,
                    "name": session.name},
        accepted=document["membersInfo"].get("accepted", 0),
        status=_member_status(member) if member is not None else "active",
        visibility=document["constants"]["system"].get("visibility", "open"),
        joinRestriction=system.get("joinRestriction", "none"),
        myTurn=index is not None and index.isdigit() and int(index) in turn,
        keywords=list(system.get("keywords") or []),
    )
    return result


# --------------------------------------------------------------------------------------
# Serving over HTTP/1.1 (h11 on asyncio streams)


@dataclass(frozen=True)
class _Incoming:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes


def _has_body(status: int) -> bool:
    return status >= 200 and status not in (204, 304)


class _Connection:
    """One client connection: HTTP/1.1 keep-alive, answered by the Emulator.

    Garbage gets 400 and the connection is closed; a silent connection is
    closed after IDLE_TIMEOUT.
    """

    def __init__(self, emulator: Emulator, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.emulator = emulator
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)

    async def run(self) -> None:
        try:
            while True:
                request = await self._receive()
                if request is None:
                    return
                await self._send(self._answer(request), head=request.method == "HEAD")
                if self.conn.our_state is h11.MUST_CLOSE:
                    return
                self.conn.start_next_cycle()
        except h11.RemoteProtocolError as e:
            await self._reject(e)
        except (OSError, TimeoutError, h11.LocalProtocolError) as e:
            logger.debug(f"stand-in connection ended: {e!r}")
        finally:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def _receive(self) -> _Incoming | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                if self.conn.they_are_waiting_for_100_continue:
                    self._write(self.conn.send(h11.InformationalResponse(status_code=100)))
                data = await asyncio.wait_for(self.reader.read(READ_SIZE), IDLE_TIMEOUT)
                self.conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise h11.RemoteProtocolError("request body too large", 413)
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                return _Incoming(
                    request.method.decode("ascii", "replace"),
                    request.target.decode("latin-1"),
                    [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers],
                    bytes(body),
                )
            else:  # ConnectionClosed, or PAUSED after the peer switched protocols
                return None

    def _answer(self, request: _Incoming) -> faults.Reply:
        try:
            return self.emulator.handle(request.method, request.target, request.headers,
                                        request.body)
        except Exception:
            logger.exception(f"the stand-in failed on {request.method} {request.target}")
            return faults.Reply(500, "Internal Server Error",
                                [("Content-Type", "text/plain; charset=utf-8")],
                                b"The stand-in failed on this request; see its log.")

    def _write(self, data: bytes | None) -> None:
        if data:
            self.writer.write(data)

    async def _send(self, reply: faults.Reply, *, head: bool, close: bool = False) -> None:
        headers = list(reply.headers)
        if _has_body(reply.status):
            headers.append(("Content-Length", str(len(reply.body))))
        if close:
            headers.append(("Connection", "close"))
        out = bytearray(self.conn.send(h11.Response(status_code=reply.status, headers=headers,
                                                    reason=reply.reason)) or b"")
        if reply.body and _has_body(reply.status) and not head:
            out += self.conn.send(h11.Data(data=reply.body)) or b""
        out += self.conn.send(h11.EndOfMessage()) or b""
        self._write(bytes(out))  # one write: one segment for small answers
        await self.writer.drain()

    async def _reject(self, error: h11.RemoteProtocolError) -> None:
        """400 for a request h11 cannot parse, then close (if a response can still go out)."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        reply = faults.build("400.bad-request", message=f"Malformed HTTP request: {error}",
                             extra_headers=_standard_headers(time.time()))
        with contextlib.suppress(Exception):
            await self._send(reply, head=False, close=True)


async def serve(emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Start answering HTTP/1.1 on host:port (0 picks a free port) with the emulator."""

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Shutdown cancels idle connections; ending quietly keeps asyncio's stream
        # callback from logging the cancellation as an error.
        with contextlib.suppress(asyncio.CancelledError):
            await _Connection(emulator, reader, writer).run()

    server = await asyncio.start_server(connected, host, port)
    bound = server.sockets[0].getsockname()
    logger.info(f"MPSD stand-in listening on http://{bound[0]}:{bound[1]}")
    return server


async def _shutdown(server: asyncio.Server) -> None:
    """Stop listening and end every open connection (the loop is the stand-in's own)."""
    server.close()
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.wait_closed()


def _resolve(config: EmulatorConfig | str | os.PathLike[str] | None) -> EmulatorConfig:
    if config is None:
        return default_config()
    if isinstance(config, EmulatorConfig):
        return config
    return load_config(config)


async def _serve_until_signal(emulator: Emulator, host: str, port: int,
                              ready: Callable[[int], None] | None) -> None:
    server = await serve(emulator, host, port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        if ready is not None:
            ready(server.sockets[0].getsockname()[1])
        await stop.wait()
        logger.info("MPSD stand-in stopping")
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await _shutdown(server)


def run(host: str = "127.0.0.1", port: int = 0,
        config_path: str | os.PathLike[str] | None = None,
        ready: Callable[[int], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM. `ready(port)` is called once the port is bound.

    Raises ConfigError (a ValueError) for a bad config and OSError when the
    port cannot be bound. Prints nothing itself; it logs.
    """
    emulator = Emulator(_resolve(config_path))
    asyncio.run(_serve_until_signal(emulator, host, port, ready))


class _ServerThread(threading.Thread):
    """The stand-in's event loop in a background thread, for `running`."""

    def __init__(self, emulator: Emulator, host: str, port: int) -> None:
        super().__init__(name="mpsd-standin", daemon=True)
        self.emulator = emulator
        self.host = host
        self.requested_port = port
        self.port = 0
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 - handed to the starting thread
            self.error = e
        finally:
            self._ready.set()

    async def _main(self) -> None:
        server = await serve(self.emulator, self.host, self.requested_port)
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await _shutdown(server)

    def wait_ready(self, timeout: float) -> int:
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the stand-in did not start within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.port

    def shutdown(self, timeout: float) -> None:
        loop, stop = self._loop, self._stop_event
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        self.join(timeout)
        if self.is_alive():
            logger.warning(f"the stand-in thread did not stop within {timeout} s")


@contextlib.contextmanager
def running(config: EmulatorConfig | str | os.PathLike[str] | None = None, *,
            emulator: Emulator | None = None, host: str = "127.0.0.1", port: int = 0,
            timeout: float = 10.0) -> Iterator[tuple[Emulator, int]]:
    """Serve in a background thread: `with running() as (emulator, port): ...`.

    `config` is an EmulatorConfig, a YAML path or None (the shipped config);
    pass `emulator` to serve one you built (an injected clock, seeded state).
    On exit the server stops, its connections close and the thread is joined.
    """
    thread = _ServerThread(emulator or Emulator(_resolve(config)), host, port)
    thread.start()
    try:
        bound = thread.wait_ready(timeout)
        yield thread.emulator, bound
    finally:
        thread.shutdown(timeout)
