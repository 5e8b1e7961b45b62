"""Scenario files: YAML -> a validated, immutable Scenario, and the engine that applies it.

A scenario is a list of rules; each says which requests it concerns (`match`),
when it fires (`when`) and what it does (`fault`). The file shape is fixed by
`scenarios/schema.json` (editors with a YAML language server use it too):

    name: lobby-under-pressure
    seed: 7
    rules:
      - name: stale-etag-on-join
        match: {method: PUT, resource: session, headers: {If-Match: "*"}}
        when: {nth: 2}
        fault: {status: 412}

Loading keeps the line and column of every YAML node, validates the data with
the JSON Schema, then checks what a schema cannot say (a `for` without
`after`, a status combined with `drop`, duplicate rule names, globs that do
not compile, ...). Every problem names its place the way compilers do,
`file:line:column: rules[2].when.nth: what is wrong`, and a file with any
problem never becomes a Scenario: the proxy never runs half a scenario.

The runtime half (`Engine`, `Trigger`, `Throttle`) is pure logic over plain
values and a caller-supplied clock, so the injector addon stays thin and the
decisions are testable without a proxy. Nothing here imports mitmproxy.
"""

from __future__ import annotations

import difflib
import enum
import fnmatch
import functools
import json
import math
import random
import re
import threading
import time
from collections import OrderedDict
from collections import deque
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import NamedTuple

import jsonschema
import yaml

from mpsdproxy import catalog
from mpsdproxy import faults
from mpsdproxy import resources
from mpsdproxy.resources import Kind
from mpsdproxy.resources import Resource

__all__ = [
    "FORMAT_VERSION",
    "ROOT",
    "Phase",
    "Per",
    "Origin",
    "RESOURCE_KINDS",
    "Problem",
    "ScenarioError",
    "FieldError",
    "Glob",
    "HeaderMatch",
    "Match",
    "When",
    "FixedDelay",
    "UniformDelay",
    "LognormalDelay",
    "Delay",
    "ThrottleSpec",
    "Fault",
    "Rule",
    "Scenario",
    "parse_duration",
    "parse_glob",
    "parse_delay",
    "parse_match",
    "parse_when",
    "parse_fault",
    "parse_rule",
    "parse_scenario",
    "load",
    "check",
    "schema",
    "Trigger",
    "ThrottleDecision",
    "Throttle",
    "RequestView",
    "Firing",
    "RuleStats",
    "Engine",
]

#: The only version of the file format; `version` may be left out.
FORMAT_VERSION = 1

#: The key path of problems that concern the whole document (syntax, emptiness).
ROOT = "(document)"

#: Scopes, trigger and throttle users kept per rule; the oldest is forgotten
#: beyond this, so memory stays flat however long a playtest runs.
MAX_SCOPES = 10_000

#: Requests whose match verdicts an engine remembers (see Engine._settle); all are
#: forgotten at once beyond this.
MAX_SETTLED = 4096

#: Guards against YAML that would make validation blow up (alias bombs, deep nesting).
MAX_NODES = 20_000
MAX_DEPTH = 50

BURST_PERIOD = 15  # seconds; FGRL burst window (protocol notes §5.1)
SUSTAINED_PERIOD = 300  # seconds; FGRL sustain window

_SCHEMA_CANDIDATES = (
    Path(__file__).resolve().parent / "data" / "scenario.schema.json",
    Path(__file__).resolve().parent.parent / "scenarios" / "schema.json",
)


class Phase(enum.StrEnum):
    REQUEST = "request"  # act before the service is contacted
    RESPONSE = "response"  # forward, then replace or cut the real answer


class Per(enum.StrEnum):
    GLOBAL = "global"
    CLIENT = "client"
    SESSION = "session"


class Origin(enum.StrEnum):
    """Where `after` counts from."""

    START = "start"
    FIRST_MATCH = "first-match"


_HANDLE_KINDS = frozenset({Kind.HANDLE, Kind.HANDLE_SESSION, Kind.HANDLE_QUERY})

#: Resource names a rule may match, and the kinds of `resources.parse` each
#: covers; None means every kind (including paths outside the MPSD grammar).
RESOURCE_KINDS: dict[str, frozenset[Kind] | None] = {
    "session": frozenset({Kind.SESSION}),
    "member": frozenset({Kind.MEMBER}),
    "server": frozenset({Kind.SERVER}),
    "properties": frozenset({Kind.PROPERTIES}),
    "element": resources.ELEMENT_KINDS,
    "handle": _HANDLE_KINDS,
    "hopper": frozenset({Kind.HOPPER}),
    "ticket": frozenset({Kind.TICKET}),
    "query": frozenset({Kind.QUERY}),
    "batch": frozenset({Kind.BATCH}),
    "template": frozenset({Kind.TEMPLATE}),
    "any": None,
}

_SESSION_KINDS = frozenset({Kind.SESSION}) | resources.ELEMENT_KINDS

Headers = Mapping[str, str] | Iterable[tuple[str, str]]
KeyPath = tuple[str | int, ...]


# --- problems ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One thing wrong with a scenario file, placed by line and column (1-based)."""

    path: str
    line: int
    column: int
    key_path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.key_path}: {self.message}"


class ScenarioError(ValueError):
    """A scenario file that cannot be used; `problems` says every reason found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class FieldError(ValueError):
    """A problem with one key of a section; `key` is its path below that section."""

    def __init__(self, key: KeyPath, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message

    def within(self, *prefix: str | int) -> FieldError:
        return FieldError((*prefix, *self.key), self.message)


def render_key_path(path: KeyPath) -> str:
    """`("rules", 2, "when", "nth")` -> `rules[2].when.nth`; the empty path is ROOT."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or ROOT


def _show(value: Any) -> str:
    """A value the way the user wrote it in YAML, short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _describe(value: Any) -> str:
    """What kind of YAML value this is, for type errors."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({_show(value)})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({_show(value)})"
    return _show(value)


# --- value parsers ----------------------------------------------------------------------

_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_HELP = (
    "a duration of 0 or more, such as 1500ms, 2s, 1.5s, 3m or 1h (a bare number means seconds)")


