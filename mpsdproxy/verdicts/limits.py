"""The limits file: call-rate budgets per service and the other rules' thresholds.

`mpsdproxy/data/limits.yaml` holds the shipped values; `load_limits(path)`
lays a user's file over it (it only needs the keys it changes). Files are read
through `yamlfile`, so a bad one is refused with one line per problem,
`file:line:col: key.path: what is wrong`, as scenarios and the stand-in's
config are.

The shipped budgets are the Xbox Live Trace Analyzer's per-service limits
(`Source/XboxLiveTraceAnalyzer.Rules.json` of microsoft/xbox-live-trace-analyzer,
commit 4820c46): one service per endpoint, its sub-path limits (e.g. the session
directory's `/handles/query`) as `paths`, and its `*` rule as the default service.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from dataclasses import fields
from importlib import resources as importlib_resources
from typing import Any

from mpsdproxy import fgrl
from mpsdproxy import yamlfile
from mpsdproxy.resources import Kind

__all__ = [
    "SCOPES",
    "IGNORED_SETTINGS",
    "wildcard",
    "Window",
    "ServiceLimits",
    "RuleSettings",
    "Limits",
    "LimitsError",
    "parse_limits",
    "load_limits",
    "default_limits",
]

#: What "the same place" means for Retry-After: the host, or one resource of it.
SCOPES = ("client", "resource")
DEFAULT_FILE = "mpsdproxy/data/limits.yaml"
#: Settings older limits files may still hold: accepted, ignored, and noted in `Limits.notes`.
IGNORED_SETTINGS: dict[str, str] = {
    "burst_warmup_calls": "burst detection now follows the Trace Analyzer from the first call "
                          "on (no warm-up), so rules.burst_warmup_calls is ignored",
    **{name: f"backoff is judged by the client library's schedule (backoff_retry_delay_s, "
             f"backoff_window_s), so rules.{name} is ignored"
       for name in ("backoff_min_gap_ms", "backoff_growth", "backoff_max_retries",
                    "backoff_idle_s")},
}


def wildcard(pattern: str) -> re.Pattern[str]:
    """The Trace Analyzer's wildcard: `*` any run, `?` any one character, the rest literal,
    matched whole and case-insensitively (RulesEngine.cs WildCardToRegular, ~L25)."""
    body = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.compile(f"^{body}$", re.IGNORECASE)


@dataclass(frozen=True)
class Window:
    """At most `calls` requests in any `seconds`-long sliding window."""

    calls: int
    seconds: float

    def __post_init__(self) -> None:
        if self.calls < 1 or self.seconds <= 0:
            raise ValueError(
                f"a window should have calls >= 1 and seconds > 0, not {self.calls} "
                f"in {self.seconds} s")

    def sliding(self, keep: int | None = None) -> fgrl.SlidingWindow:
        """An empty FGRL window with these limits (the one window the package has)."""
        return fgrl.SlidingWindow(self.calls, self.seconds, keep)


@dataclass(frozen=True)
class ServiceLimits:
    name: str
    burst: Window
    sustained: Window
    hosts: tuple[str, ...] = ()  # shell-style patterns, matched case-insensitively
    kinds: tuple[str, ...] = ()
    certification_factor: int = 10
    #: For a sub-path limit: the path (and query) patterns it covers, analyzer wildcards.
    paths: tuple[str, ...] = ()
    #: The sub-path limits of this service (each a ServiceLimits named `service/name`); a
    #: call whose path one of them matches counts against that one instead.
    parts: tuple[ServiceLimits, ...] = ()
    #: `hosts` as one regex, compiled once here rather than for every request.
    host_pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    #: `paths` as one regex (None without paths): one match per request.
    path_pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pattern = "|".join(f"(?:{fnmatch.translate(p.lower())})" for p in self.hosts)
        object.__setattr__(self, "host_pattern", re.compile(pattern) if pattern else None)
        paths = "|".join(f"(?:{wildcard(p).pattern})" for p in self.paths)
        object.__setattr__(self, "path_pattern",
                           re.compile(paths, re.IGNORECASE) if paths else None)

    def covers(self, path: str) -> bool:
        """Whether a request to `path` (with its query) falls under this sub-path limit."""
        return self.path_pattern is not None and self.path_pattern.match(path) is not None

    def part_for(self, path: str) -> ServiceLimits:
        """The sub-path limit `path` counts against, else this service's own."""
        for part in self.parts:
            if part.covers(path):
                return part
        return self

    @property
    def certification(self) -> int:
        """Calls per sustained window at which a title fails certification."""
        return self.sustained.calls * self.certification_factor


