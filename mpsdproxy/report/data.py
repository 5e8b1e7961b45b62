"""What a report holds, already aggregated, and its documented JSON form.

`build` fills these in one pass over a recording; `text`, `html` and `junit`
render them. Only MPSD traffic (`classify.is_mpsd`) is in the rows by status,
table entry, resource kind, operation, anomaly and coverage; exchanges with
other hosts are counted apart, by host (`Report.other_hosts`), and a report
over a recording without session-directory traffic says so (`Report.no_mpsd`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mpsdproxy import catalog
from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import verdicts
from mpsdproxy.report.rta import RtaSection
from mpsdproxy.verdicts import Status
from mpsdproxy.verdicts import Verdict

__all__ = [
    "FAIL_ON",
    "NO_MPSD",
    "NO_RESPONSE",
    "REPORT_VERSION",
    "STATUS_ORDER",
    "RecordSummary",
    "Point",
    "Operation",
    "AnomalyCount",
    "Report",
    "render_json",
    "no_mpsd_sentence",
    "scope_note",
    "entry_row",
    "entry_order",
    "status_class",
]

REPORT_VERSION = 1
FAIL_ON = ("fail", "anomaly")
STATUS_ORDER = (Status.FAIL, Status.WARN, Status.PASS, Status.NOT_APPLICABLE)
NO_RESPONSE = "no response"
#: What every form of a report says when a recording holds no MPSD exchange.
NO_MPSD = "no session-directory traffic"

# --------------------------------------------------------------------------- report data


@dataclass(frozen=True)
class RecordSummary:
    """One exchange as the report shows it (evidence rows, timeline tooltips).

    `time` is None when the record said neither when it started nor ended.
    """

    seq: int
    time: float | None
    method: str
    where: str
    status: int | None
    entry: str | None
    source: str
    rule: str | None
    lane: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": recording.timestamp(self.time),
            "method": self.method,
            "resource": self.where,
            "status": self.status,
            "entry": self.entry,
            "source": self.source,
            "rule": self.rule,
        }


@dataclass(frozen=True)
class Point:
    """One dot (or, when injected, one diamond) on the timeline."""

    time: float
    lane: int
    status_class: str
    injected: bool
    seq: int


@dataclass(frozen=True)
class Operation:
    method: str
    kind: str
    count: int
    status_classes: dict[str, int]
    latency: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "kind": self.kind, "count": self.count,
                "status_classes": dict(self.status_classes), "latency_ms": dict(self.latency)}


@dataclass(frozen=True)
class AnomalyCount:
    code: str
    count: int
    message: str
    records: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "count": self.count, "message": self.message,
                "records": list(self.records)}


@dataclass(frozen=True)
class Report:
    """Everything a renderer needs, already aggregated (no per-exchange lists)."""

    source: str
    limits: str
    exchanges: int
    start: float | None
    end: float | None
    skipped: tuple[tuple[int, str], ...]
    skipped_total: int
    by_status: dict[int | None, int]
    by_entry: dict[str | None, int]
    by_kind: dict[str, int]
    by_source: dict[str, int]
    injected_rules: dict[str, int]
    operations: tuple[Operation, ...]
    anomalies: tuple[AnomalyCount, ...]
    verdict_counts: dict[str, dict[str, int]]  # rule id -> status -> count
    verdicts: tuple[Verdict, ...]  # the kept ones, failures first
    omitted: dict[str, dict[str, int]]  # rule id -> status -> not kept
    evidence: dict[int, RecordSummary]
    lanes: tuple[str, ...]
    points: tuple[Point, ...]
    marked: tuple[Point, ...]
    sampled_every: int
    #: exchanges that were MPSD traffic (the rest are counted in other_hosts)
    mpsd_exchanges: int = 0
    #: host -> exchanges with a host that is not the session directory's
    other_hosts: dict[str, int] = field(default_factory=dict)
    #: rule id -> the requests it looked at (`verdicts.engine.LookedAt.to_dict()`)
    looked_at: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the RTA websocket: connections, subscriptions, taps, 412s linked to taps
    rta: RtaSection = field(default_factory=RtaSection)

    def looked_text(self, rule_id: str) -> str:
        """`looked at 9 requests: records 36..45`, or "" when not known."""
        return str(self.looked_at.get(rule_id, {}).get("text", ""))

    @property
    def no_mpsd(self) -> bool:
        """Whether the recording held no session-directory exchange at all."""
        return self.mpsd_exchanges == 0

    @property
    def other_exchanges(self) -> int:
        return sum(self.other_hosts.values())

    def other_hosts_order(self) -> list[tuple[str, int]]:
        """(host, exchanges) for people: most first, then by name."""
        return sorted(self.other_hosts.items(), key=lambda kv: (-kv[1], kv[0]))

    def skipped_lines(self, most: int | None = None) -> list[str]:
        """The skipped lines as `file:line: problem` (the first `most`), as every format
        names them."""
        where = self.source or "record"
        return [f"{where}:{line}: {problem}" for line, problem in self.skipped[:most]]

    def total(self, status: Status) -> int:
        return sum(c.get(status.value, 0) for c in self.verdict_counts.values())

    @property
    def anomaly_total(self) -> int:
        return sum(a.count for a in self.anomalies)

    @property
    def failed(self) -> bool:
        return self.total(Status.FAIL) > 0

    @property
    def omitted_total(self) -> int:
        return sum(n for per in self.omitted.values() for n in per.values())

    @property
    def exercised(self) -> list[catalog.Entry]:
        return [e for e in catalog.ENTRIES if self.by_entry.get(e.id)]

    @property
    def never_reached(self) -> list[catalog.Entry]:
        return [e for e in catalog.ENTRIES if not self.by_entry.get(e.id)]

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON form (see the package docstring). Text from the recording
        goes through `model.printable`, so the form is always valid UTF-8."""
        return model.printable_data({
            "report": "mpsdproxy",
            "version": REPORT_VERSION,
            "source": self.source,
            "limits": self.limits,
            "exchanges": self.exchanges,
            "skipped_lines": self.skipped_total,
            "skipped": [{"line": line, "problem": problem} for line, problem in self.skipped],
            "start": recording.timestamp(self.start),
            "end": recording.timestamp(self.end),
            "duration_s": None if self.start is None or self.end is None
            else round(self.end - self.start, 3),
            "outcome": {
                "failed": self.failed,
                "anomalies": self.anomaly_total,
                "verdicts": {s.value: self.total(s) for s in Status},
                "no_session_directory_traffic": self.no_mpsd,
                "scope": no_mpsd_sentence(self) if self.no_mpsd else scope_note(self),
            },
            "by_status": [{"status": s, "count": n} for s, n in
                          sorted(self.by_status.items(), key=_status_key)],
            "by_entry": [entry_row(i, n) for i, n in entry_order(self.by_entry)],
            "by_kind": [{"kind": k, "count": n} for k, n in
                        sorted(self.by_kind.items(), key=lambda kv: (-kv[1], kv[0]))],
            "by_source": dict(sorted(self.by_source.items())),
            "injected_rules": [{"rule": r, "count": n} for r, n in
                               sorted(self.injected_rules.items(), key=lambda kv: -kv[1])],
            "operations": [op.to_dict() for op in self.operations],
            "anomalies": [a.to_dict() for a in self.anomalies],
            "verdicts": {
                "rules": [self._rule_row(rule) for rule in verdicts.RULES],
                "items": [v.to_dict() for v in self.verdicts],
            },
            "coverage": {
                "entries": len(catalog.ENTRIES),
                "exercised": len(self.exercised),
                "rows": [{"id": e.id, "status": e.status, "meaning": e.meaning,
                          "count": self.by_entry.get(e.id, 0),
                          "exercised": bool(self.by_entry.get(e.id))}
                         for e in catalog.ENTRIES],
            },
            "evidence": [s.to_dict() for _, s in sorted(self.evidence.items())],
            "timeline": {"lanes": list(self.lanes), "points": len(self.points),
                         "sampled_every": self.sampled_every, "marked": len(self.marked)},
            "mpsd_exchanges": self.mpsd_exchanges,
            "other_hosts": dict(self.other_hosts_order()),
            "rta": self.rta.to_dict(),
        })

    def _rule_row(self, rule: verdicts.Rule) -> dict[str, Any]:
        counts = self.verdict_counts.get(rule.id, {})
        return {
            "rule": rule.id,
            "title": rule.title,
            "group": rule.group.value,
            "checks": rule.checks,
            "counts": {s.value: counts.get(s.value, 0) for s in Status},
            "omitted": sum(self.omitted.get(rule.id, {}).values()),
            "looked_at": self.looked_at.get(rule.id),
        }


