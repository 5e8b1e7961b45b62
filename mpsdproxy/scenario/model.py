"""What a scenario is, as immutable records: rules, their match, when and fault.

Everything here is built once when a file is loaded (`load.py` reads the
file, `sections.py` turns each section into these records) and only read
afterwards: the engine and the injector never change a record. The value
parsers (`parse_duration`, `parse_glob`) live here because the records are
defined by what they accept.

What a status means, which row of the table answers a request and whether the
service could give it there is the catalog's business: `Fault.row` and
`Fault.why_not` ask `catalog` and never spell out a status's meaning themselves.
"""

from __future__ import annotations

import enum
import fnmatch
import math
import random
import re
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import Any

from mpsdproxy import catalog
from mpsdproxy import fgrl
from mpsdproxy import model
from mpsdproxy import resources
from mpsdproxy.resources import Kind
from mpsdproxy.yamlfile import describe
from mpsdproxy.yamlfile import show

__all__ = [
    "Phase",
    "Per",
    "Channel",
    "TapAction",
    "TapFault",
    "RtaAction",
    "RtaFault",
    "Origin",
    "RESOURCE_KINDS",
    "SESSION_KINDS",
    "THROTTLE_ENTRY",
    "parse_duration",
    "Glob",
    "parse_glob",
    "HeaderMatch",
    "Match",
    "When",
    "FixedDelay",
    "UniformDelay",
    "LognormalDelay",
    "Delay",
    "Fault",
    "Rule",
    "Scenario",
]


class Phase(enum.StrEnum):
    REQUEST = "request"  # act before the service is contacted
    RESPONSE = "response"  # forward, then replace or cut the real answer


class Per(enum.StrEnum):
    GLOBAL = "global"
    CLIENT = "client"
    SESSION = "session"


class Channel(enum.StrEnum):
    """What a rule sees, decided by its fault: the engine counts each rule only on its own
    channel, so an HTTP request never counts toward a tap rule and a tap never toward an
    HTTP rule."""

    HTTP = "http"  # session-directory requests (every fault but tap and rta)
    TAP = "tap"  # each shoulder tap the service sends over RTA (`tap:` faults)
    RTA = "rta"  # each RTA message the service sends (`rta: close`, `rta: resync`)
    SUBSCRIBE = "subscribe"  # each RTA subscribe the title sends (`rta: {subscribe_status}`)


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

#: The kinds that name a session, so `per: session` can count them.
SESSION_KINDS = frozenset({Kind.SESSION}) | resources.ELEMENT_KINDS

#: The row a throttle rule answers with: the table's fine-grained-rate-limit row.
THROTTLE_ENTRY = "429.too-many-requests"


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
        raise ValueError(f"expected {_DURATION_HELP}, not {describe(value)}")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ValueError(f"a duration cannot be negative, not {show(value)}")
        if not _DURATION.fullmatch(text):
            raise ValueError(f"expected {_DURATION_HELP}, not {show(value)}")
        unit = text.lstrip("0123456789.")
        seconds = float(text[: len(text) - len(unit)]) * _UNITS[unit or "s"]
    else:
        seconds = float(value)
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, not {show(value)}")
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be finite, not {show(value)}")
    return seconds


@dataclass(frozen=True, slots=True)
class Glob:
    """A shell-style pattern, compiled once at load, matched case-insensitively against a
    whole string."""

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
                f"(write [[] for a literal '['), in {show(text)}"
            )
        chars = text[i + 1 : j].removeprefix("!")
        for k in range(1, len(chars) - 1):
            if chars[k] == "-" and chars[k - 1] > chars[k + 1]:
                raise ValueError(
                    f"the range {chars[k - 1]}-{chars[k + 1]} in {show(text)} is empty "
                    f"(write it low-high)"
                )
        i = j + 1