@dataclass(frozen=True)
class RuleSettings:
    """Thresholds of the verdicts other than the budgets (see data/limits.yaml)."""

    retry_after_scope: str = "client"
    backoff_retry_delay_s: float = 2.0
    backoff_window_s: float = 20.0
    precondition_window_s: float = 300.0
    conflict_window_s: float = 300.0
    missing_session_max_gets: int = 3
    missing_session_window_s: float = 30.0
    burst_window_ms: float = 2000.0
    burst_min_calls: int = 3
    repeat_interval_ms: float = 5000.0
    polling_tolerance: float = 0.01
    polling_min_calls: int = 5
    polling_max_interval_s: float = 3600.0
    batch_min_xuids: int = 2
    batch_window_ms: float = 2000.0
    reorder_grace_s: float = 10.0
    #: RTA: how long after a newer tap (or a resync) the title's GET of the session may wait.
    rta_read_within_s: float = 5.0
    #: RTA: how late past the library's reconnect schedule a reconnect attempt may come.
    rta_reconnect_late_s: float = 5.0
    #: RTA: how long after reconnecting the title has to subscribe again.
    rta_resubscribe_within_s: float = 5.0
    #: The Trace Analyzer's custom user agent: calls sending exactly this one are analysed too.
    custom_user_agent: str = ""

    def __post_init__(self) -> None:
        if self.retry_after_scope not in SCOPES:
            raise ValueError(
                f"retry_after_scope should be one of {', '.join(SCOPES)}, "
                f"not {self.retry_after_scope!r}")


@dataclass(frozen=True)
class Limits:
    services: tuple[ServiceLimits, ...]
    default_service: str
    rules: RuleSettings = field(default_factory=RuleSettings)
    source: str = "built-in defaults"
    #: What the loader accepted but ignored (settings older files may hold).
    notes: tuple[str, ...] = ()
    #: What `service_for` asks of every request, worked out once here: every service's
    #: `hosts` as one regex whose named group says which service matched first (the
    #: alternatives are tried in order, each anchored at the end), and the first service
    #: listing each kind.
    _hosts: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _kinds: dict[str, ServiceLimits] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hosts = "|".join(f"(?P<s{i}>{s.host_pattern.pattern})"
                         for i, s in enumerate(self.services) if s.host_pattern is not None)
        object.__setattr__(self, "_hosts", re.compile(hosts) if hosts else None)
        kinds: dict[str, ServiceLimits] = {}
        for s in self.services:
            for kind in s.kinds:
                kinds.setdefault(kind, s)
        object.__setattr__(self, "_kinds", kinds)

    def service(self, name: str) -> ServiceLimits:
        """A service, or a sub-path limit by its `service/name`."""
        found = self.by_name().get(name)
        if found is None:
            raise LookupError(f"no service {name!r} in {self.source}")
        return found

    def by_name(self) -> dict[str, ServiceLimits]:
        """Every service and sub-path limit by name."""
        return {x.name: x for s in self.services for x in (s, *s.parts)}

    def service_for(self, host: str, kind: str, path: str = "") -> ServiceLimits:
        """The budgets a request to `host` naming a `kind` resource at `path` (with its
        query) counts against: the first service whose `hosts` match, else the first whose
        `kinds` list the kind (a local stand-in), else the default (the analyzer's `*`);
        then its sub-path limit for `path`, if one covers it."""
        matched = self._hosts.match(host.lower()) if self._hosts is not None else None
        if matched is not None and matched.lastgroup is not None:
            found = self.services[int(matched.lastgroup[1:])]
        else:
            found = self._kinds.get(kind) or self.service(self.default_service)
        return found.part_for(path) if path and found.parts else found