def no_mpsd_sentence(report: Report) -> str:
    """What a report without session-directory traffic says instead of an outcome."""
    if not report.exchanges:
        return f"{NO_MPSD}: the recording holds no exchange, so nothing was judged"
    return (f"{NO_MPSD}: none of the {report.exchanges} exchanges was with the session "
            "directory or matchmaking, so nothing was judged")


def scope_note(report: Report) -> str:
    """How many exchanges were judged as MPSD, and how many with other hosts were not."""
    if not report.other_hosts:
        return f"{report.mpsd_exchanges} session-directory exchanges, all judged"
    hosts = len(report.other_hosts)
    return (f"{report.mpsd_exchanges} session-directory, {report.other_exchanges} with "
            f"{hosts} other host{'s' if hosts != 1 else ''}, not judged")


def render_json(report: Report) -> str:
    return jsonbody.document(report.to_dict())



def _status_key(item: tuple[Any, int]) -> tuple[int, int]:
    """Statuses ascending, then no response, then OTHER."""
    status = item[0]
    if isinstance(status, int):
        return (0, status)
    return (1, 0) if status is None else (2, 0)


def entry_order(by_entry: Mapping[str | None, int]) -> list[tuple[str | None, int]]:
    """(entry id, count) in the order of the status table, unlisted (None) and OTHER last."""
    order = {e.id: n for n, e in enumerate(catalog.ENTRIES)}
    return sorted(by_entry.items(),
                  key=lambda item: (order.get(item[0] or "", len(order)), item[0] or ""))


def entry_row(entry_id: str | None, count: int) -> dict[str, Any]:
    """A row of the totals by table entry: its status and meaning from the catalog."""
    entry = catalog.BY_ID.get(entry_id or "")
    return {
        "id": entry_id,
        "status": entry.status if entry else None,
        "meaning": entry.meaning if entry else "Not a row of the status table.",
        "count": count,
    }


def status_class(status: int | None) -> str:
    if status is None:
        return NO_RESPONSE
    return f"{status // 100}xx"