def parse_duration(value: Any) -> float:
    """`1500ms`, `2s`, `1.5s`, `3m`, `1h` or a bare number of seconds -> float seconds.

    Raises ValueError for negative, non-finite or unparsable values.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected {_DURATION_HELP}, not {_describe(value)}")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ValueError(f"a duration cannot be negative, not {_show(value)}")
        if not _DURATION.fullmatch(text):
            raise ValueError(f"expected {_DURATION_HELP}, not {_show(value)}")
        unit = text.lstrip("0123456789.")
        seconds = float(text[: len(text) - len(unit)]) * _UNITS[unit or "s"]
    else:
        seconds = float(value)
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, not {_show(value)}")
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be finite, not {_show(value)}")
    return seconds


@dataclass(frozen=True, slots=True)
class Glob:
    """A shell-style pattern, compiled once, matched case-insensitively against a whole string."""

    text: str
    regex: re.Pattern[str] = field(compare=False, repr=False)

    def matches(self, value: str) -> bool:
        return self.regex.match(value) is not None


def _check_brackets(text: str) -> None:
    """fnmatch silently treats a broken `[...]` as literal text; say so instead."""
    i, n = 0, len(text)
    while i < n:
        if text[i] != "[":
            i += 1
            continue
        j = i + 1
        if j < n and text[j] == "!":
            j += 1
        if j < n and text[j] == "]":
            j += 1
        while j < n and text[j] != "]":
            j += 1
        if j >= n:
            raise ValueError(
                f"'[' at position {i + 1} opens a character set that is never closed "
                f"(write [[] for a literal '['), in {_show(text)}"
            )
        chars = text[i + 1 : j].removeprefix("!")
        for k in range(1, len(chars) - 1):
            if chars[k] == "-" and chars[k - 1] > chars[k + 1]:
                raise ValueError(
                    f"the range {chars[k - 1]}-{chars[k + 1]} in {_show(text)} is empty "
                    f"(write it low-high)"
                )
        i = j + 1


def parse_glob(text: Any) -> Glob:
    """A glob (`*`, `?`, `[set]`, `[!set]`) -> Glob. Raises ValueError when it cannot mean
    what it says: empty, or with an unclosed or empty `[...]`."""
    if not isinstance(text, str):
        raise ValueError(f"expected a glob (a string), not {_describe(text)}")
    if not text:
        raise ValueError("an empty glob matches nothing")
    _check_brackets(text)
    try:
        regex = re.compile(fnmatch.translate(text), re.IGNORECASE)
    except re.error as e:  # pragma: no cover - fnmatch output always compiles
        raise ValueError(f"{_show(text)} is not a valid glob: {e}") from None
    return Glob(text, regex)


# --- records ----------------------------------------------------------------------------


def _header_table(headers: Headers | None) -> dict[str, list[str]]:
    """Lower-cased name -> every value, from a mapping or (name, value) pairs; tolerant."""
    table: dict[str, list[str]] = {}
    if headers is None:
        return table
    items = headers.items() if isinstance(headers, Mapping) else headers
    try:
        for pair in items:
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                continue
            name, value = (_text(part) for part in pair)
            table.setdefault(name.lower(), []).append(value)
    except TypeError:
        pass
    return table


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    return str(value)


def _bare_path(path: str) -> str:
    """The path without scheme, host, query or fragment."""
    if "://" in path:
        path = path.split("://", 1)[1]
        path = "/" + path.split("/", 1)[1] if "/" in path else "/"
    return path.split("?", 1)[0].split("#", 1)[0]


def _bare_host(host: str) -> str:
    """`host:port` -> `host` (IPv6 literals and plain names pass through)."""
    host = host.strip().lower()
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        if port.isdigit():
            return name
    return host


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """One `match.headers` entry: the header present (any value or a glob), or absent."""

    name: str
    present: bool = True
    glob: Glob | None = None

    def matches(self, table: Mapping[str, list[str]]) -> bool:
        values = table.get(self.name.lower())
        if not self.present:
            return values is None
        if values is None:
            return False
        return self.glob is None or any(self.glob.matches(v) for v in values)


@functools.lru_cache(maxsize=256)
def _kinds_of(names: tuple[str, ...]) -> frozenset[Kind] | None:
    """Worked out once per set of resource names: every rule asks on every request."""
    kinds: set[Kind] = set()
    for name in names:
        covered = RESOURCE_KINDS[name]
        if covered is None:
            return None
        kinds |= covered
    return frozenset(kinds) if names else None


@dataclass(frozen=True, slots=True)
class Match:
    """Which requests a rule concerns; every None or empty field matches everything."""

    methods: frozenset[str] | None = None
    resources: tuple[str, ...] = ()
    paths: tuple[Glob, ...] = ()
    hosts: tuple[Glob, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()

    @property
    def kinds(self) -> frozenset[Kind] | None:
        """The resource kinds the rule's resource names cover (None: any)."""
        return _kinds_of(self.resources)

    def compiled(self) -> _CompiledMatch:
        """The match as the cheapest checks: absent conditions dropped, globs as regexes."""
        return _CompiledMatch(
            self.methods, self.kinds,
            tuple(g.regex for g in self.paths), tuple(g.regex for g in self.hosts),
            tuple((h.name.lower(), h.present, h.glob.regex if h.glob is not None else None)
                  for h in self.headers))

    def matches(self, method: str, host: str, path: str, headers: Headers | None,
                resource: Resource | None = None) -> bool:
        """Whether a request is one this rule concerns. Never raises on odd input."""
        return _Facts(method, host, path, headers, resource).matches(self.compiled())


class _CompiledMatch(NamedTuple):
    """A Match reduced to what a request is checked against (equal ones check alike)."""

    methods: frozenset[str] | None
    kinds: frozenset[Kind] | None
    paths: tuple[re.Pattern[str], ...]
    hosts: tuple[re.Pattern[str], ...]
    headers: tuple[tuple[str, bool, re.Pattern[str] | None], ...]


class _Facts:
    """One request as every rule's match sees it, normalised once: the method upper-cased,
    the resource kind; the bare path, bare host and header table when first needed."""

    __slots__ = ("method", "kind", "_path", "_host", "_headers", "_bare_path", "_bare_host",
                 "_table")

    def __init__(self, method: Any, host: Any, path: Any, headers: Headers | None,
                 resource: Any = None) -> None:
        # Requests bring str; _text is for whatever else arrives.
        path = path if type(path) is str else _text(path)
        self.method = (method if type(method) is str else _text(method)).upper()
        self._host = host if type(host) is str else _text(host)
        self._path = path
        self._headers = headers
        if not isinstance(resource, Resource):
            resource = resources.parse(path)
        self.kind = resource.kind
        self._bare_path: str | None = None
        self._bare_host: str | None = None
        self._table: dict[str, list[str]] | None = None

    def matches(self, c: _CompiledMatch) -> bool:
        # Plain loops, not any(): a generator costs more than the checks it runs.
        if c.methods is not None and self.method not in c.methods:
            return False
        if c.kinds is not None and self.kind not in c.kinds:
            return False
        if c.paths:
            path = self._bare_path
            if path is None:
                path = self._bare_path = _bare_path(self._path)
            if not _any_match(c.paths, path):
                return False
        if c.hosts:
            host = self._bare_host
            if host is None:
                host = self._bare_host = _bare_host(self._host)
            if not _any_match(c.hosts, host):
                return False
        if c.headers:
            table = self._table
            if table is None:
                table = self._table = _header_table(self._headers)
            for name, present, regex in c.headers:
                values = table.get(name)
                if not present:
                    if values is not None:
                        return False
                elif values is None:
                    return False
                elif regex is not None:
                    for value in values:
                        if regex.match(value) is not None:
                            break
                    else:
                        return False
        return True


def _any_match(regexes: tuple[re.Pattern[str], ...], value: str) -> bool:
    for regex in regexes:
        if regex.match(value) is not None:
            return True
    return False


@dataclass(frozen=True, slots=True)
class When:
    """When a matching request makes the rule fire; all given conditions must hold."""

    nth: int | None = None
    first: int | None = None
    every: int | None = None
    probability: float | None = None
    after: float | None = None
    for_: float | None = None
    times: int | None = None
    from_: Origin = Origin.START


@dataclass(frozen=True, slots=True)
class FixedDelay:
    seconds: float

    def sample(self, rng: random.Random) -> float:
        return self.seconds


@dataclass(frozen=True, slots=True)
class UniformDelay:
    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True, slots=True)
class LognormalDelay:
    """A long tail, as real latency has; `maximum` keeps one draw from stalling a pass."""

    median: float
    sigma: float
    maximum: float

    def sample(self, rng: random.Random) -> float:
        return min(self.maximum, rng.lognormvariate(math.log(self.median), self.sigma))


Delay = FixedDelay | UniformDelay | LognormalDelay


@dataclass(frozen=True, slots=True)
class ThrottleSpec:
    """FGRL budgets per user: `burst` requests in any 15 s, `sustained` in any 300 s."""

    burst: int
    sustained: int


