"""Title-behaviour verdicts: did the title handle 412, 429 and 503 the way the service asks?

A streaming engine judges a recording one record at a time. `Engine.feed(record)`
returns the verdicts that record decided (a Retry-After broken, a 412 answered
with the right ETag, a waiting verdict whose deadline the record's time passed);
`Engine.finish()` decides whatever is still waiting and adds one summary verdict
for every rule that decided nothing (pass when it saw relevant traffic,
not-applicable when it saw none).

Each verdict is pass, warn, fail or not-applicable, with a one-line reason and
its evidence: the seq numbers of the records behind it and the gaps between
them in milliseconds. The fault-handling rules (Retry-After, backoff, 412, 409,
polling a missing session) pass or fail. The call-pattern rules (call-rate
budgets and the Xbox Live Trace Analyzer's rules, protocol notes §5.4) warn, and
fail only at the certification line (ten times the sustained budget).

Who "the client" is: the redacted Authorization value when the request has one
(one user of one title), else the client's address without its port (a new
connection is the same title). Everything the engine holds is bounded: sliding
windows and per-key last state, each key with a deadline, and at most
`max_keys` keys per rule (the least recently used key is decided and dropped
first), so memory stays flat however long the recording.

Thresholds live in `mpsdproxy/data/limits.yaml`; `load_limits(path)` merges a
user's file over it.
"""

from __future__ import annotations

import copy
import datetime
import enum
import fnmatch
import functools
import heapq
import itertools
import math
from collections import OrderedDict
from collections import deque
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import fields
from dataclasses import replace
from importlib import resources as importlib_resources
from types import MappingProxyType
from typing import Any
from typing import Generic
from typing import NamedTuple
from typing import TypeVar
from urllib.parse import urlsplit

import yaml

from mpsdproxy import catalog
from mpsdproxy import recording
from mpsdproxy import resources
from mpsdproxy.resources import Kind
from mpsdproxy.resources import Resource

__all__ = [
    "Status",
    "Group",
    "Rule",
    "RULES",
    "RULES_BY_ID",
    "Verdict",
    "Window",
    "ServiceLimits",
    "RuleSettings",
    "Limits",
    "parse_limits",
    "load_limits",
    "default_limits",
    "Exchange",
    "to_exchange",
    "Engine",
    "DEFAULT_MAX_KEYS",
]

#: The statuses whose rows carry Retry-After: 429 and 503 (read from the table).
RETRY_STATUSES: frozenset[int] = catalog.RETRY_AFTER_STATUSES
THROTTLED: int = catalog.get("429.too-many-requests").status
CONFLICT: int = catalog.get("409.conflict").status
PRECONDITION_FAILED: int = catalog.get("412.if-match-session").status
#: The row the missing-session rule watches: its status, methods and target.
MISSING_SESSION: catalog.Entry = catalog.get("204.get-session")
WRITE_METHODS: frozenset[str] = frozenset({"PUT", "POST", "DELETE", "PATCH"})
BATCH_KINDS: frozenset[Kind] = frozenset({Kind.BATCH, Kind.HANDLE_QUERY})

DEFAULT_MAX_KEYS = 10_000
#: Waiting verdicts are looked at (at most) this often, in record time.
EXPIRY_STEP_S = 1.0
#: At most this many seq numbers are kept as one verdict's evidence.
MAX_EVIDENCE = 24