def parse_glob(text: Any) -> Glob:
    """A glob (`*`, `?`, `[set]`, `[!set]`) -> Glob. Raises ValueError when it cannot mean
    what it says: empty, or with an unclosed or empty `[...]`."""
    if not isinstance(text, str):
        raise ValueError(f"expected a glob (a string), not {describe(text)}")
    if not text:
        raise ValueError("an empty glob matches nothing")
    _check_brackets(text)
    try:
        regex = re.compile(fnmatch.translate(text), re.IGNORECASE)
    except re.error as e:  # pragma: no cover - fnmatch output always compiles
        raise ValueError(f"{show(text)} is not a valid glob: {e}") from None
    return Glob(text, regex)


# --- match and when ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """One `match.headers` entry: the header present (any value or a glob), or absent."""

    name: str
    present: bool = True
    glob: Glob | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """Which requests a rule concerns; every None or empty field matches everything.
    `match.Matcher` checks a request against it."""

    methods: frozenset[str] | None = None
    resources: tuple[str, ...] = ()
    paths: tuple[Glob, ...] = ()
    hosts: tuple[Glob, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()

    @property
    def kinds(self) -> frozenset[Kind] | None:
        """The resource kinds the rule's resource names cover (None: any)."""
        kinds: set[Kind] = set()
        for name in self.resources:
            covered = RESOURCE_KINDS[name]
            if covered is None:
                return None
            kinds |= covered
        return frozenset(kinds) if self.resources else None


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


# --- delays -----------------------------------------------------------------------------


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


# --- RTA faults -------------------------------------------------------------------------


class TapAction(enum.StrEnum):
    """What a `tap:` fault does to one shoulder tap (`addons/rtafaults.py` acts on it)."""

    DROP = "drop"  # the title never hears of the change
    DUPLICATE = "duplicate"  # the tap arrives twice
    REORDER = "reorder"  # the tap arrives after the next one the service sends
    STALE = "stale"  # the tap names a changeNumber the title already has
    DELAY = "delay"  # the tap arrives late


@dataclass(frozen=True, slots=True)
class TapFault:
    action: TapAction
    delay: Delay | None = None  # for DELAY only


class RtaAction(enum.StrEnum):
    """What an `rta:` fault does to the RTA websocket."""

    CLOSE = "close"  # the websocket drops (the message that fired it is lost with it)
    RESYNC = "resync"  # the service asks for a resync ([4]) after the message
    SUBSCRIBE_STATUS = "subscribe_status"  # the title's subscribe fails with this status


@dataclass(frozen=True, slots=True)
class RtaFault:
    action: RtaAction
    status: int | None = None  # an `rta.Status`, for SUBSCRIBE_STATUS only


# --- fault ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """What a rule does when it fires.

    `status`/`entry` answer with a row of the table (the injector builds it with
    `faults.build`, applying `body`, `headers`, `retry_after`, `content_type`);
    `headers` values of None remove a header. In phase response without a
    status, `body`/`headers`/`content_type` edit the real answer instead.
    `throttle` answers with the table's rate-limit row, only past its budget.
    `force` answers with the row even where the catalog says the service cannot give
    it (`why_not`); without it such a rule waits for a request it can apply to.
    `tap` and `rta` act on the RTA websocket instead of a request (`channel`), and
    combine with nothing else.
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
    throttle: fgrl.Budget | None = None
    force: bool = False
    tap: TapFault | None = None
    rta: RtaFault | None = None

    @property
    def channel(self) -> Channel:
        """What the fault acts on: HTTP requests, shoulder taps, or the RTA websocket."""
        if self.tap is not None:
            return Channel.TAP
        if self.rta is None:
            return Channel.HTTP
        return Channel.SUBSCRIBE if self.rta.action is RtaAction.SUBSCRIBE_STATUS else Channel.RTA

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

    def row(self, request: model.Request, exists: bool | None = None) -> catalog.Entry | None:
        """The row of the table this fault answers `request` with (None when it gives no
        status); `exists` says whether the request's session exists, as far as the proxy
        knows (None: it has not seen it)."""
        return self.row_at(catalog.Situation.of(request, exists))

    def row_at(self, situation: catalog.Situation) -> catalog.Entry | None:
        """The row this fault answers with in `situation` (None when it gives no status).

        `entry` when the rule names one; the rate-limit row for a throttle. Otherwise,
        among the status's rows, those whose situation fits the request (method,
        session or element, a precondition header it sent) in order of fit: a row whose
        precondition the request sent beats one without, the narrower precondition wins
        (412 to If-Match returns the session; to If-None-Match, no body), then table
        order. The first of them the service can give here wins, or that waits only for
        the proxy to see the session (so a 412 to an ETag on a session not seen yet
        waits for the session rather than answering without it). When none can, the
        best fit, or the status's first row: `why_not` then says why it cannot apply.
        """
        if self.entry is not None:
            return catalog.get(self.entry)
        if self.throttle is not None:
            return catalog.get(THROTTLE_ENTRY)
        rows = catalog.for_status(self.status) if self.status is not None else ()
        if not rows:
            return None
        target = catalog.target_of(situation.resource)
        fits = sorted(((fit, -i), row) for i, row in enumerate(rows)
                      if (fit := _row_fit(row, situation, target)) is not None)
        ranked = [row for _, row in reversed(fits)]
        seen = replace(situation, exists=True) if situation.exists is None else None
        for row in (*ranked, *(r for r in rows if r not in ranked)):
            if catalog.why_not(row, situation) is None:
                return row
            if seen is not None and catalog.why_not(row, seen) is None:
                return row
        return ranked[0] if ranked else rows[0]

    def why_not(self, situation: catalog.Situation) -> str | None:
        """Why this fault cannot apply in `situation` as the service would answer (None
        when it can). Only an answer with a status of the table can be wrong there:
        connection faults, delays, cuts and edits of the real answer always apply, and
        so does throttling (FGRL counts every call). `force` skips the check."""
        if self.force or self.status is None or self.throttle is not None:
            return None
        row = self.row_at(situation)
        return catalog.why_not(row, situation) if row is not None else None

    def delay_seconds(self, rng: random.Random) -> float:
        """How long to wait before acting (0 when the fault has no delay); for
        `tap: {delay: ...}`, how late the tap arrives."""
        delay = self.tap.delay if self.tap is not None else self.delay
        return delay.sample(rng) if delay is not None else 0.0

    def cut(self, body: bytes) -> bytes:
        """The body as `truncate` leaves it: always strictly shorter when there is one."""
        if not body:
            return body
        keep = len(body) // 2 if self.truncate_to is None else self.truncate_to
        return body[: min(keep, len(body) - 1)]


def _row_fit(row: catalog.Entry, situation: catalog.Situation,
             target: catalog.Target) -> tuple[bool, int] | None:
    """How well a row's situation fits a request (None: it does not)."""
    if situation.method not in row.methods or row.target not in (catalog.Target.ANY, target):
        return None
    sent = {"If-Match": situation.if_match, "If-None-Match": situation.if_none_match}
    if row.preconditions and not any(sent.get(p) is not None for p in row.preconditions):
        return None
    return bool(row.preconditions), -len(row.preconditions)


# --- rule and scenario ------------------------------------------------------------------


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

    @property
    def channel(self) -> Channel:
        return self.fault.channel


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    seed: int
    rules: tuple[Rule, ...]
    path: str = "<string>"
    #: Refuse a rule whose fault the service could never give where it matches (else
    #: `check` only warns).
    strict: bool = False

    def rule(self, name: str) -> Rule:
        """The rule with this name (ignoring case); ValueError listing the names otherwise."""
        for rule in self.rules:
            if rule.name.lower() == name.lower():
                return rule
        names = ", ".join(r.name for r in self.rules)
        raise ValueError(f"no rule named {name!r} in {self.name}; its rules are: {names}")