@dataclass(frozen=True, slots=True)
class Fault:
    """What a rule does when it fires.

    `status`/`entry` answer with a row of the table (the injector builds it with
    `faults.build`, applying `body`, `headers`, `retry_after`, `content_type`);
    `headers` values of None remove a header. In phase response without a
    status, `body`/`headers`/`content_type` edit the real answer instead.
    """

    status: int | None = None
    entry: str | None = None
    body: bytes | None = None
    headers: tuple[tuple[str, str | None], ...] = ()
    retry_after: int | None = None
    content_type: str | None = None
    delay: Delay | None = None
    drop: bool = False
    reset: bool = False
    hang: bool = False
    truncate: bool = False
    truncate_to: int | None = None  # bytes kept; None keeps half
    throttle: ThrottleSpec | None = None

    @property
    def connection(self) -> str | None:
        """The connection fault (drop, reset or hang), or None when the fault answers."""
        for name in ("drop", "reset", "hang"):
            if getattr(self, name):
                return name
        return None

    @property
    def answers(self) -> bool:
        """Whether the fault produces a response of its own (a status or throttling)."""
        return self.status is not None or self.throttle is not None

    def row(self, method: str, resource: Resource | None = None,
            headers: Headers | None = None) -> catalog.Entry | None:
        """The row of the table this fault answers with (None when it gives no status).

        `entry` when the rule names one. Otherwise, among the status's rows, one whose
        situation fits the request (method, session or element, a precondition header
        it sent), so the answer classifies as that row: a row whose precondition the
        request sent beats one without, the narrower precondition wins (412 to If-Match
        returns the session; to If-None-Match, no body), then table order. When no row
        fits, the status's first row.
        """
        if self.entry is not None:
            return catalog.get(self.entry)
        status = 429 if self.throttle is not None else self.status
        rows = catalog.for_status(status) if status is not None else ()
        if not rows:
            return None
        target = _target(resource if isinstance(resource, Resource) else Resource(Kind.UNKNOWN))
        sent = _header_table(headers)
        fits = [(fit, -i, row) for i, row in enumerate(rows)
                if (fit := _row_fit(row, _text(method).upper(), target, sent)) is not None]
        return max(fits, key=lambda f: f[:2])[2] if fits else rows[0]

    def delay_seconds(self, rng: random.Random) -> float:
        """How long to wait before acting (0 when the fault has no delay)."""
        return self.delay.sample(rng) if self.delay is not None else 0.0

    def cut(self, body: bytes) -> bytes:
        """The body as `truncate` leaves it: always strictly shorter when there is one."""
        if not body:
            return body
        keep = len(body) // 2 if self.truncate_to is None else self.truncate_to
        return body[: min(keep, len(body) - 1)]


def _target(resource: Resource) -> catalog.Target:
    if resource.kind is Kind.SESSION:
        return catalog.Target.SESSION
    return catalog.Target.ELEMENT if resource.is_element else catalog.Target.ANY


def _row_fit(row: catalog.Entry, method: str, target: catalog.Target,
             sent: Mapping[str, list[str]]) -> tuple[bool, int] | None:
    """How well a row's situation fits a request (None: it does not)."""
    if method not in row.methods or row.target not in (catalog.Target.ANY, target):
        return None
    if row.preconditions and not any(p.lower() in sent for p in row.preconditions):
        return None
    return bool(row.preconditions), -len(row.preconditions)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    match: Match
    when: When
    fault: Fault
    phase: Phase = Phase.REQUEST
    per: Per = Per.GLOBAL
    index: int = 0
    description: str = ""
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    seed: int
    rules: tuple[Rule, ...]
    path: str = "<string>"

    def rule(self, name: str) -> Rule:
        """The rule with this name (ignoring case); ValueError listing the names otherwise."""
        for rule in self.rules:
            if rule.name.lower() == name.lower():
                return rule
        names = ", ".join(r.name for r in self.rules)
        raise ValueError(f"no rule named {name!r} in {self.name}; its rules are: {names}")


# --- section parsers --------------------------------------------------------------------
# They take schema-valid data and raise FieldError for what the schema cannot express.


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _globs(raw: Mapping[str, Any], key: str) -> tuple[Glob, ...]:
    value = raw.get(key)
    if value is None:
        return ()
    out = []
    for i, text in enumerate(_as_list(value)):
        where = (key, i) if isinstance(value, list) else (key,)
        try:
            glob = parse_glob(text)
        except ValueError as e:
            raise FieldError(where, str(e)) from None
        if key == "path" and not text.startswith(("/", "*", "?", "[")):
            raise FieldError(where, (
                f"a path glob matches the whole path, which starts with '/': "
                f"write '*{text}' or '/{text}', not {_show(text)}"))
        if key == "host" and "/" in text:
            raise FieldError(where, f"a host name, not a URL: {_show(text)}")
        out.append(glob)
    return tuple(out)


def _header_matches(raw: Mapping[str, Any] | None) -> tuple[HeaderMatch, ...]:
    out: list[HeaderMatch] = []
    seen: dict[str, str] = {}
    for name, value in (raw or {}).items():
        first = seen.setdefault(name.lower(), name)
        if first != name:
            raise FieldError(("headers", name),
                             f"repeats header {first!r} (header names ignore case)")
        if isinstance(value, bool):
            out.append(HeaderMatch(name, present=value))
            continue
        try:
            glob = parse_glob(value)
        except ValueError as e:
            raise FieldError(("headers", name), str(e)) from None
        out.append(HeaderMatch(name, glob=None if value == "*" else glob))
    return tuple(out)


def parse_match(raw: Mapping[str, Any] | None) -> Match:
    """`match:` mapping -> Match (None or {} matches every request)."""
    raw = raw or {}
    methods = raw.get("method")
    names = raw.get("resource")
    return Match(
        methods=frozenset(m.upper() for m in _as_list(methods)) if methods is not None else None,
        resources=tuple(_as_list(names)) if names is not None else (),
        paths=_globs(raw, "path"),
        hosts=_globs(raw, "host"),
        headers=_header_matches(raw.get("headers")),
    )


def _duration_field(raw: Mapping[Any, Any], key: str | int) -> float | None:
    if key not in raw:
        return None
    try:
        return parse_duration(raw[key])
    except ValueError as e:
        raise FieldError((key,), str(e)) from None


def _check_when(raw: Mapping[str, Any], after: float | None) -> None:
    counters = [k for k in ("nth", "first", "every") if k in raw]
    if len(counters) > 1:
        raise FieldError((counters[1],), (
            f"{counters[0]} and {counters[1]} cannot be combined: choose one of nth "
            f"(exactly once), first (the first N) or every (every Nth)"))
    if "times" in raw and "nth" in raw:
        raise FieldError(("times",), "times has no effect with nth, which fires only once")
    if "for" in raw and after is None:
        raise FieldError(("for",), (
            "for needs after: it is the length of the window that opens at after "
            "(write after: 0s for a window from the start)"))
    if "from" in raw and after is None:
        raise FieldError(("from",), "from says where after counts from, but there is no after")
    if after == 0 and "for" not in raw:
        raise FieldError(("after",), (
            "after: 0 without for changes nothing; give a later start or a window with for"))


def parse_when(raw: Mapping[str, Any] | None) -> When:
    """`when:` mapping -> When (None or {} fires on every match)."""
    raw = raw or {}
    after = _duration_field(raw, "after")
    window = _duration_field(raw, "for")
    _check_when(raw, after)
    probability = raw.get("probability")
    if probability is not None and not 0 <= probability <= 1:
        raise FieldError(("probability",),
                         f"a probability is between 0 and 1, not {_show(probability)}")
    return When(
        nth=_int_or_none(raw.get("nth")),
        first=_int_or_none(raw.get("first")),
        every=_int_or_none(raw.get("every")),
        probability=float(probability) if probability is not None else None,
        after=after,
        for_=window,
        times=_int_or_none(raw.get("times")),
        from_=Origin(raw.get("from", Origin.START)),
    )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _lognormal(raw: Mapping[str, Any]) -> LognormalDelay:
    median = _duration_field(raw, "median")
    maximum = _duration_field(raw, "max")
    assert median is not None and maximum is not None  # required by the schema
    if median <= 0:
        raise FieldError(("median",), "a log-normal median must be more than 0")
    if maximum < median:
        raise FieldError(("max",), f"max ({raw['max']}) is below the median ({raw['median']})")
    sigma = raw["sigma"]
    if not math.isfinite(sigma):
        raise FieldError(("sigma",), f"sigma must be finite, not {_show(sigma)}")
    return LognormalDelay(median, float(sigma), maximum)


def _uniform(bounds: list[Any]) -> UniformDelay:
    low, high = (_duration_field(dict(enumerate(bounds)), i) for i in (0, 1))
    assert low is not None and high is not None  # two items, by the schema
    if high < low:
        raise FieldError((1,), f"the high bound ({bounds[1]}) is below the low one ({bounds[0]})")
    return UniformDelay(low, high)