class Status(enum.StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    NOT_APPLICABLE = "not-applicable"


class Group(enum.StrEnum):
    FAULT_HANDLING = "fault-handling"  # pass or fail
    CALL_PATTERN = "call-pattern"  # warn; fail only at the certification line


@dataclass(frozen=True)
class Rule:
    """One behaviour the engine judges. `id` is stable: reports and CI refer to it."""

    id: str
    title: str
    group: Group
    checks: str  # one line: what a passing title does


RULES: tuple[Rule, ...] = (
    Rule("retry-after", "Retry-After honoured", Group.FAULT_HANDLING,
         "After a 503 or 429 with Retry-After N, the client sends nothing to that host "
         "for N seconds."),
    Rule("backoff", "Backoff without Retry-After", Group.FAULT_HANDLING,
         "Retries after a 503 or 429 without Retry-After are spaced out, grow, and stop."),
    Rule("412-handled", "412 handled", Group.FAULT_HANDLING,
         "After a 412 the next write uses the ETag the 412 returned, or follows a fresh "
         "GET; it never resends the stale ETag."),
    Rule("409-not-retried", "409 not blindly retried", Group.FAULT_HANDLING,
         "A request answered 409 is not sent again unchanged."),
    Rule("missing-session-polling", "No polling of a missing session", Group.FAULT_HANDLING,
         f"GETs of a session answered {MISSING_SESSION.id} (\"{MISSING_SESSION.meaning}\") "
         "are not repeated above the configured rate."),
    Rule("rate-budget", "Call-rate budgets", Group.CALL_PATTERN,
         "Each user stays within the burst and sustained rate limits of each service; "
         "ten times the sustained limit fails certification."),
    Rule("burst", "Burst detection", Group.CALL_PATTERN,
         "No run of calls well above the title's usual rate within a short window."),
    Rule("repeated-calls", "Repeated identical calls", Group.CALL_PATTERN,
         "The same call (URI and body) is not repeated within a few seconds."),
    Rule("polling", "Evenly spaced polling", Group.CALL_PATTERN,
         "The same call is not repeated at a near-constant interval (use RTA instead)."),
    Rule("consecutive-429", "Consecutive 429s", Group.CALL_PATTERN,
         "A throttled client does not get throttled again on its next call."),
    Rule("small-batch", "Small batch calls", Group.CALL_PATTERN,
         "Batch calls carry enough users to be worth a batch."),
    Rule("batch-frequency", "Batch frequency", Group.CALL_PATTERN,
         "Batch calls close together are combined into one."),
)
RULES_BY_ID: dict[str, Rule] = {r.id: r for r in RULES}


@dataclass(frozen=True)
class Verdict:
    """One judgement of one occurrence, with the records behind it.

    `records` are seq numbers (the trigger first), `gaps_ms` the gaps the
    reason talks about, `time` the epoch seconds at which it was decided.
    """

    rule: str
    status: Status
    reason: str
    records: tuple[int, ...] = ()
    gaps_ms: tuple[float, ...] = ()
    client: str | None = None
    resource: str | None = None
    time: float | None = None

    @property
    def title(self) -> str:
        return RULES_BY_ID[self.rule].title if self.rule in RULES_BY_ID else self.rule

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "title": self.title,
            "status": self.status.value,
            "reason": self.reason,
            "records": list(self.records),
            "gaps_ms": [round(g, 1) for g in self.gaps_ms],
            "client": self.client,
            "resource": self.resource,
            "time": recording.timestamp(self.time),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        when = data.get("time")
        return cls(
            rule=str(data["rule"]),
            status=Status(data["status"]),
            reason=str(data.get("reason", "")),
            records=tuple(int(s) for s in data.get("records") or ()),
            gaps_ms=tuple(float(g) for g in data.get("gaps_ms") or ()),
            client=data.get("client"),
            resource=data.get("resource"),
            time=recording.parse_timestamp(when) if when else None,
        )

    @property
    def summary(self) -> str:
        """`title: reason [records ...; gaps ...]`, one line."""
        evidence = ""
        if self.records:
            evidence = " [records " + ", ".join(str(s) for s in self.records)
            if self.gaps_ms:
                evidence += "; gaps " + ", ".join(f"{g:.0f} ms" for g in self.gaps_ms)
            evidence += "]"
        return f"{self.title}: {self.reason}{evidence}"

    def __str__(self) -> str:
        return f"{self.status.value.upper()} {self.summary}"


# --------------------------------------------------------------------------- limits


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


@dataclass(frozen=True)
class ServiceLimits:
    name: str
    burst: Window
    sustained: Window
    hosts: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    certification_factor: int = 10

    @property
    def certification(self) -> int:
        """Calls per sustained window at which a title fails certification."""
        return self.sustained.calls * self.certification_factor


@dataclass(frozen=True)
class RuleSettings:
    """Thresholds of the verdicts other than the budgets (see data/limits.yaml)."""

    retry_after_scope: str = "client"
    backoff_min_gap_ms: float = 1000.0
    backoff_growth: float = 1.0
    backoff_max_retries: int = 5
    backoff_idle_s: float = 120.0
    precondition_window_s: float = 300.0
    conflict_window_s: float = 300.0
    missing_session_max_gets: int = 3
    missing_session_window_s: float = 30.0
    burst_window_ms: float = 2000.0
    burst_min_calls: int = 3
    burst_warmup_calls: int = 20
    repeat_interval_ms: float = 5000.0
    polling_tolerance: float = 0.01
    polling_min_calls: int = 5
    polling_max_interval_s: float = 3600.0
    batch_min_xuids: int = 2
    batch_window_ms: float = 2000.0
    reorder_grace_s: float = 10.0

    def __post_init__(self) -> None:
        if self.retry_after_scope not in SCOPES:
            raise ValueError(
                f"retry_after_scope should be one of {', '.join(SCOPES)}, "
                f"not {self.retry_after_scope!r}")


SCOPES = ("client", "resource")


@dataclass(frozen=True)
class Limits:
    services: tuple[ServiceLimits, ...]
    default_service: str
    rules: RuleSettings = field(default_factory=RuleSettings)
    source: str = "built-in defaults"
    _names: dict[tuple[str, str], str] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def service(self, name: str) -> ServiceLimits:
        for s in self.services:
            if s.name == name:
                return s
        raise LookupError(f"no service {name!r} in {self.source}")

    def by_name(self) -> dict[str, ServiceLimits]:
        return {s.name: s for s in self.services}

    def service_for(self, host: str, kind: str) -> ServiceLimits:
        """The budgets a request to `host` naming a `kind` resource counts against."""
        host = host.lower()
        for s in self.services:
            if any(fnmatch.fnmatchcase(host, p.lower()) for p in s.hosts):
                return s
        for s in self.services:
            if kind in s.kinds:
                return s
        return self.service(self.default_service)

    def service_name(self, host: str, kind: str) -> str:
        """`service_for(host, kind).name`, remembered: it is asked once per record."""
        name = self._names.get((host, kind))
        if name is None:
            if len(self._names) > 1024:
                self._names.clear()
            name = self._names[(host, kind)] = self.service_for(host, kind).name
        return name


class LimitsError(ValueError):
    """A limits document that breaks a rule; `key` is the dotted path of the culprit."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


def _number(value: Any, key: str, *, integer: bool, minimum: float = 0.0) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise LimitsError(key, f"should be {kind}, not {value!r}")
    if value < minimum:
        raise LimitsError(key, f"should be at least {minimum:g}, not {value!r}")
    return value


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise LimitsError(key, f"should be a mapping, not {type(value).__name__}")
    return value


def _check_keys(data: Mapping[str, Any], allowed: Iterable[str], key: str) -> None:
    allowed = list(allowed)
    for name in data:
        if name not in allowed:
            where = f"{key}.{name}" if key else str(name)
            raise LimitsError(where, f"unknown key. Valid keys are: {', '.join(allowed)}")


def _window(data: Any, key: str) -> Window:
    data = _mapping(data, key)
    _check_keys(data, ("calls", "seconds"), key)
    if "calls" not in data or "seconds" not in data:
        raise LimitsError(key, "should have both calls and seconds")
    calls = _number(data["calls"], f"{key}.calls", integer=True, minimum=1)
    seconds = _number(data["seconds"], f"{key}.seconds", integer=False, minimum=0.001)
    return Window(calls, float(seconds))


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LimitsError(key, f"should be a list of strings, not {value!r}")
    return tuple(value)


def _service(name: str, data: Any) -> ServiceLimits:
    key = f"services.{name}"
    data = _mapping(data, key)
    _check_keys(data, ("hosts", "kinds", "burst", "sustained", "certification_factor"), key)
    for needed in ("burst", "sustained"):
        if needed not in data:
            raise LimitsError(key, f"should have {needed}")
    kinds = _strings(data.get("kinds"), f"{key}.kinds")
    valid_kinds = [k.value for k in Kind]
    for k in kinds:
        if k not in valid_kinds:
            raise LimitsError(f"{key}.kinds",
                              f"{k!r} is not a resource kind. Valid kinds are: "
                              f"{', '.join(valid_kinds)}")
    factor = _number(data.get("certification_factor", 10), f"{key}.certification_factor",
                     integer=True, minimum=1)
    return ServiceLimits(name, _window(data["burst"], f"{key}.burst"),
                         _window(data["sustained"], f"{key}.sustained"),
                         _strings(data.get("hosts"), f"{key}.hosts"), kinds, factor)


def _rule_settings(data: Any) -> RuleSettings:
    data = _mapping(data, "rules")
    known = {f.name: f for f in fields(RuleSettings)}
    _check_keys(data, known, "rules")
    values: dict[str, Any] = {}
    for name, value in data.items():
        key = f"rules.{name}"
        if name == "retry_after_scope":
            if value not in SCOPES:
                raise LimitsError(key, f"should be one of {', '.join(SCOPES)}, not {value!r}")
            values[name] = value
        elif known[name].type == "int":
            values[name] = _number(value, key, integer=True, minimum=1)
        else:
            values[name] = float(_number(value, key, integer=False))
    return RuleSettings(**values)


def parse_limits(data: Any, source: str = "<limits>") -> Limits:
    """A limits document (parsed YAML) -> Limits. Raises LimitsError (a ValueError)."""
    data = _mapping(data, "")
    _check_keys(data, ("version", "default_service", "services", "rules"), "")
    if data.get("version") != 1:
        raise LimitsError("version", f"should be 1, not {data.get('version')!r}")
    services = _mapping(data.get("services"), "services")
    if not services:
        raise LimitsError("services", "should name at least one service")
    parsed = tuple(_service(str(name), spec) for name, spec in services.items())
    default = data.get("default_service", parsed[0].name)
    names = [s.name for s in parsed]
    if default not in names:
        raise LimitsError("default_service",
                          f"should be one of the services ({', '.join(names)}), not {default!r}")
    rules = _rule_settings(data.get("rules") or {})
    return Limits(parsed, default, rules, source)


def _merge(base: Any, override: Any) -> Any:
    """`override` laid over `base`: mappings merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            merged[k] = _merge(base.get(k), v) if k in base else v
        return merged
    return override


def _default_text() -> str:
    return importlib_resources.files("mpsdproxy").joinpath("data/limits.yaml").read_text(
        encoding="utf-8")


_DEFAULT_DATA: dict[str, Any] | None = None


def _default_data() -> dict[str, Any]:
    global _DEFAULT_DATA
    if _DEFAULT_DATA is None:
        _DEFAULT_DATA = yaml.safe_load(_default_text())
    return copy.deepcopy(_DEFAULT_DATA)


def default_limits() -> Limits:
    """The shipped budgets and thresholds (mpsdproxy/data/limits.yaml)."""
    return parse_limits(_default_data(), "mpsdproxy/data/limits.yaml")


def _line_of(text: str, key: str) -> int | None:
    """The 1-based line of a dotted key in a YAML text, for error messages."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in key.split(".") if key else ():
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if getattr(k, "value", None) == part:
                line, node = k.start_mark.line + 1, v
                break
        else:
            break
    return line


def load_limits(path: str | None = None) -> Limits:
    """The limits in a YAML file merged over the defaults (the defaults alone for None).

    Raises ValueError naming the file, the line and the key.
    """
    if not path:
        return default_limits()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read limits: {e.strerror or e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise ValueError(f"{where}: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a limits file should be a mapping, not {type(data).__name__}")
    if "version" not in data:
        raise ValueError(f"{path}: missing 'version: 1' at the top")
    try:
        return parse_limits(_merge(_default_data(), data), path)
    except LimitsError as e:
        line = _line_of(text, e.key)
        where = f"{path}:{line}" if line else path
        raise ValueError(f"{where}: {e}") from None


# --------------------------------------------------------------------------- exchanges


class Exchange(NamedTuple):
    """What the rules need from one record, read once (built by `to_exchange`).

    The rules that look at every exchange read its fields. What only the
    fault-handling rules (woken by few exchanges), the verdicts and the report
    ask for is a property: the resource (`route`), the preconditions sent
    (`request_headers`), and the end time, Retry-After and ETag returned, which
    are read from the record each time they are asked for.

    A named tuple, built without running any Python code: one is built for every
    exchange, and the live log's cost is mostly how much code an exchange runs.
    """

    seq: int
    start: float
    client: str
    host: str
    method: str
    target: str  # lower-cased path and query: what "the same URI" means
    route: tuple[Resource, str | None, str, str]  # `_describe`: see the properties
    status: int | None
    body_hash: int
    xuids: int | None  # users in a batch call, None when not a batch call
    social: bool  # sent by SocialManager (the Trace Analyzer skips those for repeats)
    service: str
    # Keys several rules share, built once per exchange.
    per_host: tuple[str, str]  # (client, host)
    call: tuple[Any, ...]  # (client, host, method, target, body hash)
    # What the properties read: the wanted request headers, and the record's own values.
    request_headers: Mapping[str, str] = MappingProxyType({})
    record_end: Any = None
    record_duration: Any = None
    response_headers: Any = None

    @property
    def resource(self) -> Resource:
        return self.route[0]

    @property
    def session(self) -> str | None:
        """The session's key (Resource.key) for sessions and their elements."""
        return self.route[1]

    @property
    def place(self) -> str:
        """The resource's identity: the session key, else kind and path."""
        return self.route[2]

    @property
    def where(self) -> str:
        """The resource for people: sessions/lobby-1, handles/query, ..."""
        return self.route[3]

    @property
    def if_match(self) -> str | None:
        return self.request_headers.get("if-match")

    @property
    def if_none_match(self) -> str | None:
        return self.request_headers.get("if-none-match")

    @property
    def end(self) -> float:
        """The record's end time; its start plus its duration when that is unreadable or
        earlier than the start."""
        end = _time(self.record_end)
        if end is None or end < self.start:
            duration = self.record_duration
            end = self.start + (duration / 1000 if isinstance(duration, _NUMBERS) else 0.0)
        return end

    @property
    def retry_after(self) -> int | None:
        return _retry_after(_headers(self.response_headers, RESPONSE_HEADERS).get("retry-after"))

    @property
    def etag(self) -> str | None:
        return _headers(self.response_headers, RESPONSE_HEADERS).get("etag")

    @property
    def request(self) -> tuple[str, str, str]:
        """(client, method, target): the key of the rules about one request's retries."""
        return (self.client, self.method, self.target)

    @property
    def label(self) -> str:
        return f"{self.method} {self.where}"


REQUEST_HEADERS = frozenset({"authorization", "if-match", "if-none-match", "user-agent"})
RESPONSE_HEADERS = frozenset({"retry-after", "etag"})
#: For each set of wanted names: header name as recorded -> its lower-cased form when
#: wanted, else "" (bounded: cleared when it grows past 256 names).
_WANTED_NAMES: dict[frozenset[str], dict[str, str]] = {}
#: Built once: `isinstance(x, list | tuple)` would build the union on every call.
_SEQUENCES = (list, tuple)
_NUMBERS = (int, float)


def _headers(pairs: Any, wanted: frozenset[str]) -> dict[str, str]:
    """The `wanted` headers of [name, value] pairs, names lower-cased (the first value wins)."""
    out: dict[str, str] = {}
    if not isinstance(pairs, list):
        return out
    # Records repeat the same few header names: each name's lower-cased form, or ""
    # when it is not wanted, is looked up rather than worked out again. The loop
    # trusts every pair to be two items; anything else goes to the careful loop.
    names = _WANTED_NAMES.get(wanted)
    if names is None:
        names = _WANTED_NAMES[wanted] = {}
    try:
        for pair in pairs:
            name, value = pair
            wanted_name = names.get(name)
            if wanted_name is None:
                wanted_name = _learn_name(names, name, wanted)
            if wanted_name and wanted_name not in out and (
                    type(pair) is list or isinstance(pair, _SEQUENCES)):
                out[wanted_name] = value if type(value) is str else str(value)
    except (TypeError, ValueError):  # not a pair of two (or an unhashable name)
        return _headers_careful(pairs, wanted)
    return out


def _learn_name(names: dict[Any, str], name: Any, wanted: frozenset[str]) -> str:
    lowered = str(name).lower()
    wanted_name = lowered if lowered in wanted else ""
    if type(name) is str:
        if len(names) >= 256:
            names.clear()
        names[name] = wanted_name
    return wanted_name


def _headers_careful(pairs: list[Any], wanted: frozenset[str]) -> dict[str, str]:
    """`_headers` of a list that holds something other than pairs of two: those are skipped."""
    out: dict[str, str] = {}
    for pair in pairs:
        if isinstance(pair, _SEQUENCES) and len(pair) == 2:
            name = str(pair[0]).lower()
            if name in wanted and name not in out:
                out[name] = str(pair[1])
    return out


_fromisoformat = datetime.datetime.fromisoformat


def _time(value: Any) -> float | None:
    """A record's ISO 8601 UTC time -> epoch seconds (None when unreadable).

    `fromisoformat` reads the records' own format (`recording.timestamp`) many
    times faster than `recording.parse_timestamp`; anything it refuses still
    goes through the latter.
    """
    if type(value) is not str and not isinstance(value, str):
        return None
    try:
        moment = _fromisoformat(value)
    except ValueError:
        try:
            return recording.parse_timestamp(value)
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _client_key(headers: dict[str, str], client: Any) -> str:
    auth = headers.get("authorization")
    if auth:
        return auth
    if isinstance(client, _SEQUENCES) and client:
        return str(client[0])
    if not isinstance(client, str) or not client:
        return "unknown client"
    if client.startswith("["):
        return client[1:].split("]", 1)[0]
    if client.count(":") == 1:
        return client.split(":", 1)[0]
    return client


def _retry_after(value: str | None) -> int | None:
    """Whole seconds only, as the client library parses it (protocol notes §5.3)."""
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _xuid_count(kind: Kind, method: str, body: Any) -> int | None:
    if kind not in BATCH_KINDS or method != "POST" or not isinstance(body, dict):
        return None
    document = body.get("json")
    if not isinstance(document, dict):
        return None
    if kind is Kind.BATCH:
        xuids = document.get("xuids")
    else:
        owners = document.get("owners")
        xuids = owners.get("xuids") if isinstance(owners, dict) else None
    return len(xuids) if isinstance(xuids, list) else None


def _body_hash(body: Any) -> int:
    """A hash that tells request bodies apart within one run.

    A recorded JSON body keeps the order of the bytes on the wire, so equal
    bytes give equal reprs; nothing is compared across runs.
    """
    if not body:
        return 0
    return hash(repr(body))


@functools.lru_cache(maxsize=4096)
def _target(url: str) -> tuple[str, str]:
    """(host, lower-cased path?query) of a URL or a bare path."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "", url.lower()
    host = (parts.hostname or "").lower()
    path = parts.path or "/"
    return host, (f"{path}?{parts.query}" if parts.query else path).lower()


def _describe(resource: Resource, target: str) -> tuple[Resource, str | None, str, str]:
    """(resource, session key, identity, label for people) of a resource."""
    session = resource.key
    if resource.kind is Kind.UNKNOWN:
        path = target.split("?", 1)[0]
        return resource, session, path, path
    where = resource.short
    return resource, session, session or f"{resource.kind.value}:{where}".lower(), where


@functools.lru_cache(maxsize=4096)
def _resource_info(kind: Any, scid: Any, template: Any, name: Any, element: Any,
                   target: str) -> tuple[Resource, str | None, str, str]:
    """`_describe` of a recorded resource, remembered: records repeat resources."""
    data = {"kind": kind, "scid": scid, "template": template, "name": name, "element": element}
    return _describe(Resource.from_dict(data), target)


def to_exchange(record: Mapping[str, Any], limits: Limits, previous: float = 0.0,
                seq: int | None = None) -> Exchange:
    """The parts of a recording record the rules use.

    `previous` is the time to assume when a record has no readable start (the
    time of the record before it), so a damaged record never stops the engine.
    `seq`, when given, numbers the exchange instead of the record's own "seq"
    (the live log numbers a flow's record without copying it).
    """
    get = record.get
    request = get("request")
    if type(request) is not dict and not isinstance(request, Mapping):
        request = {}
    response = get("response") or None
    req_headers = _headers(request.get("headers"), REQUEST_HEADERS)
    if isinstance(response, dict):
        resp_headers = response.get("headers")
        status = response.get("status")
        if type(status) is not int and not isinstance(status, int):
            status = None
    else:
        resp_headers = status = None
    end = get("end")
    start = get("start")
    try:  # `_time(start)`, inline for a time written by `recording.timestamp`
        moment = _fromisoformat(start)
        if moment.tzinfo is None:
            raise ValueError("naive")  # `_time` reads it as UTC
    except (TypeError, ValueError):
        start = _time(start)
    else:
        start = moment.timestamp()
    if start is None:
        start = _time(end)
        if start is None:
            start = previous
    method = request.get("method")
    method = method.upper() if type(method) is str else str(method or "").upper()
    url = request.get("url")
    url = url if type(url) is str else str(url or "")
    host, target = _target(url)
    raw = get("resource")
    if type(raw) is dict or isinstance(raw, dict):
        rget = raw.get
        route = _resource_info(
            rget("kind"), rget("scid"), rget("template"), rget("name"), rget("element"), target)
    else:
        route = _describe(resources.parse(url), target)
    body = request.get("body")
    kind = route[0].kind
    agent = req_headers.get("user-agent")
    client = req_headers.get("authorization") or _client_key(req_headers, get("client"))
    body_hash = _body_hash(body) if body else 0
    kind_name = kind._value_  # what `kind.value` gives, without its Python-level property
    service = limits._names.get((host, kind_name)) or limits.service_name(host, kind_name)
    return _new_exchange(Exchange, (
        int(get("seq") or 0) if seq is None else seq,
        start,
        client,
        host,
        method,
        target,
        route,
        status,
        body_hash,
        _xuid_count(kind, method, body) if kind in BATCH_KINDS else None,
        agent is not None and "socialmanager" in agent.lower(),
        service,
        (client, host),
        (client, host, method, target, body_hash),
        req_headers,
        end,
        get("duration_ms"),
        resp_headers,
    ))


#: `Exchange(*fields)` in C: a named tuple's own constructor is Python code.
_new_exchange = tuple.__new__


# --------------------------------------------------------------------------- bounded state

K = TypeVar("K")
V = TypeVar("V")


class _Keyed(Generic[K, V]):
    """Per-key state, each key with a deadline; at most `limit` keys.

    `due(now)` hands back (and forgets) the keys whose deadline passed; `put`
    hands back the least recently put keys beyond the limit. A heap orders the
    deadlines. Most puts only push a key's deadline later, so the heap is left
    alone then and an entry found early is simply rescheduled when it comes up:
    a busy key costs a dict update, not a heap push.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # key -> [deadline, the deadline its heap entry carries, value]. The rules that
        # look at every exchange read it directly (`entries`, the same object for the
        # life of the _Keyed) and renew a key they found as `put`'s first branch does.
        self._items: OrderedDict[K, list[Any]] = OrderedDict()
        self.entries = self._items
        self._heap: list[tuple[float, int, K]] = []
        self._tick = itertools.count()
        #: A set this _Keyed is in while it holds any key (see Engine: `_busy`).
        self.watch: set[_Keyed[Any, Any]] | None = None

    def _watched(self) -> None:
        """Keep `watch` up to date after keys were added or removed."""
        if self.watch is not None:
            if self._items:
                self.watch.add(self)
            else:
                self.watch.discard(self)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        return None if item is None else item[2]

    def put(self, key: K, value: V, deadline: float) -> list[tuple[K, V]]:
        item = self._items.get(key)
        if item is not None and item[1] <= deadline:
            item[0], item[2] = deadline, value
            self._items.move_to_end(key)
            return []
        self._items[key] = [deadline, deadline, value]
        self._items.move_to_end(key)
        heapq.heappush(self._heap, (deadline, next(self._tick), key))
        if len(self._heap) > 2 * len(self._items) + 64:
            self._heap = [(d, next(self._tick), k) for k, (d, _, _) in self._items.items()]
            heapq.heapify(self._heap)
            for item in self._items.values():
                item[1] = item[0]
        evicted: list[tuple[K, V]] = []
        while len(self._items) > self.limit:
            k, item = self._items.popitem(last=False)
            evicted.append((k, item[2]))
        if self.watch is not None:
            self._watched()
        return evicted

    def pop(self, key: K) -> V | None:
        item = self._items.pop(key, None)
        if item is None:
            return None
        if self.watch is not None:
            self._watched()
        return item[2]

    def due(self, now: float) -> list[tuple[K, V]]:
        out: list[tuple[K, V]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            scheduled, _, key = heapq.heappop(heap)
            item = self._items.get(key)
            if item is None or item[1] != scheduled:
                continue  # forgotten, or a newer entry stands for it
            if item[0] > now:
                item[1] = item[0]  # pushed later since: reschedule
                heapq.heappush(heap, (item[0], next(self._tick), key))
                continue
            del self._items[key]
            out.append((key, item[2]))
        if out and self.watch is not None:
            self._watched()
        return out

    def drain(self) -> list[tuple[K, V]]:
        out = [(k, item[2]) for k, item in self._items.items()]
        self._items.clear()
        self._heap.clear()
        if self.watch is not None:
            self._watched()
        return out


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _clip(seqs: Iterable[int]) -> tuple[int, ...]:
    seqs = tuple(seqs)
    if len(seqs) <= MAX_EVIDENCE:
        return seqs
    half = MAX_EVIDENCE // 2
    return seqs[:half] + seqs[-half:]


def _gaps(times: list[float]) -> tuple[float, ...]:
    return tuple(_ms(b - a) for a, b in zip(times, times[1:], strict=False))


# --------------------------------------------------------------------------- rules

#: What a rule decided from one exchange. Most exchanges decide nothing, and
#: then the shared empty tuple is returned rather than a new list.
Decided = Sequence[Verdict]
NOTHING: tuple[Verdict, ...] = ()


class _Rule:
    """Base of the rules: per-occurrence verdicts plus a summary when nothing was decided."""

    id = ""
    #: Said when the recording held nothing this rule judges.
    nothing = ""
    #: None for a rule that looks at every exchange. Otherwise the rule only acts on
    #: an exchange answered with one of these statuses, a batch call (`wakes_on_batch`),
    #: or any exchange while it holds state (`held`): for any other exchange its
    #: `feed` decides nothing and changes nothing, so the engine leaves it out.
    wakes_on: frozenset[int] | None = None
    wakes_on_batch = False

    def __init__(self, settings: RuleSettings, limits: Limits, max_keys: int) -> None:
        self.settings = settings
        self.limits = limits
        self.max_keys = max_keys
        self.seen = 0  # occurrences (or relevant calls) this rule looked at

    def held(self) -> tuple[_Keyed[Any, Any], ...]:
        """The state whose holding any key makes the rule look at every exchange."""
        return ()

    def feed(self, ex: Exchange) -> Decided:
        raise NotImplementedError

    def expire(self, now: float) -> Decided:
        return NOTHING

    def finish(self) -> Decided:
        return NOTHING

    def summary(self) -> str:
        """Why the rule passes when it saw traffic and flagged nothing."""
        return f"nothing flagged in {self.seen} relevant calls"

    def verdict(self, status: Status, reason: str, records: Iterable[int] = (),
                gaps: Iterable[float] = (), client: str | None = None,
                resource: str | None = None, time: float | None = None) -> Verdict:
        return Verdict(self.id, status, reason, _clip(records), tuple(gaps), client, resource,
                       time)


DROPPED = "its state was dropped to bound memory"


# ---- fault handling: pass or fail


@dataclass(slots=True)
class _Wait:
    seqs: tuple[int, ...]
    status: int
    seconds: int
    received: float
    deadline: float
    host: str
    where: str


class RetryAfterRule(_Rule):
    """After a 503/429 with Retry-After N, nothing from that client to that host for N s.

    A request the client sent before it received the answer (one already in
    flight) is no violation; a request sent after it and before the deadline is.
    With `retry_after_scope: resource` only the same resource counts.
    """

    id = "retry-after"
    nothing = "no 503 or 429 carried a Retry-After"
    wakes_on = RETRY_STATUSES

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.waits: _Keyed[tuple[str, ...], _Wait] = _Keyed(self.max_keys)
        self.by_resource = self.settings.retry_after_scope == "resource"

    def held(self) -> tuple[_Keyed[Any, Any], ...]:
        return (self.waits,)

    def feed(self, ex: Exchange) -> Decided:
        retry_after = ex.retry_after if ex.status in RETRY_STATUSES else None
        triggered = retry_after is not None
        if not triggered and not self.waits.entries:
            return NOTHING  # nothing to wait for, and nothing asks for a wait
        key = (*ex.per_host, ex.place) if self.by_resource else ex.per_host
        wait = self.waits.get(key)
        out: list[Verdict] | tuple[Verdict, ...] = NOTHING
        if wait is not None and ex.start >= wait.received and ex.seq not in wait.seqs:
            self.waits.pop(key)
            out = [self._judge(key[0], wait, ex)]
            wait = None
        if triggered:
            self.seen += 1
            seqs = (*(wait.seqs if wait else ()), ex.seq)[-MAX_EVIDENCE:]
            end = ex.end
            deadline = end + retry_after
            if wait is not None and wait.deadline > deadline:
                deadline = wait.deadline  # two answers in flight: the later deadline holds
            new = _Wait(seqs, ex.status, retry_after, end, deadline, ex.host, ex.where)
            evicted = self.waits.put(key, new, deadline)
            if evicted:
                out = [*out, *(self._quiet(k[0], w, DROPPED) for k, w in evicted)]
        return out

    def _judge(self, client: str, wait: _Wait, ex: Exchange) -> Verdict:
        gap = _ms(ex.start - wait.received)
        asked = f"the {wait.status} with Retry-After {wait.seconds} s (record {wait.seqs[-1]})"
        evidence = ((*wait.seqs, ex.seq), (gap,), client, wait.where, ex.start)
        if ex.start < wait.deadline:
            early = _ms(wait.deadline - ex.start)
            return self.verdict(
                Status.FAIL,
                f"{ex.label} (record {ex.seq}) was sent {gap:.0f} ms after {asked}, "
                f"{early:.0f} ms too early", *evidence)
        return self.verdict(
            Status.PASS,
            f"waited {gap:.0f} ms after {asked} before {ex.label} (record {ex.seq})", *evidence)

    def _quiet(self, client: str, wait: _Wait, why: str) -> Verdict:
        where = "that resource" if self.by_resource else (wait.host or "the service")
        return self.verdict(
            Status.PASS,
            f"sent nothing to {where} after the {wait.status} with Retry-After "
            f"{wait.seconds} s (record {wait.seqs[-1]}): {why}",
            wait.seqs, (), client, wait.where, wait.deadline)

    def expire(self, now: float) -> Decided:
        return [self._quiet(k[0], w, f"quiet for the whole {w.seconds} s")
                for k, w in self.waits.due(now)]

    def finish(self) -> Decided:
        return [self._quiet(k[0], w, "the recording ended first") for k, w in self.waits.drain()]

    def summary(self) -> str:
        return f"every one of {self.seen} Retry-After waits was honoured"


@dataclass(slots=True)
class _Chain:
    seqs: list[int]
    gaps: list[float]
    last_end: float
    status: int
    where: str
    retries: int = 0
    prev_gap: float | None = None
    failed: bool = False


class BackoffRule(_Rule):
    """Retries (same client, method and URI) after a 503/429 without Retry-After.

    Each wait must be at least `backoff_min_gap_ms`, at least `backoff_growth`
    times the wait before it, and there may be at most `backoff_max_retries`.
    A chain ends with an answer that is not a 503/429 without Retry-After, or
    after `backoff_idle_s` without a retry.
    """

    id = "backoff"
    nothing = "no 503 or 429 came without a Retry-After"
    wakes_on = RETRY_STATUSES

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.chains: _Keyed[tuple[str, str, str], _Chain] = _Keyed(self.max_keys)

    def held(self) -> tuple[_Keyed[Any, Any], ...]:
        return (self.chains,)

    def feed(self, ex: Exchange) -> Decided:
        chain = self.chains.get(ex.request) if self.chains.entries else None
        if chain is not None and ex.start >= chain.last_end and ex.seq not in chain.seqs:
            return self._retry(ex.request, chain, ex)
        if ex.status in RETRY_STATUSES and ex.retry_after is None:
            self.seen += 1
            return self._put(ex.request, _Chain([ex.seq], [], ex.end, ex.status, ex.where))
        return NOTHING

    def _put(self, key: tuple[str, str, str], chain: _Chain) -> Decided:
        evicted = self.chains.put(key, chain, chain.last_end + self.settings.backoff_idle_s)
        return [v for k, c in evicted if (v := self._end(k, c, DROPPED, None))]

    def _problem(self, chain: _Chain, gap: float) -> str | None:
        s = self.settings
        n = chain.retries
        if gap < s.backoff_min_gap_ms:
            return (f"retry {n} came {gap:.0f} ms after the {chain.status} "
                    f"(a tight retry: at least {s.backoff_min_gap_ms:.0f} ms expected)")
        if chain.prev_gap is not None and gap < chain.prev_gap * s.backoff_growth:
            return (f"the wait before retry {n} shrank from {chain.prev_gap:.0f} ms to "
                    f"{gap:.0f} ms (backoff should grow)")
        if n > s.backoff_max_retries:
            return f"{n} retries of one request (at most {s.backoff_max_retries} expected)"
        return None

    def _retry(self, key: tuple[str, str, str], chain: _Chain, ex: Exchange) -> Decided:
        out: list[Verdict] = []
        gap = _ms(ex.start - chain.last_end)
        chain.retries += 1
        if len(chain.seqs) < 4 * MAX_EVIDENCE:
            chain.seqs.append(ex.seq)
            chain.gaps.append(gap)
        problem = self._problem(chain, gap)
        chain.prev_gap = gap
        if problem and not chain.failed:
            chain.failed = True
            out.append(self.verdict(Status.FAIL, f"{ex.label}: {problem}", chain.seqs,
                                    chain.gaps, key[0], ex.where, ex.start))
        if ex.status in RETRY_STATUSES and ex.retry_after is None:
            chain.last_end = ex.end
            chain.status = ex.status
            out.extend(self._put(key, chain))
            return out
        self.chains.pop(key)
        ended = f"then got {ex.status}" if ex.status is not None else "then got no response"
        result = self._end(key, chain, ended, ex.start)
        if result is not None:
            out.append(result)
        return out

    def _end(self, key: tuple[str, str, str], chain: _Chain, how: str,
             when: float | None) -> Verdict | None:
        if chain.failed:
            return None
        if chain.retries == 0:
            reason = f"did not retry the request answered {chain.status} (record {chain.seqs[0]})"
        else:
            waits = ", ".join(f"{g:.0f}" for g in chain.gaps)
            reason = (f"{chain.retries} retries after the {chain.status} (record "
                      f"{chain.seqs[0]}), waits {waits} ms, {how}")
        if when is None:
            when = chain.last_end + self.settings.backoff_idle_s
        return self.verdict(Status.PASS, reason, chain.seqs, chain.gaps, key[0], chain.where,
                            when)

    def expire(self, now: float) -> Decided:
        quiet = f"then quiet for {self.settings.backoff_idle_s:.0f} s"
        return [v for k, c in self.chains.due(now) if (v := self._end(k, c, quiet, None))]

    def finish(self) -> Decided:
        ended = "then the recording ended"
        return [v for k, c in self.chains.drain() if (v := self._end(k, c, ended, None))]

    def summary(self) -> str:
        return f"all {self.seen} failures without Retry-After were retried with backoff"


@dataclass(slots=True)
class _Stale:
    seq: int
    received: float
    if_match: str | None
    if_none_match: str | None
    returned: str | None  # the ETag the 412 returned
    where: str
    reread: int | None = None  # seq of a GET of the session after the 412


class PreconditionRule(_Rule):
    """After a 412 on a session, the client's next write to that session.

    It passes when it uses the ETag the 412 returned, or follows a fresh GET
    of the session; it fails when it resends the stale ETag (or the
    If-None-Match that failed) or writes blind without re-reading.
    """

    id = "412-handled"
    nothing = "no write to a session was answered 412"
    wakes_on = frozenset({PRECONDITION_FAILED})

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pending: _Keyed[tuple[str, str], _Stale] = _Keyed(self.max_keys)

    def held(self) -> tuple[_Keyed[Any, Any], ...]:
        return (self.pending,)

    def feed(self, ex: Exchange) -> Decided:
        if ex.session is None:
            return NOTHING
        if ex.status != PRECONDITION_FAILED and not self.pending.entries:
            return NOTHING
        out: list[Verdict] | tuple[Verdict, ...] = NOTHING
        key = (ex.client, ex.session)
        stale = self.pending.get(key)
        if stale is not None and ex.start >= stale.received and ex.seq != stale.seq:
            if ex.method == "GET" and ex.status is not None and ex.status < 400:
                stale.reread = ex.seq
            elif ex.method in WRITE_METHODS:
                self.pending.pop(key)
                out = [self._judge(key[0], stale, ex)]
        if ex.status == PRECONDITION_FAILED:
            self.seen += 1
            end = ex.end
            new = _Stale(ex.seq, end, ex.if_match, ex.if_none_match, ex.etag, ex.where)
            evicted = self.pending.put(key, new, end + self.settings.precondition_window_s)
            out = [*out, *(self._unjudged(k[0], s, DROPPED) for k, s in evicted)]
        return out

    def _judge(self, client: str, stale: _Stale, ex: Exchange) -> Verdict:
        gap = (_ms(ex.start - stale.received),)
        seqs = (stale.seq, *((stale.reread,) if stale.reread else ()), ex.seq)
        after = f"after the 412 (record {stale.seq})"

        def judged(status: Status, reason: str) -> Verdict:
            return self.verdict(status, f"{ex.label} (record {ex.seq}) {reason}", seqs, gap,
                                client, stale.where, ex.start)

        resent = (stale.if_match and ex.if_match == stale.if_match
                  and stale.if_match != stale.returned)
        if resent and stale.if_match != "*":
            return judged(Status.FAIL, f"resent the stale ETag {stale.if_match} {after}")
        if resent and not stale.reread:
            return judged(Status.FAIL, f"resent If-Match: * {after} without re-reading the "
                                       "session")
        if stale.if_none_match and ex.if_none_match == stale.if_none_match and not stale.reread:
            return judged(Status.FAIL, f"resent If-None-Match: {stale.if_none_match} {after} "
                                       "without re-reading the session")
        if stale.returned and ex.if_match == stale.returned:
            return judged(Status.PASS, f"used the ETag the 412 returned ({stale.returned})")
        if stale.reread:
            return judged(Status.PASS, f"followed a fresh GET (record {stale.reread}) {after}")
        if stale.returned is None:
            return judged(Status.PASS, f"did not resend the failed precondition {after}")
        sent = f"If-Match {ex.if_match}" if ex.if_match else "no If-Match"
        return judged(Status.FAIL, f"wrote with {sent} {after} instead of the ETag it returned "
                                   f"({stale.returned}), without re-reading the session")

    def _unjudged(self, client: str, stale: _Stale, why: str) -> Verdict:
        return self.verdict(Status.NOT_APPLICABLE,
                            f"no later write to the session after the 412 (record {stale.seq}): "
                            f"{why}", (stale.seq,), (), client, stale.where, stale.received)

    def expire(self, now: float) -> Decided:
        window = f"none within {self.settings.precondition_window_s:.0f} s"
        return [self._unjudged(k[0], s, window) for k, s in self.pending.due(now)]

    def finish(self) -> Decided:
        return [self._unjudged(k[0], s, "the recording ended first")
                for k, s in self.pending.drain()]

    def summary(self) -> str:
        return f"all {self.seen} 412s were followed by a correct write"


@dataclass(slots=True)
class _Conflict:
    seq: int
    received: float
    body_hash: int
    where: str


class ConflictRule(_Rule):
    """After a 409, the next request with the same method and URI must differ in its body."""

    id = "409-not-retried"
    nothing = "no request was answered 409"
    wakes_on = frozenset({CONFLICT})

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pending: _Keyed[tuple[str, str, str], _Conflict] = _Keyed(self.max_keys)

    def held(self) -> tuple[_Keyed[Any, Any], ...]:
        return (self.pending,)

    def feed(self, ex: Exchange) -> Decided:
        if ex.status != CONFLICT and not self.pending.entries:
            return NOTHING
        out: list[Verdict] | tuple[Verdict, ...] = NOTHING
        key = ex.request
        conflict = self.pending.get(key)
        if conflict is not None and ex.start >= conflict.received and ex.seq != conflict.seq:
            self.pending.pop(key)
            gap = _ms(ex.start - conflict.received)
            evidence = ((conflict.seq, ex.seq), (gap,), key[0], conflict.where, ex.start)
            if ex.body_hash == conflict.body_hash:
                out = [self.verdict(
                    Status.FAIL,
                    f"{ex.label} (record {ex.seq}) re-sent the request answered 409 (record "
                    f"{conflict.seq}) unchanged, {gap:.0f} ms later", *evidence)]
            else:
                out = [self.verdict(
                    Status.PASS,
                    f"{ex.label} (record {ex.seq}) changed the body after the 409 (record "
                    f"{conflict.seq})", *evidence)]
        if ex.status == CONFLICT:
            self.seen += 1
            end = ex.end
            new = _Conflict(ex.seq, end, ex.body_hash, ex.where)
            evicted = self.pending.put(key, new, end + self.settings.conflict_window_s)
            out = [*out, *(self._quiet(k, c, DROPPED) for k, c in evicted)]
        return out

    def _quiet(self, key: tuple[str, str, str], c: _Conflict, why: str) -> Verdict:
        return self.verdict(Status.PASS,
                            f"did not send {key[1]} {c.where} again after the 409 (record "
                            f"{c.seq}): {why}", (c.seq,), (), key[0], c.where, c.received)

    def expire(self, now: float) -> Decided:
        window = f"quiet for {self.settings.conflict_window_s:.0f} s"
        return [self._quiet(k, c, window) for k, c in self.pending.due(now)]

    def finish(self) -> Decided:
        return [self._quiet(k, c, "the recording ended") for k, c in self.pending.drain()]

    def summary(self) -> str:
        return f"none of {self.seen} requests answered 409 was re-sent unchanged"


@dataclass(slots=True)
class _Polls:
    recent: deque[tuple[float, int]]
    first: int
    where: str
    count: int = 0
    flagged: bool = False


class MissingSessionRule(_Rule):
    """GETs of one session answered as the MISSING_SESSION row says, per client.

    More than `missing_session_max_gets` of them within
    `missing_session_window_s` fails, once per episode; an episode that
    repeated but stayed under the rate passes when it ends (the session was
    found, or the client stopped asking).
    """

    id = "missing-session-polling"
    nothing = f"no GET of a session was answered {MISSING_SESSION.id}"
    wakes_on = frozenset({MISSING_SESSION.status})

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.polls: _Keyed[tuple[str, str], _Polls] = _Keyed(self.max_keys)

    def held(self) -> tuple[_Keyed[Any, Any], ...]:
        return (self.polls,)

    def feed(self, ex: Exchange) -> Decided:
        # The row's own situation: a GET (its methods) of a session (its target).
        if (ex.session is None or ex.resource.kind is not Kind.SESSION
                or ex.method not in MISSING_SESSION.methods):
            return NOTHING
        missing = ex.status == MISSING_SESSION.status
        if not missing and not self.polls.entries:
            return NOTHING
        key = (ex.client, ex.session)
        polls = self.polls.get(key)
        if not missing:
            if polls is None:
                return NOTHING
            self.polls.pop(key)
            return [v for v in (self._episode(key, polls, "then the session was found"),) if v]
        self.seen += 1
        s = self.settings
        if polls is None:
            polls = _Polls(deque(maxlen=s.missing_session_max_gets + 1), ex.seq, ex.where)
        polls.recent.append((ex.start, ex.seq))
        polls.count += 1
        out: list[Verdict] = []
        span = polls.recent[-1][0] - polls.recent[0][0]
        if (len(polls.recent) > s.missing_session_max_gets
                and span <= s.missing_session_window_s and not polls.flagged):
            polls.flagged = True
            out.append(self.verdict(
                Status.FAIL,
                f"{len(polls.recent)} GETs of {ex.where} answered {MISSING_SESSION.id} "
                f"within {_ms(span):.0f} ms (at most {s.missing_session_max_gets} per "
                f"{s.missing_session_window_s:.0f} s)",
                [q for _, q in polls.recent], _gaps([t for t, _ in polls.recent]), key[0],
                ex.where, ex.start))
        for k, p in self.polls.put(key, polls, ex.start + s.missing_session_window_s):
            v = self._episode(k, p, DROPPED)
            if v:
                out.append(v)
        return out

    def _episode(self, key: tuple[str, str], polls: _Polls, how: str) -> Verdict | None:
        """A pass for a polling episode that repeated but stayed under the rate."""
        if polls.flagged or polls.count < 2:
            return None
        s = self.settings
        last_time, last_seq = polls.recent[-1]
        return self.verdict(
            Status.PASS,
            f"{polls.count} GETs of {polls.where} answered {MISSING_SESSION.id}, never more than "
            f"{s.missing_session_max_gets} in {s.missing_session_window_s:.0f} s; {how}",
            (polls.first, last_seq), (), key[0], polls.where, last_time)

    def expire(self, now: float) -> Decided:
        how = "then it stopped asking"
        return [v for k, p in self.polls.due(now) if (v := self._episode(k, p, how))]

    def finish(self) -> Decided:
        how = "then the recording ended"
        return [v for k, p in self.polls.drain() if (v := self._episode(k, p, how))]

    def summary(self) -> str:
        s = self.settings
        return (f"{self.seen} GETs answered {MISSING_SESSION.id}, never more than "
                f"{s.missing_session_max_gets} per {s.missing_session_window_s:.0f} s")


# ---- call patterns: warn, fail only at the certification line


#: The budget checks, as bits of `_Budget.flags`; reported in this order.
_CERTIFICATION, _SUSTAINED, _BURST = 1, 2, 4


@dataclass(slots=True)
class _Budget:
    burst: deque[tuple[float, int]]
    sustained: deque[tuple[float, int]]
    flags: int = 0  # the checks reported that are still over their limit


def _slide(window: deque[tuple[float, int]], point: tuple[float, int], horizon: float) -> int:
    """Add a call to a time window and drop the calls at or before `horizon`: the calls
    left in it."""
    window.append(point)
    while window[0][0] <= horizon:
        window.popleft()
    return len(window)


class RateBudgetRule(_Rule):
    """Sliding-window request counts per user and service against the FGRL budgets.

    Over the burst or the sustained limit warns (the service would throttle
    from there); reaching the certification line fails. Each is reported once
    until the count falls back under its limit. A window keeps at most as many
    entries as its limit needs to be seen broken.
    """

    id = "rate-budget"
    nothing = "no requests"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.budgets: _Keyed[tuple[str, str], _Budget] = _Keyed(self.max_keys)
        self._entries = self.budgets.entries
        self.peaks: dict[str, list[int]] = {}  # service -> [peak burst, peak sustained]
        self.services = self.limits.by_name()
        # service -> (burst calls, burst s, sustained calls, sustained s, certification)
        self._numbers = {
            name: (s.burst.calls, s.burst.seconds, s.sustained.calls, s.sustained.seconds,
                   s.certification)
            for name, s in self.services.items()}

    def feed(self, ex: Exchange) -> Decided:
        self.seen += 1
        service = ex.service
        burst_calls, burst_s, sustained_calls, sustained_s, certification = \
            self._numbers[service]
        key = (ex.client, service)
        entries = self._entries
        item = entries.get(key)
        if item is None:
            budget = _Budget(deque(maxlen=burst_calls + 1), deque(maxlen=certification))
        else:
            budget = item[2]
        start = ex.start
        point = (start, ex.seq)  # both windows share the call's entry
        burst = _slide(budget.burst, point, start - burst_s)
        sustained = _slide(budget.sustained, point, start - sustained_s)
        peak = self.peaks.get(service)
        if peak is None:
            peak = self.peaks[service] = [0, 0]
        if burst > peak[0]:
            peak[0] = burst
        if sustained > peak[1]:
            peak[1] = sustained
        out: Decided = NOTHING
        if budget.flags or burst > burst_calls or sustained > sustained_calls:
            over = _CERTIFICATION if sustained >= certification else 0
            if sustained > sustained_calls:
                over |= _SUSTAINED
            if burst > burst_calls:
                over |= _BURST
            new = over & ~budget.flags
            budget.flags = over
            if new:
                out = self._report(new, budget, ex, self.services[service])
        deadline = start + sustained_s
        self.budgets.put(key, budget, deadline)
        return out

    def _report(self, new: int, budget: _Budget, ex: Exchange,
                limits: ServiceLimits) -> list[Verdict]:
        """The verdicts of the checks that just went over (the bits of `new`)."""
        out: list[Verdict] = []
        checks = (
            (_CERTIFICATION, budget.sustained, Status.FAIL, limits.certification,
             limits.sustained.seconds, "the certification line"),
            (_SUSTAINED, budget.sustained, Status.WARN, limits.sustained.calls,
             limits.sustained.seconds, "the sustained limit: the service would throttle"),
            (_BURST, budget.burst, Status.WARN, limits.burst.calls, limits.burst.seconds,
             "the burst limit: the service would throttle"),
        )
        for flag, window, status, limit, seconds, what in checks:
            if not new & flag:
                continue
            first_t, first_seq = window[0]
            span = _ms(ex.start - first_t)
            out.append(self.verdict(
                status,
                f"{len(window)} requests to {ex.service} within {span:.0f} ms (records "
                f"{first_seq}..{ex.seq}), over {what} ({limit} per {seconds:g} s)",
                (first_seq, ex.seq), (span,), ex.client, ex.service, ex.start))
        return out

    def expire(self, now: float) -> Decided:
        self.budgets.due(now)
        return NOTHING

    def finish(self) -> Decided:
        self.budgets.drain()
        return NOTHING

    def summary(self) -> str:
        parts = []
        for name, (burst, sustained) in self.peaks.items():
            s = self.limits.service(name)
            parts.append(f"{name} peak {burst}/{s.burst.calls} per {s.burst.seconds:g} s, "
                         f"{sustained}/{s.sustained.calls} per {s.sustained.seconds:g} s")
        return "every user stayed within budget: " + "; ".join(parts)


@dataclass(slots=True)
class _Rate:
    window: deque[tuple[float, int]]
    last: float | None = None
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    in_burst: bool = False


class BurstRule(_Rule):
    """The Trace Analyzer's BurstDetection, with the title's running call statistics.

    A burst is more calls within `burst_window_ms` than
    ceil(calls per second) + ceil(2 * 1000 / standard deviation of the gap in ms),
    and at least `burst_min_calls`. The analyzer takes the mean and variance of
    the gaps over the whole trace; here they are running values (Welford) of the
    calls so far, used once `burst_warmup_calls` gaps were seen.
    """

    id = "burst"
    nothing = "no requests"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.rates: _Keyed[tuple[str, str], _Rate] = _Keyed(self.max_keys)
        self._entries = self.rates.entries
        self._window_s = self.settings.burst_window_ms / 1000
        self._min_calls = self.settings.burst_min_calls

    def feed(self, ex: Exchange) -> Decided:
        self.seen += 1
        s = self.settings
        key = ex.per_host
        entries = self._entries
        item = entries.get(key)
        rate = _Rate(deque(maxlen=1024)) if item is None else item[2]
        start = ex.start
        window = rate.window  # add the call, drop those older than the window, count
        window.append((start, ex.seq))
        horizon = start - self._window_s
        while window[0][0] <= horizon:
            window.popleft()
        size = len(window)
        out: Decided = NOTHING
        # The threshold (infinite until `burst_warmup_calls` gaps with some spread were
        # seen); it only matters for a window of at least `burst_min_calls`.
        limit = math.inf
        if size >= self._min_calls:
            n = rate.n
            variance = rate.m2 / n if n else 0.0
            if not (n < s.burst_warmup_calls or rate.mean <= 0 or variance <= 0):
                limit = math.ceil(1000 / rate.mean) + math.ceil(2 * 1000 / math.sqrt(variance))
        if size > limit:
            if not rate.in_burst:
                rate.in_burst = True
                first = window[0][0]
                out = [self.verdict(
                    Status.WARN,
                    f"burst of {size} calls to {ex.host or 'the service'} within "
                    f"{s.burst_window_ms:.0f} ms (this title's usual rate allows {limit:.0f})",
                    [q for _, q in window], (_ms(start - first),), ex.client,
                    ex.host, start)]
        else:
            rate.in_burst = False
        last = rate.last
        if last is not None and start >= last:
            gap = (start - last) * 1000
            rate.n += 1
            delta = gap - rate.mean
            rate.mean += delta / rate.n
            rate.m2 += delta * (gap - rate.mean)
        if last is None or start > last:
            rate.last = start
        deadline = start + 3600
        self.rates.put(key, rate, deadline)
        return out

    def expire(self, now: float) -> Decided:
        self.rates.due(now)
        return NOTHING


@dataclass(slots=True)
class _Seen:
    time: float
    seq: int
    reported: bool = False


class RepeatedCallsRule(_Rule):
    """The Trace Analyzer's RepeatedCalls: the same call again within `repeat_interval_ms`.

    "The same call" is the same method, URI and request body, from one client
    to one host; calls sent by SocialManager are skipped, as the analyzer does.
    One warning per run of repeats.
    """

    id = "repeated-calls"
    nothing = "no requests"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.last: _Keyed[tuple[Any, ...], _Seen] = _Keyed(self.max_keys)
        self._entries = self.last.entries
        self._interval_ms = self.settings.repeat_interval_ms
        self._interval_s = self._interval_ms / 1000

    def feed(self, ex: Exchange) -> Decided:
        if ex.social:
            return NOTHING
        self.seen += 1
        interval = self._interval_ms
        key = ex.call
        entries = self._entries
        item = entries.get(key)
        start = ex.start
        out: Decided = NOTHING
        if item is None:
            prev = _Seen(start, ex.seq)
        else:
            prev = item[2]
            raw = (start - prev.time) * 1000
            # Is `_ms(start - prev.time)` (0.1 ms steps) within [0, interval]? Rounding
            # moves it by at most 0.05 ms, so only a gap near either end is rounded to tell.
            if 0 <= raw <= interval - 0.1:
                within = True
            elif raw < -0.1 or raw > interval + 0.1:
                within = False
            else:
                within = 0 <= round(raw, 1) <= interval
            if within:
                if not prev.reported:
                    gap = round(raw, 1)
                    out = [self.verdict(
                        Status.WARN,
                        f"{ex.label} repeated with the same body after {gap:.0f} ms (records "
                        f"{prev.seq}, {ex.seq}; at least {interval:.0f} ms expected)",
                        (prev.seq, ex.seq), (gap,), ex.client, ex.where, start)]
                prev.reported = True
            else:
                prev.reported = False
            prev.time, prev.seq = start, ex.seq
        deadline = start + self._interval_s
        self.last.put(key, prev, deadline)
        return out

    def expire(self, now: float) -> Decided:
        self.last.due(now)
        return NOTHING


@dataclass(slots=True)
class _Run:
    last: float
    seqs: list[int]  # the run's last `polling_min_calls` calls
    times: list[float]
    delta: float | None = None
    reported: bool = False


class PollingRule(_Rule):
    """The Trace Analyzer's PollingDetection, over consecutive identical calls.

    The analyzer links every pair of identical calls; streaming, each call is
    linked to the one before it, and a run goes on while each gap is within
    `polling_tolerance` of the gap before it. A run of `polling_min_calls`
    calls with gaps of at most `polling_max_interval_s` warns, once.
    """

    id = "polling"
    nothing = "no requests"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.runs: _Keyed[tuple[Any, ...], _Run] = _Keyed(self.max_keys)
        self._entries = self.runs.entries
        self._max_interval_s = self.settings.polling_max_interval_s

    def feed(self, ex: Exchange) -> Decided:
        if ex.social:
            return NOTHING
        self.seen += 1
        key = ex.call
        entries = self._entries
        item = entries.get(key)
        run = None if item is None else item[2]
        start = ex.start
        out: Decided = NOTHING
        if run is None:
            run = _Run(start, [ex.seq], [start])
        elif not 0 < start - run.last <= self._max_interval_s:
            # A new run, in the object of the old one (nothing else holds it).
            run.last, run.delta, run.reported = start, None, False
            run.seqs[:] = (ex.seq,)
            run.times[:] = (start,)
        else:
            s = self.settings
            size = s.polling_min_calls
            delta = start - run.last
            if run.delta is None or abs(delta - run.delta) > s.polling_tolerance * run.delta:
                # Not evenly spaced: a new run starts at the call before this one.
                del run.seqs[:-1], run.times[:-1]
                run.reported = False
            run.seqs.append(ex.seq)
            run.times.append(start)
            if len(run.seqs) > size:
                del run.seqs[0], run.times[0]
            run.delta, run.last = delta, start
            if len(run.seqs) >= size and not run.reported:
                run.reported = True
                out = [self.verdict(
                    Status.WARN,
                    f"{ex.label} polled: {len(run.seqs)} identical calls about every "
                    f"{_ms(delta):.0f} ms (within {s.polling_tolerance:.0%})",
                    run.seqs, _gaps(run.times), ex.client, ex.where, start)]
        deadline = start + self._max_interval_s
        self.runs.put(key, run, deadline)
        return out

    def expire(self, now: float) -> Decided:
        self.runs.due(now)
        return NOTHING


@dataclass(slots=True)
class _Throttled:
    seqs: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    reported: bool = False


class Consecutive429Rule(_Rule):
    """The Trace Analyzer's ThrottledCalls: two or more 429s in a row to one client and host."""

    id = "consecutive-429"
    nothing = "no request was answered 429"
    wakes_on = frozenset({THROTTLED})

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.runs: _Keyed[tuple[str, str], _Throttled] = _Keyed(self.max_keys)

    def held(self) -> tuple[_Keyed[Any, Any], ...]:
        return (self.runs,)

    def feed(self, ex: Exchange) -> Decided:
        if ex.status != THROTTLED:
            if self.runs.entries:
                self.runs.pop(ex.per_host)
            return NOTHING
        key = ex.per_host
        self.seen += 1
        run = self.runs.get(key) or _Throttled()
        if len(run.seqs) < MAX_EVIDENCE:
            run.seqs.append(ex.seq)
            run.times.append(ex.start)
        out: Decided = NOTHING
        if len(run.seqs) >= 2 and not run.reported:
            run.reported = True
            out = [self.verdict(
                Status.WARN,
                f"{len(run.seqs)} calls in a row answered 429 (records "
                f"{', '.join(map(str, run.seqs))}): the title is not handling throttling",
                run.seqs, _gaps(run.times), ex.client, ex.host, ex.start)]
        self.runs.put(key, run, ex.start + 3600)
        return out

    def expire(self, now: float) -> Decided:
        self.runs.due(now)
        return NOTHING

    def summary(self) -> str:
        return f"each of {self.seen} 429s was followed by a call that was not throttled"


class SmallBatchRule(_Rule):
    """The Trace Analyzer's SmallBatchDetection: a batch call with too few users."""

    id = "small-batch"
    nothing = "no batch calls"
    wakes_on: frozenset[int] | None = frozenset()
    wakes_on_batch = True

    def feed(self, ex: Exchange) -> Decided:
        if ex.xuids is None:
            return NOTHING
        self.seen += 1
        least = self.settings.batch_min_xuids
        if ex.xuids >= least:
            return NOTHING
        return [self.verdict(
            Status.WARN,
            f"{ex.label} (record {ex.seq}) batched {ex.xuids} user(s); at least {least} "
            "make a batch worth it",
            (ex.seq,), (), ex.client, ex.where, ex.start)]

    def summary(self) -> str:
        return f"all {self.seen} batch calls carried at least {self.settings.batch_min_xuids} users"


@dataclass(slots=True)
class _BatchSet:
    start: float
    seqs: list[int]
    times: list[float]
    xuids: int
    host: str


class BatchFrequencyRule(_Rule):
    """The Trace Analyzer's BatchFrequency: batch calls within `batch_window_ms` of the
    first of a set are one set; a set of two or more warns when it closes."""

    id = "batch-frequency"
    nothing = "no batch calls"
    wakes_on: frozenset[int] | None = frozenset()
    wakes_on_batch = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.sets: _Keyed[tuple[str, str], _BatchSet] = _Keyed(self.max_keys)

    def held(self) -> tuple[_Keyed[Any, Any], ...]:
        return (self.sets,)

    def feed(self, ex: Exchange) -> Decided:
        if ex.xuids is None:
            return NOTHING
        self.seen += 1
        window = self.settings.batch_window_ms / 1000
        key = ex.per_host
        current = self.sets.get(key)
        if current is not None and 0 <= ex.start - current.start <= window:
            if len(current.seqs) < 4 * MAX_EVIDENCE:
                current.seqs.append(ex.seq)
                current.times.append(ex.start)
            current.xuids += ex.xuids
            return NOTHING
        out: list[Verdict] = []
        if current is not None:
            self.sets.pop(key)
            out.extend(self._close(key, current))
        new = _BatchSet(ex.start, [ex.seq], [ex.start], ex.xuids, ex.host)
        for k, s in self.sets.put(key, new, ex.start + window):
            out.extend(self._close(k, s))
        return out

    def _close(self, key: tuple[str, str], batch: _BatchSet) -> Decided:
        if len(batch.seqs) < 2:
            return NOTHING
        window = self.settings.batch_window_ms
        return [self.verdict(
            Status.WARN,
            f"{len(batch.seqs)} batch calls within {window:.0f} ms ({batch.xuids} users in "
            "all): combine them into one call",
            batch.seqs, _gaps(batch.times), key[0], batch.host, batch.times[-1])]

    def expire(self, now: float) -> Decided:
        return [v for k, s in self.sets.due(now) for v in self._close(k, s)]

    def finish(self) -> Decided:
        return [v for k, s in self.sets.drain() for v in self._close(k, s)]

    def summary(self) -> str:
        return f"{self.seen} batch calls, none within {self.settings.batch_window_ms:.0f} ms " \
               "of another"


RULE_CLASSES: tuple[type[_Rule], ...] = (
    RetryAfterRule, BackoffRule, PreconditionRule, ConflictRule, MissingSessionRule,
    RateBudgetRule, BurstRule, RepeatedCallsRule, PollingRule, Consecutive429Rule,
    SmallBatchRule, BatchFrequencyRule,
)


# --------------------------------------------------------------------------- engine


class Engine:
    """Judges records one at a time with bounded state.

    Records should come roughly in the order they were written (by end time);
    a waiting verdict is decided `reorder_grace_s` after its deadline, so a
    slow request recorded late is still judged against it.
    """

    def __init__(self, limits: Limits | None = None, *, max_keys: int = DEFAULT_MAX_KEYS,
                 settings: RuleSettings | None = None) -> None:
        self.limits = limits or default_limits()
        if settings is not None:
            self.limits = replace(self.limits, rules=settings)
        self.settings = self.limits.rules
        self.rules: list[_Rule] = [cls(self.settings, self.limits, max_keys)
                                   for cls in RULE_CLASSES]
        # Most exchanges wake none of the rules that only act on some statuses or on
        # batch calls: then only the rules that look at every exchange are fed (in the
        # same order, so the verdicts come out as if every rule had been).
        self._feeds = [rule.feed for rule in self.rules]
        self._always = [rule.feed for rule in self.rules if rule.wakes_on is None]
        self._wake_statuses = frozenset().union(
            *(rule.wakes_on for rule in self.rules if rule.wakes_on is not None))
        self._wake_on_batch = any(rule.wakes_on_batch for rule in self.rules)
        #: The state of those rules that holds any key (kept by the _Keyed themselves).
        self._busy: set[_Keyed[Any, Any]] = set()
        for rule in self.rules:
            if rule.wakes_on is not None:
                for keyed in rule.held():
                    keyed.watch = self._busy
                    keyed._watched()
        self.now = 0.0
        self._next_expiry = -math.inf
        self.fed = 0
        #: (rule id, status) -> how many verdicts were decided
        self.counts: dict[tuple[str, Status], int] = {}
        self.finished = False

    def to_exchange(self, record: Mapping[str, Any], seq: int | None = None) -> Exchange:
        return to_exchange(record, self.limits, self.now, seq)

    def feed(self, record: Mapping[str, Any], seq: int | None = None) -> list[Verdict]:
        """The verdicts this record decides (its own, and those whose time it passed).

        `seq`, when given, numbers the record instead of its own "seq".
        """
        return self.feed_exchange(to_exchange(record, self.limits, self.now, seq))

    def feed_exchange(self, ex: Exchange) -> list[Verdict]:
        if self.finished:
            raise RuntimeError("the engine has finished: make a new one for more records")
        self.fed += 1
        start = ex.start
        if start <= self.now:
            out: list[Verdict] = []
        elif start - self.settings.reorder_grace_s < self._next_expiry:
            self.now = start  # `advance(start)` with nothing due yet
            out = []
        else:
            out = self.advance(start)
        if (ex.status in self._wake_statuses or self._busy
                or (ex.xuids is not None and self._wake_on_batch)):
            feeds = self._feeds
        else:
            feeds = self._always
        for feed in feeds:
            decided = feed(ex)
            if decided:
                out.extend(self._counted(decided))
        return out

    def advance(self, now: float) -> list[Verdict]:
        """Decide what waited for a time `now` has passed (the live log calls this on a timer)."""
        if now <= self.now:
            return []
        self.now = now
        cutoff = now - self.settings.reorder_grace_s
        if cutoff < self._next_expiry:
            return []
        self._next_expiry = cutoff + EXPIRY_STEP_S
        out: list[Verdict] = []
        for rule in self.rules:
            decided = rule.expire(cutoff)
            if decided:
                out.extend(self._counted(decided))
        return out

    def finish(self) -> list[Verdict]:
        """Decide everything still waiting, then summarise each rule that decided nothing."""
        if self.finished:
            return []
        out: list[Verdict] = []
        for rule in self.rules:
            out.extend(self._counted(rule.finish()))
        decided = {rule for rule, _ in self.counts}
        for rule in self.rules:
            if rule.id in decided:
                continue
            if rule.seen:
                summary = rule.verdict(Status.PASS, rule.summary(), time=self.now or None)
            else:
                summary = rule.verdict(
                    Status.NOT_APPLICABLE,
                    f"nothing to judge: {rule.nothing} (in {self.fed} exchanges)",
                    time=self.now or None)
            out.extend(self._counted((summary,)))
        self.finished = True
        return out

    def _counted(self, verdicts: Decided) -> Decided:
        for v in verdicts:
            self.counts[(v.rule, v.status)] = self.counts.get((v.rule, v.status), 0) + 1
        return verdicts

    def total(self, status: Status) -> int:
        """How many verdicts of this status were decided so far."""
        return sum(n for (_, s), n in self.counts.items() if s is status)
