"""The verdicts' vocabulary: the rules judged, a verdict, and what every rule does.

`RULES` is the one list of the behaviours judged (ids are stable: reports and
CI refer to them). A verdict is pass, warn, fail or not-applicable, with a
one-line reason and its evidence: the seq numbers of the records behind it and
the gaps between them in milliseconds. `BaseRule` is what every rule shares:
it is fed facts one exchange at a time, decides what waited when time passes
(`expire`) or the recording ends (`finish`), and says why it passes when it
flagged nothing. What the client library does, which the fault rules judge
against, is `verdicts/library.py`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mpsdproxy import catalog
from mpsdproxy import recording
from mpsdproxy.verdicts.limits import Limits
from mpsdproxy.verdicts.limits import RuleSettings
from mpsdproxy.verdicts.state import Facts

__all__ = [
    "Status",
    "Group",
    "Rule",
    "RULES",
    "RULES_BY_ID",
    "Verdict",
    "MISSING_SESSION",
    "Decided",
    "NOTHING",
    "DROPPED",
    "MAX_EVIDENCE",
    "BaseRule",
    "ms",
    "gaps",
]

#: The row the missing-session rule watches: its status, methods and target.
MISSING_SESSION: catalog.Entry = catalog.get("204.get-session")
#: At most this many seq numbers are kept as one verdict's evidence.
MAX_EVIDENCE = 24
#: Said of a waiting verdict whose key was dropped because the rule held too many.
DROPPED = "its state was dropped to bound memory"


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
         "After a 503 or 429 with Retry-After N, the user calls that API (method and "
         "resource template) again only after N seconds; other APIs may go on."),
    Rule("backoff", "Backoff without Retry-After", Group.FAULT_HANDLING,
         "Retries after a retryable failure wait as libHttpClient does (2-4 s, 4-8 s, ...; "
         "10 s after a 500) and stop when its 20 s window runs out."),
    Rule("412-handled", "412 handled", Group.FAULT_HANDLING,
         "After a 412 the next write uses the ETag the 412 returned (or of a re-read), "
         "If-Match: *, or adopts the 412's session; never the stale ETag or document."),
    Rule("409-not-retried", "409 not blindly retried", Group.FAULT_HANDLING,
         "A request answered 409 is not sent again unchanged."),
    Rule("missing-session-polling", "No polling of a missing session", Group.FAULT_HANDLING,
         f"GETs of a session answered {MISSING_SESSION.id} (\"{MISSING_SESSION.meaning}\") "
         "are not repeated above the configured rate."),
    Rule("tap-read", "Shoulder tap read", Group.FAULT_HANDLING,
         "After an RTA shoulder tap with a changeNumber newer than the title's copy, the "
         "title GETs the session (or a write in flight answers that change) within the limit."),
    Rule("rta-reconnect", "RTA reconnect", Group.FAULT_HANDLING,
         "After the RTA websocket drops, the title reconnects on the library's schedule (at "
         "once, then min(n^2, 60) s after each failed attempt) and subscribes again."),
    Rule("rta-resync", "RTA resync", Group.FAULT_HANDLING,
         "After an RTA resync ([4]) the title re-reads every session it follows."),
    Rule("recovery.call", "Recovered after a sweep fault", Group.FAULT_HANDLING,
         "After a fault a sweep injected, the title makes that call succeed again within "
         "the library's 20 s retry window (plus one call), or gives it up cleanly."),
    Rule("recovery.state", "Session state consistent after a sweep fault", Group.FAULT_HANDLING,
         "After a sweep's fault on a session the title is a member of, its next read still "
         "lists it as a member, or it left the session cleanly first."),
    Rule("rate-budget", "Call-rate budgets", Group.CALL_PATTERN,
         "Each user stays within the burst and sustained rate limits of each service; "
         "ten times the sustained limit fails certification."),
    Rule("burst", "Burst detection", Group.CALL_PATTERN,
         "No run of calls well above the title's usual rate within a short window."),
    Rule("repeated-calls", "Repeated identical calls", Group.CALL_PATTERN,
         "The same call (URI and body) is not repeated within a few seconds."),
    Rule("polling", "Evenly spaced polling", Group.CALL_PATTERN,
         "The same call is not repeated at a near-constant interval (a session's changes "
         "come as RTA shoulder taps: read on a tap instead)."),
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


def ms(seconds: float) -> float:
    """Seconds -> milliseconds, to 0.1 ms (what a verdict's gaps say)."""
    return round(seconds * 1000, 1)


def gaps(times: Sequence[float]) -> tuple[float, ...]:
    """The gaps between consecutive times, in milliseconds."""
    return tuple(ms(b - a) for a, b in zip(times, times[1:], strict=False))


def _clip(seqs: Iterable[int]) -> tuple[int, ...]:
    """At most MAX_EVIDENCE seq numbers: the first and last halves."""
    seqs = tuple(seqs)
    if len(seqs) <= MAX_EVIDENCE:
        return seqs
    half = MAX_EVIDENCE // 2
    return seqs[:half] + seqs[-half:]


#: What a rule decided from one exchange. Most exchanges decide nothing, and
#: then the shared empty tuple is returned rather than a new list.
Decided = Sequence[Verdict]
NOTHING: tuple[Verdict, ...] = ()


class Concern(enum.Enum):
    """Which MPSD exchanges a rule's `feed` can be concerned with: a property of the rule,
    read once by the engine, which hands each exchange only to the rules it concerns."""

    EVERY = "every"  # every MPSD exchange
    ANALYSED = "analysed"  # only calls the Trace Analyzer analyses (`Facts.analysed`)
    NONE = "none"  # none: websocket messages and handshakes only


class BaseRule:
    """Base of the rules: per-occurrence verdicts plus a summary when nothing was decided."""

    id = ""
    #: Said when the recording held nothing this rule judges.
    nothing = ""
    #: Which MPSD exchanges `feed` is given (a rule that follows the Trace Analyzer judges
    #: only the calls it analyses, and is never handed the others).
    concern = Concern.EVERY
    #: For a rule that judges what follows an answer of some statuses (a 429, a 409):
    #: those statuses. Until one comes, and again once nothing from one waits (`quiet`),
    #: the engine hands it no other exchange. None: every exchange `concern` allows.
    starts_on: frozenset[int] | None = None

    def __init__(self, settings: RuleSettings, limits: Limits, max_keys: int) -> None:
        self.settings = settings
        self.limits = limits
        self.max_keys = max_keys
        self.seen = 0  # occurrences (or relevant calls) this rule looked at

    def feed(self, ex: Facts) -> Decided:
        """What this exchange decides."""
        raise NotImplementedError

    def quiet(self) -> bool:
        """Whether nothing from an answer of `starts_on` waits for a later exchange."""
        return True

    def expire(self, now: float) -> Decided:
        """What waited for a time `now` has passed."""
        return NOTHING

    def finish(self) -> Decided:
        """What still waits when the recording ends."""
        return NOTHING

    def summary(self) -> str:
        """Why the rule passes when it saw traffic and flagged nothing."""
        return f"nothing flagged in {self.seen} relevant calls"

    def verdict(self, status: Status, reason: str, records: Iterable[int] = (),
                gaps_ms: Iterable[float] = (), client: str | None = None,
                resource: str | None = None, time: float | None = None) -> Verdict:
        return Verdict(self.id, status, reason, _clip(records), tuple(gaps_ms), client,
                       resource, time)