def parse_delay(value: Any) -> Delay:
    """`1500ms` | `{uniform: [low, high]}` | `{lognormal: {median, sigma, max}}` -> Delay."""
    if isinstance(value, Mapping):
        try:
            if "uniform" in value:
                return _uniform(value["uniform"])
            if "lognormal" in value:
                return _lognormal(value["lognormal"])
        except FieldError as e:
            raise e.within(next(iter(value))) from None
        raise FieldError((), "a delay mapping holds uniform or lognormal")
    try:
        return FixedDelay(parse_duration(value))
    except ValueError as e:
        raise FieldError((), str(e)) from None


def _body(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    return faults.encode_json(value)


def _statuses(raw: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """The status and explicit row, consistent with each other."""
    status, entry = raw.get("status"), raw.get("entry")
    if entry is None:
        return status, None
    row = catalog.get(entry)
    if status is not None and status != row.status:
        raise FieldError(("entry",), f"{entry} is a row of {row.status}, but status is {status}")
    return row.status, entry


def _truncates(raw: Mapping[str, Any]) -> bool:
    """`truncate: true` or a byte count (0 included); `false` or no key mean no cut."""
    return "truncate" in raw and raw["truncate"] is not False


def _all_rows_bodiless(status: int) -> bool:
    return all(e.body is catalog.BodyKind.NONE for e in catalog.for_status(status))


def _check_connection(raw: Mapping[str, Any]) -> None:
    closing = [k for k in ("drop", "reset", "hang") if raw.get(k)]
    if len(closing) > 1:
        raise FieldError((closing[1],), f"{closing[0]} and {closing[1]} cannot be combined")
    if not closing:
        return
    answer = [k for k in ("status", "entry", "body", "headers", "retry_after", "content_type",
                          "throttle") if k in raw] + (["truncate"] if _truncates(raw) else [])
    if answer:
        listed = ", ".join(answer)
        raise FieldError((closing[0],), (
            f"{closing[0]} gives no answer, so it cannot be combined with {listed}"))
    if closing[0] == "hang" and "delay" in raw:
        raise FieldError(("delay",), "delay has no effect with hang, which never answers")


def _check_throttle(raw: Mapping[str, Any], phase: Phase) -> None:
    spec = raw["throttle"]
    if spec["sustained"] < spec["burst"]:
        raise FieldError(("throttle", "sustained"), (
            f"sustained ({spec['sustained']} per 300 s) is below burst "
            f"({spec['burst']} per 15 s), so burst could never be reached"))
    if phase is Phase.RESPONSE:
        raise FieldError(("throttle",), (
            "throttling answers instead of the service: use phase: request"))
    status, entry = raw.get("status"), raw.get("entry")
    if status not in (None, 429) or (entry is not None and catalog.get(entry).status != 429):
        key = "status" if "status" in raw else "entry"
        raise FieldError((key,), "throttle answers 429 by itself: remove the other status")
    if "retry_after" in raw:
        raise FieldError(("retry_after",), (
            "throttle computes a truthful Retry-After itself: remove retry_after"))


def _check_answer(raw: Mapping[str, Any], status: int | None, phase: Phase) -> None:
    answers = status is not None or "throttle" in raw
    overrides = [k for k in ("body", "headers", "content_type", "retry_after") if k in raw]
    if overrides and not answers and phase is Phase.REQUEST:
        raise FieldError((overrides[0],), (
            f"{overrides[0]} needs a status: in phase request nothing has answered yet "
            f"(add status, or use phase: response to change the real answer)"))
    if "retry_after" in raw and status is not None and status not in catalog.RETRY_AFTER_STATUSES:
        carriers = ", ".join(str(s) for s in sorted(catalog.RETRY_AFTER_STATUSES))
        raise FieldError(("retry_after",), (
            f"retry_after applies to the rows that carry Retry-After ({carriers}), not "
            f"{status}; to send one anyway use headers: {{Retry-After: ...}}"))
    if _truncates(raw):
        if not answers and phase is Phase.REQUEST:
            raise FieldError(("truncate",), (
                "truncate needs an answer to cut: give a status, or use phase: response "
                "to cut the real answer"))
        if status is not None and "body" not in raw and _all_rows_bodiless(status):
            raise FieldError(("truncate",), (
                f"nothing to truncate: the table lists no body for {status}"))


def _does_something(raw: Mapping[str, Any], phase: Phase, delay: Delay | None) -> bool:
    acts = ("status", "entry", "throttle")
    if any(k in raw for k in acts) or any(raw.get(k) for k in ("drop", "reset", "hang")):
        return True
    if _truncates(raw):
        return True
    if delay is not None and delay != FixedDelay(0.0):
        return True
    edits = ("body", "headers", "content_type", "retry_after")
    return phase is Phase.RESPONSE and any(k in raw for k in edits)


def parse_fault(raw: Mapping[str, Any], phase: Phase = Phase.REQUEST) -> Fault:
    """`fault:` mapping -> Fault, checking that its keys make sense together."""
    status, entry = _statuses(raw)
    delay = None
    if "delay" in raw:
        try:
            delay = parse_delay(raw["delay"])
        except FieldError as e:
            raise e.within("delay") from None
    _check_connection(raw)
    if "throttle" in raw:
        _check_throttle(raw, phase)
    _check_answer(raw, status, phase)
    if not _does_something(raw, phase, delay):
        raise FieldError((), (
            "this fault does nothing: give a status, a delay, drop, reset, hang, truncate "
            "or throttle"))
    truncate = raw.get("truncate", False)
    throttle = raw.get("throttle")
    return Fault(
        status=status,
        entry=entry,
        body=_body(raw.get("body")),
        headers=tuple((k, None if v is None else str(v))
                      for k, v in (raw.get("headers") or {}).items()),
        retry_after=raw.get("retry_after"),
        content_type=raw.get("content_type"),
        delay=delay,
        drop=bool(raw.get("drop")),
        reset=bool(raw.get("reset")),
        hang=bool(raw.get("hang")),
        truncate=_truncates(raw),
        truncate_to=None if isinstance(truncate, bool) else int(truncate),
        throttle=ThrottleSpec(throttle["burst"], throttle["sustained"]) if throttle else None,
    )


def _check_scope(rule: Rule) -> None:
    kinds = rule.match.kinds
    if rule.per is Per.SESSION and kinds is not None and not kinds & _SESSION_KINDS:
        names = ", ".join(rule.match.resources)
        raise FieldError(("per",), (
            f"per: session counts requests to sessions, but resource {names} never names one"))


def _rule_parts(raw: Mapping[str, Any], index: int) -> tuple[Rule | None, list[FieldError]]:
    """Parse a rule's sections independently, so one bad section hides no other problem."""
    errors: list[FieldError] = []
    phase = Phase(raw.get("phase", Phase.REQUEST))
    parts: dict[str, Any] = {}
    for key, parse in (("match", parse_match), ("when", parse_when),
                       ("fault", lambda r: parse_fault(r, phase))):
        try:
            parts[key] = parse(raw.get(key))
        except FieldError as e:
            errors.append(e.within(key))
    if errors:
        return None, errors
    rule = Rule(raw["name"], parts["match"], parts["when"], parts["fault"], phase,
                Per(raw.get("per", Per.GLOBAL)), index, raw.get("description", ""),
                raw.get("enabled", True))
    try:
        _check_scope(rule)
    except FieldError as e:
        return None, [e]
    return rule, []


def parse_rule(raw: Mapping[str, Any], index: int = 0) -> Rule:
    """One schema-valid `rules[]` mapping -> Rule; FieldError (a ValueError) on the first
    problem, its `key` relative to the rule."""
    rule, errors = _rule_parts(raw, index)
    if errors:
        raise errors[0]
    assert rule is not None
    return rule


# --- reading YAML with positions --------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader without implicit dates, whose constructor errors carry a position.

    A scenario holds no dates: `seed: 2024-01-01` should be reported as "not an
    integer", not become a date (or crash on `2024-02-30`).
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as e:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value: {e}", node.start_mark) from e


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Locator:
    """Key path -> where its key and its value start in the file."""

    def __init__(self) -> None:
        self.values: dict[KeyPath, yaml.Mark] = {}
        self.keys: dict[KeyPath, yaml.Mark] = {}

    def value(self, path: KeyPath) -> tuple[int, int]:
        for n in range(len(path), -1, -1):
            mark = self.values.get(path[:n])
            if mark is not None:
                return mark.line + 1, mark.column + 1
        return 1, 1

    def key(self, path: KeyPath) -> tuple[int, int]:
        mark = self.keys.get(path)
        return (mark.line + 1, mark.column + 1) if mark is not None else self.value(path)


class _TooComplex(Exception):
    """The node tree cannot be validated safely (recursive, too large or too deep)."""

    def __init__(self, mark: yaml.Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


class _Walker:
    """Records the marks of every node and finds duplicate keys, before construction
    (which rewrites merge keys in place)."""

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.locator = _Locator()
        self.duplicates: list[tuple[KeyPath, yaml.Mark, str]] = []
        self.count = 0
        self.active: set[int] = set()

    def walk(self, node: yaml.Node, path: KeyPath = ()) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooComplex(node.start_mark, f"too large: more than {MAX_NODES} YAML nodes")
        if len(path) > MAX_DEPTH:
            raise _TooComplex(node.start_mark, f"nested deeper than {MAX_DEPTH} levels")
        if id(node) in self.active:
            raise _TooComplex(node.start_mark, "an alias refers to a node that contains it")
        self.locator.values.setdefault(path, node.start_mark)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                self._mapping(node, path, set(), duplicates=True)
            elif isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    self.walk(item, (*path, i))
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: KeyPath, seen: set[Any],
                 duplicates: bool) -> None:
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = self._key(key_node)
            if key in seen:
                if duplicates:
                    first = self.locator.keys[(*path, key)]
                    self.duplicates.append(((*path, key), key_node.start_mark, (
                        f"duplicate key {_show(key)} (first given at line {first.line + 1}); "
                        f"YAML would keep only the last")))
                continue
            seen.add(key)
            self.locator.keys[(*path, key)] = key_node.start_mark
            self.walk(value_node, (*path, key))
        for merged in merges:
            sources = merged.value if isinstance(merged, yaml.SequenceNode) else [merged]
            for source in sources:
                if isinstance(source, yaml.MappingNode):
                    self._mapping(source, path, seen, duplicates=False)

    def _key(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode) and node.tag != _STR_TAG:
            try:
                return self.loader.construct_object(node)
            except yaml.YAMLError:
                return node.value
        if isinstance(node, yaml.ScalarNode):
            return node.value
        return f"<{node.id} key>"


class _Document(NamedTuple):
    data: Any
    locator: _Locator
    problems: list[Problem]


def _yaml_problem(path: str, text: str, e: yaml.YAMLError) -> Problem:
    mark = getattr(e, "problem_mark", None)
    if isinstance(e, yaml.reader.ReaderError):
        before = text[: e.position]
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        char = f"U+{e.character:04X}" if isinstance(e.character, int) else repr(e.character)
        return Problem(path, line, column, ROOT, f"invalid YAML: {e.reason} ({char})")
    problem = getattr(e, "problem", None) or str(e)
    context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and problem.startswith("but "):
        problem = f"{context}, {problem}"
    elif context and context_mark is not None:
        problem += f" ({context} at line {context_mark.line + 1})"
    if context and ("alias" in context or "anchor" in context):
        problem += "; a value that starts with * or & must be quoted, as in \"*\""
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return Problem(path, line, column, ROOT, f"invalid YAML: {problem}")


def _read_yaml(text: str, path: str) -> _Document:
    """YAML text -> plain data plus the position of every key and value."""
    try:
        loader = _Loader(text)  # the reader rejects control characters right here
    except yaml.YAMLError as e:
        return _Document(None, _Locator(), [_yaml_problem(path, text, e)])
    try:
        node = loader.get_single_node()
        if node is None:
            return _Document(None, _Locator(), [Problem(path, 1, 1, ROOT, (
                "the file is empty: a scenario is a mapping with at least rules"))])
        walker = _Walker(loader)
        walker.walk(node)
        data = loader.construct_document(node)
    except yaml.YAMLError as e:
        return _Document(None, _Locator(), [_yaml_problem(path, text, e)])
    except _TooComplex as e:
        mark = e.mark
        return _Document(None, _Locator(), [
            Problem(path, mark.line + 1, mark.column + 1, ROOT, e.message)])
    except RecursionError:
        return _Document(None, _Locator(), [Problem(path, 1, 1, ROOT, "nested too deeply")])
    finally:
        loader.dispose()
    problems = [Problem(path, mark.line + 1, mark.column + 1, render_key_path(kp), message)
                for kp, mark, message in walker.duplicates]
    return _Document(data, walker.locator, problems)


# --- schema validation ------------------------------------------------------------------


@functools.cache
def schema() -> dict[str, Any]:
    """The JSON Schema of scenario files (`scenarios/schema.json`)."""
    for candidate in _SCHEMA_CANDIDATES:
        if candidate.is_file():
            return json.loads(candidate.read_text(encoding="utf-8"))
    raise RuntimeError(f"the scenario schema is missing (looked for {_SCHEMA_CANDIDATES[-1]})")


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema())


_TYPE_NAMES = {
    "object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
    "number": "a number", "boolean": "true or false", "null": "null",
}

#: (key path, locate at the key rather than the value, message)
_Raw = tuple[KeyPath, bool, str]


def _noun(path: KeyPath) -> str:
    names = [p for p in path if isinstance(p, str)]
    return names[-1] if names else "value"


def _with_message(error: jsonschema.ValidationError, inherited: str | None) -> str | None:
    custom = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
    custom = custom or inherited
    return f"{custom}, not {_show(error.instance)}" if custom else None


def _same_place(a: jsonschema.ValidationError, b: jsonschema.ValidationError) -> bool:
    return tuple(a.absolute_path) == tuple(b.absolute_path)


def _type_mismatch(error: jsonschema.ValidationError) -> bool:
    """Whether this branch of an anyOf failed because the value has another type."""
    if error.validator == "type":
        return True
    if error.validator == "anyOf":
        return all(_type_mismatch(c) for c in error.context if _same_place(c, error))
    return False


def _branches(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError] | None:
    """The errors of the one anyOf branch the value was evidently meant for, if any."""
    groups: dict[int, list[jsonschema.ValidationError]] = {}
    for sub in error.context:
        groups.setdefault(sub.schema_path[0], []).append(sub)

    def shape_errors(errs: list[jsonschema.ValidationError]) -> int:
        return sum(1 for e in errs if _same_place(e, error)
                   and e.validator in ("required", "additionalProperties", "minProperties"))

    fitting = {i: errs for i, errs in groups.items()
               if not any(_type_mismatch(e) for e in errs if _same_place(e, error))}
    if not fitting:
        return None
    ranked = sorted(fitting.values(), key=shape_errors)
    if len(ranked) > 1 and shape_errors(ranked[0]) == shape_errors(ranked[1]):
        return None
    return ranked[0]


def _translate(error: jsonschema.ValidationError, inherited: str | None = None) -> list[_Raw]:
    """A jsonschema error -> problems in the file's own words."""
    path = tuple(error.absolute_path)
    keyword = error.validator
    if keyword == "anyOf":
        branch = _branches(error)
        if branch is not None:
            own = error.schema.get("errorMessage") or inherited
            out: list[_Raw] = []
            for sub in branch:
                out += _translate(sub, own if tuple(sub.absolute_path) == path else None)
            return out
        message = _with_message(error, inherited)
        return [(path, False, message or f"{_show(error.instance)} is not valid here")]
    if "propertyNames" in error.absolute_schema_path:
        return [((*path, error.instance), True,
                 _with_message(error, None) or f"{_show(error.instance)} is not a valid key")]
    if keyword == "additionalProperties":
        return _unknown_keys(error, path)
    if keyword == "required":
        return [((*path, name), False, f"missing required key {name!r}")
                for name in error.validator_value if name not in error.instance]
    return [(path, False, _value_message(error, path, inherited))]


def _unknown_keys(error: jsonschema.ValidationError, path: KeyPath) -> list[_Raw]:
    known = list(error.schema.get("properties", {}))
    out: list[_Raw] = []
    for key in error.instance:
        if key in known:
            continue
        hint = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        message = f"unknown key {_show(key)}"
        if hint:
            message += f"; did you mean {hint[0]!r}?"
        message += f" (valid keys here: {', '.join(known)})"
        out.append(((*path, key), True, message))
    return out


def _value_message(error: jsonschema.ValidationError, path: KeyPath,
                   inherited: str | None) -> str:
    keyword, value, limit = error.validator, error.instance, error.validator_value
    custom = _with_message(error, inherited)
    if keyword == "type":
        types = _as_list(limit)
        wanted = " or ".join(_TYPE_NAMES.get(t, t) for t in types)
        return custom or f"expected {wanted}, not {_describe(value)}"
    if keyword == "enum":
        valid = ", ".join(str(v) for v in limit)
        return f"{_show(value)} is not a valid {_noun(path)}; valid values are: {valid}"
    if keyword == "minItems" and path == ("rules",):
        return "a scenario needs at least one rule"
    if keyword in ("minProperties", "maxProperties"):
        keys = ", ".join(error.schema.get("properties", {}))
        return f"give exactly one of: {keys}"
    if custom and keyword in _VALUE_KEYWORDS:
        return custom
    return _bound_message(keyword, value, limit) or custom or error.message


#: Keywords about the value itself, where a schema's own errorMessage says it best.
_VALUE_KEYWORDS = frozenset({"type", "pattern", "const", "minimum", "maximum",
                             "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength"})


def _bound_message(keyword: str, value: Any, limit: Any) -> str | None:
    if keyword == "minimum":
        return f"must be at least {limit}, not {_show(value)}"
    if keyword == "maximum":
        return f"must be at most {limit}, not {_show(value)}"
    if keyword == "minItems":
        return f"needs at least {limit} item{'s' if limit != 1 else ''}"
    if keyword == "maxItems":
        return f"takes at most {limit} item{'s' if limit != 1 else ''}, not {len(value)}"
    if keyword == "uniqueItems":
        return "lists the same value twice"
    if keyword == "minLength":
        return "must not be empty"
    if keyword == "maxLength":
        return f"is longer than {limit} characters"
    return None


def _schema_problems(doc: _Document, path: str) -> list[tuple[KeyPath, Problem]]:
    out = []
    for error in _validator().iter_errors(doc.data):
        for key_path, at_key, message in _translate(error):
            where = doc.locator.key(key_path) if at_key else doc.locator.value(key_path)
            out.append((key_path, Problem(path, *where, render_key_path(key_path), message)))
    return out


# --- building the scenario --------------------------------------------------------------


def _version_problem(doc: _Document, path: str) -> Problem | None:
    """A wrong version explains every other problem, so it is reported alone."""
    if not isinstance(doc.data, dict) or "version" not in doc.data:
        return None
    version = doc.data["version"]
    if version == FORMAT_VERSION and not isinstance(version, bool):
        return None
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        message = (f"version {version} is newer than this mpsdproxy reads (version "
                   f"{FORMAT_VERSION}): upgrade mpsdproxy, or write the file for version 1")
    else:
        message = (f"unknown scenario version {_show(version)}: the only version is "
                   f"{FORMAT_VERSION} (write version: 1 or leave it out)")
    return Problem(path, *doc.locator.value(("version",)), "version", message)


def _duplicate_names(rules: list[Any], doc: _Document, path: str) -> list[Problem]:
    seen: dict[str, int] = {}
    out = []
    for i, raw in enumerate(rules):
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str):
            continue
        first = seen.setdefault(name.lower(), i)
        if first != i:
            key_path = ("rules", i, "name")
            out.append(Problem(path, *doc.locator.value(key_path), render_key_path(key_path),
                               f"the rule name {name!r} is already used by rules[{first}] "
                               f"(names must be unique, ignoring case)"))
    return out