class LimitsError(yamlfile.InputError):
    """A limits file that cannot be used; each problem reads `file:line:col: key: problem`."""


class _UnknownKey(yamlfile.FieldError):
    """A key the limits file does not know: placed at the key, not at its value."""


# ---- checking one document, key by key (problems carry the key path)


def _number(value: Any, key: yamlfile.KeyPath, *, integer: bool,
            minimum: float = 0.0) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise yamlfile.FieldError(key, f"should be {kind}, not {value!r}")
    if value < minimum:
        raise yamlfile.FieldError(key, f"should be at least {minimum:g}, not {value!r}")
    return value


def _mapping(value: Any, key: yamlfile.KeyPath) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise yamlfile.FieldError(key, f"should be a mapping, not {yamlfile.describe(value)}")
    return value


def _check_keys(data: Mapping[str, Any], allowed: Iterable[str],
                key: yamlfile.KeyPath) -> None:
    allowed = list(allowed)
    for name in data:
        if name not in allowed:
            raise _UnknownKey((*key, name), f"unknown key. Valid keys are: {', '.join(allowed)}")


def _window(data: Any, key: yamlfile.KeyPath) -> Window:
    data = _mapping(data, key)
    _check_keys(data, ("calls", "seconds"), key)
    if "calls" not in data or "seconds" not in data:
        raise yamlfile.FieldError(key, "should have both calls and seconds")
    calls = _number(data["calls"], (*key, "calls"), integer=True, minimum=1)
    seconds = _number(data["seconds"], (*key, "seconds"), integer=False, minimum=0.001)
    return Window(calls, float(seconds))


def _strings(value: Any, key: yamlfile.KeyPath) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise yamlfile.FieldError(key, f"should be a list of strings, not {value!r}")
    return tuple(value)


def _part(service: str, name: str, data: Any, key: yamlfile.KeyPath) -> ServiceLimits:
    """One sub-path limit: `match` patterns and its own windows."""
    data = _mapping(data, key)
    _check_keys(data, ("match", "burst", "sustained", "certification_factor"), key)
    for needed in ("match", "burst", "sustained"):
        if needed not in data:
            raise yamlfile.FieldError(key, f"should have {needed}")
    paths = _strings(data["match"], (*key, "match"))
    if not paths:
        raise yamlfile.FieldError((*key, "match"), "should list at least one path pattern")
    factor = _number(data.get("certification_factor", 10), (*key, "certification_factor"),
                     integer=True, minimum=1)
    return ServiceLimits(f"{service}/{name}", _window(data["burst"], (*key, "burst")),
                         _window(data["sustained"], (*key, "sustained")),
                         certification_factor=factor, paths=paths)


def _service(name: str, data: Any) -> ServiceLimits:
    key: yamlfile.KeyPath = ("services", name)
    data = _mapping(data, key)
    _check_keys(data, ("hosts", "kinds", "burst", "sustained", "certification_factor",
                       "paths"), key)
    for needed in ("burst", "sustained"):
        if needed not in data:
            raise yamlfile.FieldError(key, f"should have {needed}")
    parts_data = _mapping(data.get("paths") or {}, (*key, "paths"))
    parts = tuple(_part(name, str(part), spec, (*key, "paths", str(part)))
                  for part, spec in parts_data.items())
    kinds = _strings(data.get("kinds"), (*key, "kinds"))
    valid_kinds = [k.value for k in Kind]
    for i, k in enumerate(kinds):
        if k not in valid_kinds:
            raise yamlfile.FieldError((*key, "kinds", i), (
                f"{k!r} is not a resource kind. Valid kinds are: {', '.join(valid_kinds)}"))
    factor = _number(data.get("certification_factor", 10), (*key, "certification_factor"),
                     integer=True, minimum=1)
    return ServiceLimits(name, _window(data["burst"], (*key, "burst")),
                         _window(data["sustained"], (*key, "sustained")),
                         _strings(data.get("hosts"), (*key, "hosts")), kinds, factor,
                         parts=parts)