def _build(doc: _Document, path: str, flagged: set[KeyPath]) -> tuple[list[Rule], list[Problem]]:
    """Every rule the schema found sound -> Rule, plus the semantic problems found."""
    rules_raw = doc.data.get("rules") if isinstance(doc.data, dict) else None
    if not isinstance(rules_raw, list):
        return [], []
    problems = _duplicate_names(rules_raw, doc, path)
    rules = []
    for i, raw in enumerate(rules_raw):
        if any(fp[:2] == ("rules", i) or fp == ("rules",) for fp in flagged):
            continue
        rule, errors = _rule_parts(raw, i)
        for e in errors:
            key_path = ("rules", i, *e.key)
            problems.append(Problem(path, *doc.locator.value(key_path),
                                    render_key_path(key_path), e.message))
        if rule is not None:
            rules.append(rule)
    return rules, problems


def _default_name(path: str) -> str:
    stem = Path(path).stem if not path.startswith("<") else "scenario"
    return stem or "scenario"


def _finish(problems: list[Problem]) -> list[Problem]:
    return sorted(set(problems), key=lambda p: (p.line, p.column, p.key_path, p.message))


def parse_scenario(text: str, path: str = "<string>") -> Scenario:
    """Scenario YAML text -> Scenario. Raises ScenarioError listing every problem found;
    `path` only names the file in the problems."""
    doc = _read_yaml(text, path)
    if doc.data is None and doc.problems:
        raise ScenarioError(doc.problems)
    version = _version_problem(doc, path)
    if version is not None:
        raise ScenarioError([version])
    found = _schema_problems(doc, path)
    flagged = {key_path for key_path, _ in found}
    rules, semantic = _build(doc, path, flagged)
    problems = _finish(doc.problems + [p for _, p in found] + semantic)
    if problems:
        raise ScenarioError(problems)
    data = doc.data
    return Scenario(
        name=data.get("name") or _default_name(path),
        description=data.get("description", ""),
        seed=int(data.get("seed", 0)),
        rules=tuple(rules),
        path=path,
    )


def _decode(raw: bytes, path: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        before = raw[: e.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        raise ScenarioError([Problem(path, line, column, ROOT, (
            f"not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8"))]) from None


def load(path: str | Path) -> Scenario:
    """Read and validate a scenario file. Raises ScenarioError (a ValueError) whose
    message is one `file:line:column: key.path: what is wrong` line per problem."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        problem = Problem(name, 1, 1, ROOT, f"cannot read the file: {e.strerror or e}")
        raise ScenarioError([problem]) from None
    return parse_scenario(_decode(raw, name), name)


def check(paths: Iterable[str | Path]) -> list[str]:
    """Every problem of every file, one line each; an empty list means all are valid."""
    lines: list[str] = []
    for path in paths:
        try:
            load(path)
        except ScenarioError as e:
            lines += [str(p) for p in e.problems]
    return lines


# --- runtime: triggers ------------------------------------------------------------------


@dataclass(slots=True)
class _Counters:
    matches: int = 0
    eligible: int = 0  # matches inside the time window: what nth/first/every count
    fired: int = 0
    first_match: float | None = None


class _Bounded(OrderedDict[str, Any]):
    """A dict that forgets its least recently used entries beyond `limit`."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def touch(self, key: str, make: Any) -> Any:
        value = self.get(key)
        if value is None:
            value = self[key] = make()
            if len(self) > self.limit:
                self.popitem(last=False)
        else:
            self.move_to_end(key)
        return value


_NO_SCOPE: Any = object()


def _eligible_bounds(when: When) -> tuple[int | float, int | float]:
    """The lowest and highest eligible count at which `when`'s count conditions can hold
    (`nth`, `first`, `every`): outside them `Trigger._allows` is False, and draws nothing."""
    lowest: int | float = 1
    highest: int | float = math.inf
    if when.nth is not None:
        lowest = highest = when.nth
    if when.first is not None:
        highest = min(highest, when.first)
    if when.every is not None and when.every > 0:
        lowest = max(lowest, when.every)
    return lowest, highest


class Trigger:
    """Decides, match by match, whether a rule fires; counters are kept per scope key.

    `fires(now, scope)` counts a match and decides; `count(now, scope)` only
    counts (a match that an earlier rule answered). `now` is any monotonic
    clock in seconds, the same one `start` was read from.
    """

    __slots__ = ("when", "rng", "start", "match_count", "fire_count", "_scopes",
                 "_last_scope", "_last_counters", "_timed", "_lowest", "_highest")

    def __init__(self, when: When, rng: random.Random, start: float,
                 max_scopes: int = MAX_SCOPES) -> None:
        self.when = when
        # What `count` and `step` check before the full conditions, worked out once: a
        # match that cannot fire then costs no call.
        self._timed = when.after is not None
        self._lowest, self._highest = _eligible_bounds(when)
        self.rng = rng
        self.start = start
        self.match_count = 0
        self.fire_count = 0
        self._scopes: _Bounded = _Bounded(max_scopes)
        # The scope counted last and its counters: already the most recently used, so
        # counting it again (a title polling its session) needs no look-up.
        self._last_scope: Any = _NO_SCOPE
        self._last_counters = _Counters()

    def reset(self, start: float | None = None, rng: random.Random | None = None) -> None:
        self.start = self.start if start is None else start
        self.rng = rng or self.rng
        self.match_count = self.fire_count = 0
        self._scopes.clear()
        self._last_scope = _NO_SCOPE

    def _in_window(self, now: float, counters: _Counters) -> bool:
        when = self.when
        if when.after is None:
            return True
        origin = self.start if when.from_ is Origin.START else counters.first_match
        begin = (origin if origin is not None else now) + when.after
        return now >= begin and (when.for_ is None or now < begin + when.for_)

    def count(self, now: float, scope: str = "") -> _Counters:
        counters = self._counted(now, scope)
        if not self._timed or self._in_window(now, counters):
            counters.eligible += 1
        return counters

    def _counted(self, now: float, scope: str) -> _Counters:
        """The scope's counters with this match counted (not yet `eligible`)."""
        if scope == self._last_scope:
            counters = self._last_counters
        else:
            counters = self._touch(scope)
        counters.matches += 1
        self.match_count += 1
        if counters.first_match is None:
            counters.first_match = now
        return counters

    def step(self, now: float, scope: str = "") -> _Counters | None:
        """`count`, then `ready`, in one go: the counters when the match just counted
        satisfies every condition (drawing the probability), else None."""
        counters = self._counted(now, scope)
        if self._timed and not self._in_window(now, counters):
            return None
        counters.eligible = eligible = counters.eligible + 1
        if self._lowest <= eligible <= self._highest and self._allows(counters):
            return counters
        return None

    def _touch(self, scope: str) -> _Counters:
        """The scope's counters, made the most recently used (new ones start at 0)."""
        scopes = self._scopes
        counters: _Counters | None = scopes.get(scope)
        if counters is None:
            counters = scopes.touch(scope, _Counters)
            if scope not in scopes:  # a limit below 1 keeps nothing
                return counters
        else:
            scopes.move_to_end(scope)
        self._last_scope = scope
        self._last_counters = counters
        return counters

    def ready(self, now: float, counters: _Counters) -> bool:
        """Whether the match just counted satisfies every condition (draws the probability)."""
        return self._in_window(now, counters) and self._allows(counters)

    def _allows(self, counters: _Counters) -> bool:
        """Whether the count conditions hold for the eligible match just counted (draws
        the probability last, so a draw is only spent when everything else holds)."""
        when = self.when
        n = counters.eligible
        if when.nth is not None and n != when.nth:
            return False
        if when.first is not None and n > when.first:
            return False
        if when.every is not None and n % when.every:
            return False
        if when.times is not None and counters.fired >= when.times:
            return False
        return when.probability is None or self.rng.random() < when.probability

    def record_fire(self, counters: _Counters) -> None:
        counters.fired += 1
        self.fire_count += 1

    def fires(self, now: float, scope: str = "") -> bool:
        """Count a match in `scope` and say whether the rule fires on it."""
        counters = self.count(now, scope)
        if not self.ready(now, counters):
            return False
        self.record_fire(counters)
        return True


# --- runtime: throttling ----------------------------------------------------------------


class ThrottleDecision(NamedTuple):
    """What FGRL would say: the 429's Retry-After and FGRL message fields when not ok."""

    ok: bool
    retry_after: int  # whole seconds; 0 when ok
    current: int  # requests in the window, this one included
    maximum: int
    period: int  # seconds: 15 (burst) or 300 (sustained)


@dataclass(slots=True)
class _Bucket:
    second: int
    allowed: int = 0
    total: int = 0


class Throttle:
    """Per-user sliding windows of 15 s (allowed requests) and 300 s (every request,
    throttled ones included, as FGRL counts them), kept in one-second buckets.

    A window holds every bucket no older than its period, so no span shorter
    than the period ever lets more than the budget through, and Retry-After
    says when enough of the oldest buckets will have left it.
    """

    def __init__(self, spec: ThrottleSpec, max_users: int = MAX_SCOPES) -> None:
        self.spec = spec
        self._users: _Bounded = _Bounded(max_users)

    def reset(self) -> None:
        self._users.clear()

    def allow(self, now: float, user: str) -> ThrottleDecision:
        buckets: deque[_Bucket] = self._users.touch(user, deque)
        second = math.floor(now)
        while buckets and buckets[0].second < second - SUSTAINED_PERIOD:
            buckets.popleft()
        burst = sum(b.allowed for b in buckets if b.second >= second - BURST_PERIOD)
        sustained = sum(b.total for b in buckets)
        ok = burst < self.spec.burst and sustained < self.spec.sustained
        if not buckets or buckets[-1].second < second:
            buckets.append(_Bucket(second))
        buckets[-1].total += 1
        buckets[-1].allowed += ok
        if ok:
            return ThrottleDecision(True, 0, burst + 1, self.spec.burst, BURST_PERIOD)
        verdicts = []
        if burst >= self.spec.burst:
            wait = _wait(buckets, now, BURST_PERIOD, burst - self.spec.burst + 1, allowed=True)
            verdicts.append(ThrottleDecision(False, wait, burst + 1, self.spec.burst, BURST_PERIOD))
        if sustained >= self.spec.sustained:
            excess = sustained + 1 - self.spec.sustained + 1
            wait = _wait(buckets, now, SUSTAINED_PERIOD, excess, allowed=False)
            verdicts.append(ThrottleDecision(False, wait, sustained + 1, self.spec.sustained,
                                             SUSTAINED_PERIOD))
        return max(verdicts, key=lambda v: v.retry_after)


def _wait(buckets: deque[_Bucket], now: float, period: int, excess: int, allowed: bool) -> int:
    """Whole seconds until `excess` of the oldest counted requests have left the window."""
    second = math.floor(now)
    gone = 0
    for bucket in buckets:
        if bucket.second < second - period:
            continue
        gone += bucket.allowed if allowed else bucket.total
        if gone >= excess:
            return max(1, math.ceil(bucket.second + period + 1 - now))
    return period  # pragma: no cover - the caller only asks when the window holds enough


# --- runtime: the engine ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestView:
    """What the engine needs to know about a request; the addon fills it from the flow.

    `host` is the name the title addressed (without port); `client` identifies
    the client for `per: client` (its redacted Authorization, else its address);
    `user` keys throttling (the redacted Authorization). `resource` defaults to
    `resources.parse(path)`.
    """

    method: str
    path: str
    host: str = ""
    headers: Headers = ()
    resource: Resource | None = None
    client: str = ""
    user: str = ""


@dataclass(frozen=True, slots=True)
class Firing:
    """A rule that fired on a request, with what the injector needs to act on it."""

    rule: Rule
    scope: str
    delay: float = 0.0  # seconds to wait before acting, already drawn
    throttle: ThrottleDecision | None = None  # for throttle rules: the 429's numbers


@dataclass(frozen=True, slots=True)
class RuleStats:
    name: str
    phase: Phase
    enabled: bool
    matches: int
    fires: int


class _Runtime:
    __slots__ = ("rule", "seed", "enabled", "trigger", "delay_rng", "throttle")

    def __init__(self, rule: Rule, seed: int, start: float) -> None:
        self.rule = rule
        self.seed = seed
        self.enabled = rule.enabled
        self.trigger = Trigger(rule.when, self._rng("when"), start)
        self.delay_rng = self._rng("delay")
        self.throttle = Throttle(rule.fault.throttle) if rule.fault.throttle else None

    def _rng(self, purpose: str) -> random.Random:
        """One stream per rule and purpose: adding jitter to one rule shifts no other draw."""
        return random.Random(f"{self.seed}:{self.rule.index}:{purpose}")

    def reset(self, start: float | None) -> None:
        self.trigger.reset(start, self._rng("when"))
        self.delay_rng = self._rng("delay")
        if self.throttle is not None:
            self.throttle.reset()


#: Where each `per` finds its scope key among a request's three (see Engine.evaluate).
_GLOBAL, _CLIENT, _SESSION = 0, 1, 2
_PER_SLOT = {Per.GLOBAL: _GLOBAL, Per.CLIENT: _CLIENT, Per.SESSION: _SESSION}


class Engine:
    """Applies a scenario's rules to requests, in file order; the first rule that fires wins
    and every other matching rule still counts the request.

    Rules of one phase are tried per call: the injector asks with
    Phase.REQUEST before forwarding, and with Phase.RESPONSE for exchanges it
    forwarded. Thread-safe, so nth fires once however many clients race.
    """

    def __init__(self, scenario: Scenario, start: float | None = None) -> None:
        self.scenario = scenario
        self.start = time.monotonic() if start is None else start
        self.enabled = True
        self._lock = threading.Lock()
        self._runtimes = [_Runtime(rule, scenario.seed, self.start) for rule in scenario.rules]
        #: Each distinct match once, so a request is checked once per distinct match.
        self._matches: list[_CompiledMatch] = []
        slots: dict[_CompiledMatch, int] = {}
        plans: dict[Phase, list[tuple[_Runtime, Trigger, int, int]]] = {p: [] for p in Phase}
        for runtime in self._runtimes:
            rule = runtime.rule
            compiled = rule.match.compiled()
            slot = slots.get(compiled)
            if slot is None:
                slot = slots[compiled] = len(self._matches)
                self._matches.append(compiled)
            if not isinstance(rule.phase, Phase):
                continue  # a rule of no known phase is never evaluated
            per = _PER_SLOT[rule.per] if isinstance(rule.per, Per) else _GLOBAL
            plans[rule.phase].append((runtime, runtime.trigger, slot, per))
        #: Per phase, the rules of that phase in file order: (runtime, its trigger, its
        #: match's slot, its scope's slot).
        self._plans = {phase: tuple(plan) for phase, plan in plans.items()}
        #: Per slot, the match without its header conditions, and those alone (None when
        #: it has none): the first is decided by what requests repeat, the second is not.
        self._bases = tuple(c._replace(headers=()) for c in self._matches)
        self._header_checks = tuple(
            _CompiledMatch(None, None, (), (), c.headers) if c.headers else None
            for c in self._matches)
        #: (method, kind, path, host) -> `_settle`'s answer: a title asks for the same few
        #: resources over and over, and globs cost more than the look-up.
        self._settled: dict[tuple[str, Kind, str, str], tuple[bool | None, ...]] = {}
        #: The phases some rule acts in.
        self.phases = frozenset(phase for phase, plan in plans.items() if plan)
        #: The phases some rule is counted per session in (only they need the session key).
        self._per_session = frozenset(
            phase for phase, plan in plans.items() if any(p == _SESSION for *_, p in plan))

    def evaluate(self, view: RequestView, phase: Phase = Phase.REQUEST,
                 now: float | None = None) -> Firing | None:
        """The rule that fires on this request in this phase, or None."""
        if not self.enabled:
            return None
        now = time.monotonic() if now is None else now
        resource = view.resource if view.resource is not None else resources.parse(view.path)
        plan = self._plans[phase] if isinstance(phase, Phase) else ()
        if not plan:
            return None
        matched = list(self._settle(view, resource))
        header_checks = self._header_checks
        facts: _Facts | None = None
        session = resource.key if phase in self._per_session else None
        scopes: list[str | None] = ["", view.client, session]
        with self._lock:
            winner: Firing | None = None
            for runtime, trigger, slot, per in plan:
                if not runtime.enabled:
                    continue
                scope = scopes[per]
                if scope is None:
                    continue
                ok = matched[slot]
                if ok is None:
                    if facts is None:
                        facts = _Facts(view.method, view.host, view.path, view.headers,
                                       resource)
                    ok = matched[slot] = facts.matches(header_checks[slot])
                if not ok:
                    continue
                if winner is not None:
                    trigger.count(now, scope)
                    continue
                counters = trigger.step(now, scope)
                if counters is not None:
                    winner = self._fire(runtime, view, now, scope, counters)
            return winner

    def _settle(self, view: RequestView, resource: Any) -> tuple[bool | None, ...]:
        """Per slot, whether the request passes the match (None: it passes all but the
        header conditions, which are left to check)."""
        method, path, host = view.method, view.path, view.host
        key = None
        if (type(method) is str and type(path) is str and type(host) is str
                and isinstance(resource, Resource)):
            key = (method, resource.kind, path, host)
            settled = self._settled.get(key)
            if settled is not None:
                return settled
        facts = _Facts(method, host, path, (), resource)
        settled = tuple((True if checks is None else None) if facts.matches(base) else False
                        for base, checks in zip(self._bases, self._header_checks, strict=True))
        if key is not None:
            if len(self._settled) >= MAX_SETTLED:
                self._settled.clear()
            self._settled[key] = settled
        return settled

    def _fire(self, runtime: _Runtime, view: RequestView, now: float, scope: str,
              counters: _Counters) -> Firing | None:
        """A match that satisfies the rule's `when`: the rule fires unless its throttle
        lets the request through."""
        trigger = runtime.trigger
        decision = None
        if runtime.throttle is not None:
            decision = runtime.throttle.allow(now, view.user or view.client)
            if decision.ok:
                return None
        trigger.record_fire(counters)
        delay = runtime.rule.fault.delay_seconds(runtime.delay_rng)
        return Firing(runtime.rule, scope, delay, decision)

    def reset(self, start: float | None = None) -> None:
        """Forget every count and draw, as if the scenario had just been loaded; `start`
        moves the origin of the time windows (default: keep it)."""
        with self._lock:
            if start is not None:
                self.start = start
            for runtime in self._runtimes:
                runtime.reset(start)

    def _runtime(self, name: str) -> _Runtime:
        for runtime in self._runtimes:
            if runtime.rule.name.lower() == name.lower():
                return runtime
        names = ", ".join(r.rule.name for r in self._runtimes)
        raise ValueError(f"no rule named {name!r} in {self.scenario.name}; its rules are: {names}")

    def set_enabled(self, enabled: bool, rule: str | None = None) -> None:
        """Switch one rule (by name) or, with no name, the whole engine on or off."""
        if rule is None:
            self.enabled = enabled
            return
        with self._lock:
            self._runtime(rule).enabled = enabled

    def enable(self, rule: str | None = None) -> None:
        self.set_enabled(True, rule)

    def disable(self, rule: str | None = None) -> None:
        self.set_enabled(False, rule)

    def stats(self) -> list[RuleStats]:
        """Each rule's match and fire counts, in file order."""
        with self._lock:
            return [RuleStats(r.rule.name, r.rule.phase, r.enabled, r.trigger.match_count,
                              r.trigger.fire_count) for r in self._runtimes]

    def stats_lines(self) -> Iterator[str]:
        """One readable line per rule, for the summary printed at shutdown."""
        for s in self.stats():
            state = "" if s.enabled else " (off)"
            yield f"{s.name}: {s.matches} matched, {s.fires} fired{state}"