def _rule_settings(data: Any, notes: list[str]) -> RuleSettings:
    data = _mapping(data, ("rules",))
    known = {f.name: f for f in fields(RuleSettings)}
    _check_keys(data, [*known, *IGNORED_SETTINGS], ("rules",))
    values: dict[str, Any] = {}
    for name, value in data.items():
        key = ("rules", name)
        if name in IGNORED_SETTINGS:
            notes.append(IGNORED_SETTINGS[name])
        elif name == "retry_after_scope":
            if value not in SCOPES:
                raise yamlfile.FieldError(
                    key, f"should be one of {', '.join(SCOPES)}, not {value!r}")
            values[name] = value
        elif known[name].type == "str":
            if not isinstance(value, str):
                raise yamlfile.FieldError(key, f"should be a string, not {value!r}")
            values[name] = value
        elif known[name].type == "int":
            values[name] = _number(value, key, integer=True, minimum=1)
        else:
            values[name] = float(_number(value, key, integer=False))
    return RuleSettings(**values)


def _limits(data: Any, source: str) -> Limits:
    data = _mapping(data, ())
    _check_keys(data, ("version", "default_service", "services", "rules"), ())
    if "version" not in data:
        raise yamlfile.FieldError(("version",), "missing 'version: 1' at the top")
    if data["version"] != 1:
        raise yamlfile.FieldError(("version",), f"should be 1, not {data['version']!r}")
    services = _mapping(data.get("services"), ("services",))
    if not services:
        raise yamlfile.FieldError(("services",), "should name at least one service")
    parsed = tuple(_service(str(name), spec) for name, spec in services.items())
    default = data.get("default_service", parsed[0].name)
    names = [s.name for s in parsed]
    if default not in names:
        raise yamlfile.FieldError(("default_service",), (
            f"should be one of the services ({', '.join(names)}), not {default!r}"))
    notes: list[str] = []
    settings = _rule_settings(data.get("rules") or {}, notes)
    return Limits(parsed, default, settings, source, tuple(notes))


# ---- documents -> Limits


def parse_limits(data: Any, source: str = "<limits>",
                 document: yamlfile.Document | None = None) -> Limits:
    """A limits document (plain data) -> Limits. Raises LimitsError placed by
    `document`'s positions when given (else at the top of `source`)."""
    try:
        return _limits(data, source)
    except yamlfile.FieldError as e:
        if document is None:
            problem = yamlfile.Problem(source, 1, 1, yamlfile.render_key_path(e.key), e.message)
        else:
            problem = document.problem(e.key, e.message, source, key=isinstance(e, _UnknownKey))
        raise LimitsError([problem]) from None


def _merge(base: Any, override: Any) -> Any:
    """`override` laid over `base`: mappings merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            merged[k] = _merge(base.get(k), v) if k in base else v
        return merged
    return override


def _default_document() -> yamlfile.Document:
    text = importlib_resources.files("mpsdproxy").joinpath("data/limits.yaml").read_text(
        encoding="utf-8")
    document = yamlfile.read_text(text, DEFAULT_FILE)
    if document.problems:
        raise LimitsError(document.problems)
    return document


def default_limits() -> Limits:
    """The shipped budgets and thresholds (mpsdproxy/data/limits.yaml)."""
    document = _default_document()
    return parse_limits(document.data, DEFAULT_FILE, document)


def load_limits(path: str | os.PathLike[str] | None = None) -> Limits:
    """The limits in a YAML file merged over the defaults (the defaults alone for None).

    Raises LimitsError (a ValueError) naming the file, line, column and key.
    """
    if not path:
        return default_limits()
    source = os.fspath(path)
    document = yamlfile.read_file(
        path, empty="the file is empty; a limits file starts with 'version: 1'")
    if document.problems:
        raise LimitsError(document.problems)
    data = document.data
    if not isinstance(data, dict):
        raise LimitsError([document.problem(
            (), f"a limits file should be a mapping, not {yamlfile.describe(data)}", source)])
    if "version" not in data:
        raise LimitsError([document.problem(
            (), "missing 'version: 1' at the top", source)])
    return parse_limits(_merge(_default_document().data, data), source, document)
