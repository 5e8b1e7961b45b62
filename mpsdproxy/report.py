"""Reports over a recording: what happened, what the title did about it, what was never tried.

`build_report(path, limits=None)` streams a recording once: every record goes
through the verdict engine (mpsdproxy.verdicts) and into bounded aggregates, so
a recording of any length reports in flat memory. `render(report, fmt)` turns
the result into text, json, junit or html; `exit_code(report, fail_on)` is the
CI gate (`--fail-on fail`: 1 when any verdict failed; `--fail-on anomaly`: also
1 when any response departed from the status table).

What stays bounded, and how:

- counters (status, catalog entry, resource kind, source, injected rule,
  anomaly code, operation) keep at most a few hundred distinct keys each;
  more fall into an "other" key;
- latency per operation is a fixed histogram of log-spaced buckets (8 per
  doubling from 0.1 ms, ~9 % wide), so percentiles are estimates within a
  bucket and the maximum is exact;
- the timeline keeps at most `max_points` evenly spread exchanges (every
  k-th, k doubling whenever the list fills) plus the first `max_marked`
  injected faults;
- verdicts are all counted; the first `keep_verdicts` of each rule and status
  are kept in full;
- a ring of the last `ring` records' summaries supplies the evidence records
  that kept verdicts point to (at most `max_evidence`).

The JSON form (`render(report, "json")`) is the contract CI parses. Keys are
only ever added, never renamed or removed, within a version::

    {"report": "mpsdproxy", "version": 1,
     "source": "<recording path>", "limits": "<limits file or built-in defaults>",
     "exchanges": 412, "skipped_lines": 0,
     "skipped": [{"line": 7, "problem": "..."}],              # the first 20
     "start": "2026-...Z" | null, "end": "2026-...Z" | null, "duration_s": 12.3 | null,
     "outcome": {"failed": true, "anomalies": 3,
                 "verdicts": {"pass": 5, "warn": 1, "fail": 2, "not-applicable": 4}},
     "by_status": [{"status": 200 | null, "count": 120}],     # null: no response
     "by_entry": [{"id": "200.ok" | null, "status": 200 | null, "meaning": "...",
                   "count": 120}],                            # id null: not in the table
     "by_kind": [{"kind": "session", "count": 300}],
     "by_source": {"forwarded": 400, "injected": 12, "replayed": 0},
     "injected_rules": [{"rule": "outage", "count": 12}],
     "operations": [{"method": "GET", "kind": "session", "count": 120,
                     "status_classes": {"2xx": 100, "4xx": 20},
                     "latency_ms": {"count": 120, "mean": 8.1, "p50": 7.3, "p90": 12.0,
                                    "p99": 30.2, "max": 41.0}}],
     "anomalies": [{"code": "missing-header", "count": 2, "message": "...",
                    "records": [17, 40]}],
     "verdicts": {"rules": [{"rule": "retry-after", "title": "Retry-After honoured",
                             "group": "fault-handling", "checks": "...",
                             "counts": {"pass": 1, "warn": 0, "fail": 1, "not-applicable": 0},
                             "omitted": 0}],
                  "items": [<Verdict.to_dict(): rule, title, status, reason, records,
                             gaps_ms, client, resource, time>]},
     "coverage": {"entries": 18, "exercised": 9,
                  "rows": [{"id": "200.ok", "status": 200, "meaning": "...",
                            "count": 120, "exercised": true}]},
     "evidence": [{"seq": 17, "time": "...", "method": "GET", "resource": "sessions/x",
                   "status": 503 | null, "entry": "503.service-unavailable" | null,
                   "source": "injected", "rule": "outage" | null}],
     "timeline": {"lanes": ["sessions/x", ...], "points": 400, "sampled_every": 1,
                  "marked": 12}}

"source" names where a response came from as recordings do: forwarded
(organic: the real service or the stand-in answered), injected (a scenario
rule answered), replayed (a recording answered).

JUnit: one testsuite `mpsdproxy.verdicts`, one testcase per kept verdict
(classname `mpsdproxy.verdicts.<rule id>`). A fail is a <failure>; a warn is
a passing testcase whose <system-out> starts with "WARNING:" (CI servers show
it without failing the build, and a warning is not "skipped": it was judged);
not-applicable is <skipped> (there was nothing to judge). Verdicts beyond the
kept ones get one testcase per rule and status saying how many, failing if
they are failures.
"""

from __future__ import annotations

import html
import json
import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections import OrderedDict
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mpsdproxy import catalog
from mpsdproxy import classify
from mpsdproxy import recording
from mpsdproxy import verdicts
from mpsdproxy.verdicts import Status
from mpsdproxy.verdicts import Verdict

__all__ = [
    "FORMATS",
    "FAIL_ON",
    "REPORT_VERSION",
    "LatencyHistogram",
    "Report",
    "ReportBuilder",
    "build_report",
    "report_records",
    "render",
    "exit_code",
]

REPORT_VERSION = 1
FORMATS = ("text", "json", "html", "junit")
FAIL_ON = ("fail", "anomaly")
STATUS_ORDER = (Status.FAIL, Status.WARN, Status.PASS, Status.NOT_APPLICABLE)
#: Most distinct keys a counter keeps before the rest go to OTHER.
MAX_KEYS = 256
OTHER = "other"
NO_RESPONSE = "no response"
MAX_SKIPPED = 20


# --------------------------------------------------------------------------- latency


class LatencyHistogram:
    """Log-spaced buckets: bucket i holds [MIN_MS * 2^((i-1)/STEPS), MIN_MS * 2^(i/STEPS)).

    Fixed size whatever the count; a percentile is the geometric middle of its
    bucket (about 4 % off at most), clamped to the exact minimum and maximum.
    """

    MIN_MS = 0.1
    STEPS = 8  # buckets per doubling
    SIZE = 8 * 26 + 1  # up to 0.1 ms * 2^26, about 1.9 hours

    def __init__(self) -> None:
        self.buckets = [0] * self.SIZE
        self.count = 0
        self.total = 0.0
        self.low = math.inf
        self.high = 0.0

    def add(self, ms: float) -> None:
        if not ms >= 0 or ms == math.inf:
            return
        index = 0 if ms < self.MIN_MS else min(
            self.SIZE - 1, int(math.log2(ms / self.MIN_MS) * self.STEPS) + 1)
        self.buckets[index] += 1
        self.count += 1
        self.total += ms
        self.low = min(self.low, ms)
        self.high = max(self.high, ms)

    def percentile(self, p: float) -> float | None:
        if not self.count:
            return None
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for index, n in enumerate(self.buckets):
            seen += n
            if seen >= rank:
                if index == 0:
                    value = self.MIN_MS / 2
                else:
                    value = self.MIN_MS * 2 ** ((index - 0.5) / self.STEPS)
                return min(self.high, max(self.low, value))
        return self.high

    def to_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 2)

        return {
            "count": self.count,
            "mean": r(self.total / self.count) if self.count else None,
            "p50": r(self.percentile(50)),
            "p90": r(self.percentile(90)),
            "p99": r(self.percentile(99)),
            "max": r(self.high) if self.count else None,
        }


# --------------------------------------------------------------------------- report data


@dataclass(frozen=True)
class RecordSummary:
    """One exchange as the report shows it (evidence rows, timeline tooltips)."""

    seq: int
    time: float
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

    def total(self, status: Status) -> int:
        return sum(c.get(status.value, 0) for c in self.verdict_counts.values())

    @property
    def anomaly_total(self) -> int:
        return sum(a.count for a in self.anomalies)

    @property
    def failed(self) -> bool:
        return self.total(Status.FAIL) > 0

    @property
    def exercised(self) -> list[catalog.Entry]:
        return [e for e in catalog.ENTRIES if self.by_entry.get(e.id)]

    @property
    def never_reached(self) -> list[catalog.Entry]:
        return [e for e in catalog.ENTRIES if not self.by_entry.get(e.id)]

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON form (see the module docstring)."""
        return {
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
            },
            "by_status": [{"status": s, "count": n} for s, n in
                          sorted(self.by_status.items(), key=_status_key)],
            "by_entry": [_entry_row(i, n) for i, n in
                         sorted(self.by_entry.items(), key=_entry_key)],
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
        }

    def _rule_row(self, rule: verdicts.Rule) -> dict[str, Any]:
        counts = self.verdict_counts.get(rule.id, {})
        return {
            "rule": rule.id,
            "title": rule.title,
            "group": rule.group.value,
            "checks": rule.checks,
            "counts": {s.value: counts.get(s.value, 0) for s in Status},
            "omitted": sum(self.omitted.get(rule.id, {}).values()),
        }


def _status_key(item: tuple[Any, int]) -> tuple[int, int]:
    """Statuses ascending, then no response, then OTHER."""
    status = item[0]
    if isinstance(status, int):
        return (0, status)
    return (1, 0) if status is None else (2, 0)


def _entry_key(item: tuple[str | None, int]) -> tuple[int, str]:
    order = {e.id: n for n, e in enumerate(catalog.ENTRIES)}
    return (order.get(item[0] or "", len(order)), item[0] or "")


def _entry_row(entry_id: str | None, count: int) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- building


class _Capped(Counter):  # type: ignore[type-arg]
    """A Counter that keeps at most MAX_KEYS distinct keys; the rest count as OTHER."""

    def add(self, key: Any, n: int = 1) -> None:
        if key not in self and len(self) >= MAX_KEYS:
            key = OTHER
        self[key] += n


@dataclass
class _OpAcc:
    count: int = 0
    classes: Counter = field(default_factory=Counter)  # type: ignore[type-arg]
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass
class _AnomalyAcc:
    count: int = 0
    message: str = ""
    records: list[int] = field(default_factory=list)


class ReportBuilder:
    """Feeds records to the verdict engine and keeps bounded aggregates for the report."""

    def __init__(self, limits: verdicts.Limits | None = None, *, source: str = "",
                 max_points: int = 1500, max_marked: int = 400, keep_verdicts: int = 50,
                 ring: int = 4096, max_evidence: int = 2000, max_lanes: int = 24) -> None:
        self.engine = verdicts.Engine(limits)
        self.source = source
        self.max_points = max_points
        self.max_marked = max_marked
        self.keep_verdicts = keep_verdicts
        self.ring_size = ring
        self.max_evidence = max_evidence
        self.max_lanes = max_lanes
        self.exchanges = 0
        self.start: float | None = None
        self.end: float | None = None
        self.skipped: list[tuple[int, str]] = []
        self.skipped_total = 0
        self.by_status = _Capped()
        self.by_entry = _Capped()
        self.by_kind = _Capped()
        self.by_source = _Capped()
        self.injected_rules = _Capped()
        self.operations: dict[tuple[str, str], _OpAcc] = {}
        self.anomalies: dict[str, _AnomalyAcc] = {}
        self.kept: dict[tuple[str, Status], list[Verdict]] = {}
        self.omitted: dict[str, dict[str, int]] = {}
        self.ring: OrderedDict[int, RecordSummary] = OrderedDict()
        self.evidence: dict[int, RecordSummary] = {}
        self.lanes: dict[str, int] = {}
        self.points: list[Point] = []
        self.marked: list[Point] = []
        self.stride = 1
        self._tick = 0

    # ---- per record

    def add(self, record: Mapping[str, Any]) -> list[Verdict]:
        """Take in one record; returns the verdicts it decided."""
        ex = self.engine.to_exchange(record)
        decided = self.engine.feed_exchange(ex)
        self.exchanges += 1
        self.start = ex.start if self.start is None else min(self.start, ex.start)
        self.end = ex.end if self.end is None else max(self.end, ex.end)
        classification = _classification(record)
        entry = classification.get("id")
        provenance = record.get("provenance")
        if not isinstance(provenance, Mapping):
            provenance = {}
        source = str(provenance.get("source") or "forwarded")
        rule = provenance.get("rule") if source == "injected" else None
        self.by_status.add(ex.status)
        self.by_entry.add(entry if isinstance(entry, str) else None)
        self.by_kind.add(ex.resource.kind.value)
        self.by_source.add(source)
        if rule is not None:
            self.injected_rules.add(str(rule))
        self._operation(ex, record)
        self._anomalies(ex.seq, classification)
        summary = RecordSummary(ex.seq, ex.start, ex.method, ex.where, ex.status,
                                entry if isinstance(entry, str) else None, source,
                                None if rule is None else str(rule), self._lane(ex.where))
        self._remember(summary)
        self._keep(decided)
        return decided

    def skip(self, issue: recording.ReadIssue) -> None:
        """A line the reader could not use: counted, and the first few named."""
        self.skipped_total += 1
        if len(self.skipped) < MAX_SKIPPED:
            self.skipped.append((issue.line, issue.problem))

    def _operation(self, ex: verdicts.Exchange, record: Mapping[str, Any]) -> None:
        key = (ex.method or "?", ex.resource.kind.value)
        acc = self.operations.get(key)
        if acc is None:
            if len(self.operations) >= MAX_KEYS:
                key = (OTHER, OTHER)
                acc = self.operations.setdefault(key, _OpAcc())
            else:
                acc = self.operations[key] = _OpAcc()
        acc.count += 1
        acc.classes[status_class(ex.status)] += 1
        duration = record.get("duration_ms")
        ms = duration if isinstance(duration, int | float) else (ex.end - ex.start) * 1000
        acc.latency.add(float(ms))

    def _anomalies(self, seq: int, classification: Mapping[str, Any]) -> None:
        for anomaly in classification.get("anomalies") or ():
            if not isinstance(anomaly, Mapping):
                continue
            code = str(anomaly.get("code") or "unknown")
            acc = self.anomalies.get(code)
            if acc is None:
                if len(self.anomalies) >= MAX_KEYS:
                    code = OTHER
                    acc = self.anomalies.setdefault(code, _AnomalyAcc())
                else:
                    acc = self.anomalies[code] = _AnomalyAcc(
                        message=str(anomaly.get("message") or ""))
            acc.count += 1
            if len(acc.records) < 10:
                acc.records.append(seq)

    def _lane(self, where: str) -> int:
        lane = self.lanes.get(where)
        if lane is None:
            if len(self.lanes) >= self.max_lanes:
                return self.lanes.setdefault(f"({OTHER} resources)", self.max_lanes)
            lane = self.lanes[where] = len(self.lanes)
        return lane

    def _remember(self, summary: RecordSummary) -> None:
        self.ring[summary.seq] = summary
        if len(self.ring) > self.ring_size:
            self.ring.popitem(last=False)
        point = Point(summary.time, summary.lane, status_class(summary.status),
                      summary.source == "injected", summary.seq)
        if point.injected and len(self.marked) < self.max_marked:
            self.marked.append(point)
        self._tick += 1
        if (self._tick - 1) % self.stride == 0:
            self.points.append(point)
            if len(self.points) >= 2 * self.max_points:
                self.points = self.points[::2]
                self.stride *= 2

    def _keep(self, decided: Iterable[Verdict]) -> None:
        for v in decided:
            kept = self.kept.setdefault((v.rule, v.status), [])
            if len(kept) >= self.keep_verdicts:
                per_rule = self.omitted.setdefault(v.rule, {})
                per_rule[v.status.value] = per_rule.get(v.status.value, 0) + 1
                continue
            kept.append(v)
            for seq in v.records:
                summary = self.ring.get(seq)
                if summary is not None and len(self.evidence) < self.max_evidence:
                    self.evidence[seq] = summary

    # ---- the end

    def finish(self) -> Report:
        self._keep(self.engine.finish())
        counts: dict[str, dict[str, int]] = {}
        for (rule, status), n in self.engine.counts.items():
            counts.setdefault(rule, {})[status.value] = n
        order = {s: n for n, s in enumerate(STATUS_ORDER)}
        rules = {r.id: n for n, r in enumerate(verdicts.RULES)}
        kept = sorted((v for vs in self.kept.values() for v in vs),
                      key=lambda v: (order[v.status], rules.get(v.rule, 99), v.time or 0))
        operations = tuple(
            Operation(m, k, acc.count, dict(acc.classes), acc.latency.to_dict())
            for (m, k), acc in sorted(self.operations.items(), key=lambda kv: -kv[1].count))
        anomalies = tuple(
            AnomalyCount(code, acc.count, acc.message, tuple(acc.records))
            for code, acc in sorted(self.anomalies.items(), key=lambda kv: -kv[1].count))
        lanes = [""] * (max(self.lanes.values(), default=-1) + 1)
        for name, index in self.lanes.items():
            lanes[index] = name
        return Report(
            source=self.source,
            limits=self.engine.limits.source,
            exchanges=self.exchanges,
            start=self.start,
            end=self.end,
            skipped=tuple(self.skipped),
            skipped_total=self.skipped_total,
            by_status=dict(self.by_status),
            by_entry=dict(self.by_entry),
            by_kind=dict(self.by_kind),
            by_source=dict(self.by_source),
            injected_rules=dict(self.injected_rules),
            operations=operations,
            anomalies=anomalies,
            verdict_counts=counts,
            verdicts=tuple(kept),
            omitted=self.omitted,
            evidence=dict(self.evidence),
            lanes=tuple(lanes),
            points=tuple(self.points),
            marked=tuple(self.marked),
            sampled_every=self.stride,
        )


def _classification(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The record's classification, or one made now for records written without it."""
    found = record.get("classification")
    if isinstance(found, Mapping):
        return found
    request = record.get("request") or {}
    response = record.get("response")
    if not isinstance(response, Mapping):
        return classify.NO_RESPONSE.to_dict()
    try:
        body = recording.decode_body(response.get("body"))
    except (ValueError, TypeError):
        body = b""
    return classify.classify(
        str(request.get("method") or ""), str(request.get("url") or ""),
        _pairs(request.get("headers")), response.get("status"), _pairs(response.get("headers")),
        body).to_dict()


def _pairs(headers: Any) -> list[tuple[str, str]]:
    if not isinstance(headers, list):
        return []
    return [(str(p[0]), str(p[1])) for p in headers
            if isinstance(p, list | tuple) and len(p) == 2]


def report_records(records: Iterable[Mapping[str, Any]],
                   limits: verdicts.Limits | None = None, source: str = "") -> Report:
    """A report over records already in hand (a list, a generator)."""
    builder = ReportBuilder(limits, source=source)
    for record in records:
        builder.add(record)
    return builder.finish()


def build_report(path: str | os.PathLike[str], limits: verdicts.Limits | None = None) -> Report:
    """Stream a recording into a report. Bad lines are counted and named, never fatal."""
    builder = ReportBuilder(limits, source=os.fspath(path))
    for item in recording.iter_records(path):
        if isinstance(item, recording.ReadIssue):
            builder.skip(item)
        else:
            builder.add(item)
    return builder.finish()


def exit_code(report: Report, fail_on: str | None) -> int:
    """0, or 1 when the report trips the `--fail-on` gate (None never trips it).

    Lines the reader skipped are reported but never trip the gate: a truncated
    last line is what a stopped proxy leaves.
    """
    if fail_on is None:
        return 0
    if fail_on not in FAIL_ON:
        raise ValueError(f"fail_on should be one of {', '.join(FAIL_ON)}, not {fail_on!r}")
    if report.failed:
        return 1
    if fail_on == "anomaly" and report.anomaly_total:
        return 1
    return 0


def render(report: Report, fmt: str) -> str:
    """The report as text, json, junit (XML) or html (one self-contained page)."""
    renderers = {"text": render_text, "json": render_json, "junit": render_junit,
                 "html": render_html}
    if fmt not in renderers:
        raise ValueError(f"format should be one of {', '.join(FORMATS)}, not {fmt!r}")
    return renderers[fmt](report)


# --------------------------------------------------------------------------- json


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- text

SOURCE_NAMES = {"forwarded": "organic (forwarded)", "injected": "injected by a scenario",
                "replayed": "replayed from a recording"}


def _when(epoch: float | None) -> str:
    stamp = recording.timestamp(epoch)
    return "?" if stamp is None else stamp.replace("T", " ")[:23] + "Z"


def _headline(report: Report) -> str:
    fail, warn = report.total(Status.FAIL), report.total(Status.WARN)
    if fail:
        return f"FAILED: {fail} title-behaviour verdict(s) failed, {warn} warning(s)"
    if warn:
        return f"PASSED with {warn} warning(s)"
    return "PASSED"


def _counts_line(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{counts.get(s.value, 0)} {s.value}" for s in STATUS_ORDER)


def render_text(report: Report) -> str:
    lines: list[str] = []
    out = lines.append
    out(f"mpsdproxy report: {report.source or '(records)'}")
    span = "" if report.start is None else \
        f" from {_when(report.start)} to {_when(report.end)} " \
        f"({(report.end or report.start) - report.start:.1f} s)"
    out(f"{report.exchanges} exchanges{span}; limits: {report.limits}")
    if report.skipped_total:
        out(f"{report.skipped_total} line(s) skipped: " +
            "; ".join(f"line {n}: {p}" for n, p in report.skipped[:3]))
    out("")
    out(_headline(report))
    out("")
    out(f"VERDICTS  ({_counts_line({s.value: report.total(s) for s in Status})})")
    width = max(len(r.title) for r in verdicts.RULES)
    for rule in verdicts.RULES:
        counts = report.verdict_counts.get(rule.id, {})
        cells = "  ".join(f"{counts.get(s.value, 0):>4} {s.value}" for s in STATUS_ORDER)
        out(f"  {rule.title:<{width}}  {cells}")
    for v in report.verdicts:
        if v.status in (Status.FAIL, Status.WARN):
            out(f"  - {v}")
    omitted = sum(n for per in report.omitted.values() for n in per.values())
    if omitted:
        out(f"  ({omitted} more verdicts counted above, not listed)")
    out("")
    out("EXCHANGES BY STATUS (catalog meaning)")
    for entry_id, count in sorted(report.by_entry.items(), key=_entry_key):
        row = _entry_row(entry_id, count)
        label = entry_id or "unlisted"
        out(f"  {count:>7}  {label:<26} {row['meaning']}")
    out("")
    out("BY SOURCE")
    for source, count in sorted(report.by_source.items()):
        out(f"  {count:>7}  {SOURCE_NAMES.get(source, source)}")
    for rule, count in sorted(report.injected_rules.items(), key=lambda kv: -kv[1]):
        out(f"  {count:>7}    rule {rule}")
    out("")
    out("BY RESOURCE KIND")
    for kind, count in sorted(report.by_kind.items(), key=lambda kv: -kv[1]):
        out(f"  {count:>7}  {kind}")
    out("")
    out("OPERATIONS (latency in ms; histogram estimates)")
    for op in report.operations:
        classes = " ".join(f"{k} {n}" for k, n in sorted(op.status_classes.items()))
        lat = op.latency
        out(f"  {op.count:>7}  {op.method} {op.kind:<16} {classes:<24} "
            f"p50 {_num(lat['p50'])}  p90 {_num(lat['p90'])}  p99 {_num(lat['p99'])}  "
            f"max {_num(lat['max'])}")
    out("")
    out(f"ANOMALIES ({report.anomaly_total})")
    for a in report.anomalies:
        out(f"  {a.count:>7}  {a.code}: {a.message} (records {', '.join(map(str, a.records))})")
    out("")
    exercised, missing = report.exercised, report.never_reached
    out(f"COVERAGE  {len(exercised)} of {len(catalog.ENTRIES)} rows of the status table "
        "exercised")
    for e in exercised:
        out(f"  yes {report.by_entry[e.id]:>7}  {e.id}")
    for e in missing:
        out(f"  NO        -  {e.id}: {e.meaning}")
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# --------------------------------------------------------------------------- junit


def render_junit(report: Report) -> str:
    suite = ET.Element("testsuite", name="mpsdproxy.verdicts")
    props = ET.SubElement(suite, "properties")
    for name, value in (("source", report.source), ("limits", report.limits),
                        ("exchanges", report.exchanges), ("anomalies", report.anomaly_total)):
        ET.SubElement(props, "property", name=name, value=str(value))
    tests = failures = skipped = 0
    numbers: Counter[str] = Counter()
    for v in report.verdicts:
        numbers[v.rule] += 1
        evidence = f" (records {', '.join(map(str, v.records))})" if v.records else ""
        case = ET.SubElement(suite, "testcase", classname=f"mpsdproxy.verdicts.{v.rule}",
                             name=f"{v.title} #{numbers[v.rule]}{evidence}", time="0")
        tests += 1
        if v.status is Status.FAIL:
            failures += 1
            failure = ET.SubElement(case, "failure", message=v.reason, type="fail")
            failure.text = str(v)
        elif v.status is Status.WARN:
            ET.SubElement(case, "system-out").text = f"WARNING: {v.summary}"
        elif v.status is Status.NOT_APPLICABLE:
            skipped += 1
            ET.SubElement(case, "skipped", message=v.reason)
        else:
            ET.SubElement(case, "system-out").text = str(v)
    for rule_id, per_status in sorted(report.omitted.items()):
        title = verdicts.RULES_BY_ID[rule_id].title if rule_id in verdicts.RULES_BY_ID \
            else rule_id
        for status, n in sorted(per_status.items()):
            case = ET.SubElement(suite, "testcase", classname=f"mpsdproxy.verdicts.{rule_id}",
                                 name=f"{title}: {n} more {status} verdicts (not listed)",
                                 time="0")
            tests += 1
            if status == Status.FAIL.value:
                failures += 1
                ET.SubElement(case, "failure", message=f"{n} more failures", type="fail")
    for name, value in (("tests", tests), ("failures", failures), ("errors", 0),
                        ("skipped", skipped), ("time", "0")):
        suite.set(name, str(value))
    root = ET.Element("testsuites", name="mpsdproxy report", tests=str(tests),
                      failures=str(failures), errors="0", skipped=str(skipped))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") \
        + "\n"


# --------------------------------------------------------------------------- html

COLOURS = {"1xx": "#757575", "2xx": "#2e7d32", "3xx": "#1565c0", "4xx": "#ef6c00",
           "5xx": "#c62828", NO_RESPONSE: "#424242"}
STATUS_COLOURS = {Status.PASS: "#2e7d32", Status.WARN: "#b26a00", Status.FAIL: "#c62828",
                  Status.NOT_APPLICABLE: "#757575"}

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1c1c1c;
background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:4px}
.sub{color:#555;margin:0 0 16px}
.banner{padding:14px 18px;border-radius:6px;color:#fff;font-size:19px;font-weight:600}
.banner.fail{background:#c62828}.banner.warn{background:#b26a00}.banner.pass{background:#2e7d32}
.note{color:#555;font-size:14px;max-width:900px}
table{border-collapse:collapse;width:100%;background:#fff;margin:8px 0}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eee;vertical-align:top}
th{background:#f0f0f0;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums;width:1%;white-space:nowrap}
.badge{display:inline-block;min-width:84px;text-align:center;border-radius:4px;color:#fff;
font-size:12px;font-weight:700;padding:2px 6px;text-transform:uppercase}
.pass{background:#2e7d32}.warn{background:#b26a00}.fail{background:#c62828}
.not-applicable{background:#757575}
tr.target:target{background:#fff59d}
.no{color:#c62828;font-weight:600}.yes{color:#2e7d32;font-weight:600}
svg{background:#fff;border:1px solid #ddd;max-width:100%}
.legend span{display:inline-block;margin-right:16px}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:5px}
code{font-size:13px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badge(status: Status) -> str:
    label = "n/a" if status is Status.NOT_APPLICABLE else status.value
    return f'<span class="badge {status.value}">{_e(label)}</span>'


def _record_links(report: Report, seqs: Iterable[int]) -> str:
    links = []
    for seq in seqs:
        if seq in report.evidence:
            links.append(f'<a href="#record-{seq}">#{seq}</a>')
        else:
            links.append(f"#{seq}")
    return ", ".join(links)


def _html_verdicts(report: Report) -> str:
    rows = []
    for rule in verdicts.RULES:
        counts = report.verdict_counts.get(rule.id, {})
        cells = "".join(f'<td class="n">{counts.get(s.value, 0)}</td>' for s in STATUS_ORDER)
        rows.append(f"<tr><td><b>{_e(rule.title)}</b><br><small>{_e(rule.checks)}</small></td>"
                    f"<td>{_e(rule.group.value)}</td>{cells}</tr>")
    summary = ("<table><tr><th>Check</th><th>Kind</th><th>fail</th><th>warn</th><th>pass</th>"
               f"<th>n/a</th></tr>{''.join(rows)}</table>")
    items = []
    for n, v in enumerate(report.verdicts, start=1):
        gaps = ", ".join(f"{g:.0f} ms" for g in v.gaps_ms)
        items.append(
            f'<tr id="verdict-{n}"><td>{_badge(v.status)}</td><td><b>{_e(v.title)}</b></td>'
            f"<td>{_e(v.reason)}</td><td>{_record_links(report, v.records) or '-'}</td>"
            f"<td>{_e(gaps) or '-'}</td><td>{_e(v.resource or '')}</td></tr>")
    detail = ("<table><tr><th>Result</th><th>Check</th><th>Why</th><th>Records</th>"
              f"<th>Gaps</th><th>Where</th></tr>{''.join(items)}</table>")
    omitted = sum(n for per in report.omitted.values() for n in per.values())
    more = f'<p class="note">{omitted} more verdicts are counted above but not listed.</p>' \
        if omitted else ""
    return summary + "<h3>Each verdict</h3>" + detail + more


def _html_timeline(report: Report) -> str:
    if report.start is None or not report.lanes:
        return '<p class="note">No exchanges.</p>'
    left, right, top, lane_h = 200, 40, 16, 20
    width = 1140
    height = top + lane_h * len(report.lanes) + 40
    t0, t1 = report.start, max(report.end or report.start, report.start + 1e-3)
    span = t1 - t0

    def x(t: float) -> float:
        return round(left + (t - t0) / span * (width - left - right), 1)

    def y(lane: int) -> float:
        return top + lane * lane_h + lane_h / 2

    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             'role="img" aria-label="Timeline of exchanges by resource">']
    for lane, name in enumerate(report.lanes):
        shade = "#f7f7f7" if lane % 2 else "#ffffff"
        parts.append(f'<rect x="0" y="{top + lane * lane_h}" width="{width}" '
                     f'height="{lane_h}" fill="{shade}"/>')
        parts.append(f'<text x="6" y="{y(lane) + 4}" font-size="12">{_e(name[:30])}</text>')
    axis_y = top + lane_h * len(report.lanes) + 14
    for i in range(6):
        t = t0 + span * i / 5
        parts.append(f'<text x="{x(t)}" y="{axis_y}" font-size="11" text-anchor="middle">'
                     f"+{t - t0:.1f} s</text>")
    for p in report.points:
        parts.append(f'<circle cx="{x(p.time)}" cy="{y(p.lane)}" r="3" '
                     f'fill="{COLOURS.get(p.status_class, "#000")}"><title>#{p.seq} '
                     f"{_e(p.status_class)}</title></circle>")
    for p in report.marked:
        cx, cy = x(p.time), y(p.lane)
        parts.append(f'<path d="M{cx} {cy - 6}L{cx + 6} {cy}L{cx} {cy + 6}L{cx - 6} {cy}Z" '
                     f'fill="{COLOURS.get(p.status_class, "#000")}" stroke="#000" '
                     f'stroke-width="1.2"><title>#{p.seq} injected fault</title></path>')
    failing = sorted({s for v in report.verdicts if v.status is Status.FAIL for s in v.records
                      if s in report.evidence})
    for seq in failing:
        s = report.evidence[seq]
        parts.append(f'<a href="#record-{seq}"><circle cx="{x(s.time)}" cy="{y(s.lane)}" r="8" '
                     'fill="none" stroke="#c62828" stroke-width="2.5">'
                     f"<title>#{seq}: behind a failed verdict</title></circle></a>")
    parts.append("</svg>")
    legend = "".join(f'<span><i class="dot" style="background:{c}"></i>{_e(k)}</span>'
                     for k, c in COLOURS.items() if k != "1xx")
    legend += ('<span>&#9670; injected fault</span>'
               '<span style="color:#c62828">&#9711; record behind a failed verdict (click)</span>')
    note = ""
    if report.sampled_every > 1:
        note = (f'<p class="note">Every {report.sampled_every}th exchange is drawn '
                f"({len(report.points)} of {report.exchanges}); injected faults and the "
                "records behind failed verdicts are always drawn.</p>")
    return "".join(parts) + f'<p class="legend">{legend}</p>' + note


def _html_table(headers: Iterable[str], rows: Iterable[Iterable[Any]],
                numeric: Iterable[int] = ()) -> str:
    numeric = set(numeric)
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{_e(c)}</td>' if i in numeric else f"<td>{c}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html_totals(report: Report) -> str:
    entries = _html_table(
        ("Exchanges", "Status", "Row of the table", "What it means"),
        ((n, _e(_entry_row(i, n)["status"] or "-"), f"<code>{_e(i or 'unlisted')}</code>",
          _e(_entry_row(i, n)["meaning"]))
         for i, n in sorted(report.by_entry.items(), key=_entry_key)), numeric=(0,))
    sources = _html_table(
        ("Exchanges", "Who answered"),
        [(n, _e(SOURCE_NAMES.get(s, s))) for s, n in sorted(report.by_source.items())]
        + [(n, f"&nbsp;&nbsp;rule <code>{_e(r)}</code>") for r, n in
           sorted(report.injected_rules.items(), key=lambda kv: -kv[1])], numeric=(0,))
    ops = _html_table(
        ("Exchanges", "Operation", "Status classes", "p50 ms", "p90 ms", "p99 ms", "max ms"),
        ((op.count, f"<code>{_e(op.method)} {_e(op.kind)}</code>",
          _e(" ".join(f"{k}: {n}" for k, n in sorted(op.status_classes.items()))),
          _num(op.latency["p50"]), _num(op.latency["p90"]), _num(op.latency["p99"]),
          _num(op.latency["max"])) for op in report.operations), numeric=(0, 3, 4, 5, 6))
    kinds = _html_table(("Exchanges", "Resource kind"),
                        ((n, _e(k)) for k, n in
                         sorted(report.by_kind.items(), key=lambda kv: -kv[1])), numeric=(0,))
    return (f"<h3>By status and meaning</h3>{entries}<h3>By source</h3>{sources}"
            f"<h3>By resource kind</h3>{kinds}<h3>By operation (latency from a histogram of "
            f"log-spaced buckets)</h3>{ops}")


def _html_coverage(report: Report) -> str:
    rows = []
    for e in catalog.ENTRIES:
        n = report.by_entry.get(e.id, 0)
        mark = '<span class="yes">yes</span>' if n else '<span class="no">never reached</span>'
        rows.append((mark, n, f"<code>{_e(e.id)}</code>", _e(e.meaning)))
    return (f'<p>{len(report.exercised)} of {len(catalog.ENTRIES)} rows of the status table '
            "were exercised by this pass. The rows never reached are what it left untested.</p>"
            + _html_table(("Exercised", "Exchanges", "Row", "Meaning"), rows, numeric=(1,)))


def _html_anomalies(report: Report) -> str:
    if not report.anomalies:
        return "<p>Every response matched its row of the status table.</p>"
    return _html_table(("Count", "Anomaly", "Message", "Records"),
                       ((a.count, f"<code>{_e(a.code)}</code>", _e(a.message),
                         _record_links(report, a.records)) for a in report.anomalies),
                       numeric=(0,))


def _html_evidence(report: Report) -> str:
    if not report.evidence:
        return "<p>No verdict points to a record.</p>"
    rows = []
    for seq, s in sorted(report.evidence.items()):
        who = SOURCE_NAMES.get(s.source, s.source) + (f" (rule {s.rule})" if s.rule else "")
        rows.append(
            f'<tr id="record-{seq}" class="target"><td class="n">{seq}</td>'
            f"<td>{_e(_when(s.time))}</td><td><code>{_e(s.method)} {_e(s.where)}</code></td>"
            f"<td>{_e(s.status if s.status is not None else 'no response')}</td>"
            f"<td><code>{_e(s.entry or '-')}</code></td><td>{_e(who)}</td></tr>")
    return ("<table><tr><th>Record</th><th>Time (UTC)</th><th>Request</th><th>Status</th>"
            f"<th>Row</th><th>Answered by</th></tr>{''.join(rows)}</table>")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def render_html(report: Report) -> str:
    """One self-contained page: inline CSS and SVG, no script, nothing fetched."""
    fail, warn = report.total(Status.FAIL), report.total(Status.WARN)
    level = "fail" if fail else "warn" if warn else "pass"
    checks = len(verdicts.RULES)
    if fail:
        failed_rules = sum(1 for r in verdicts.RULES
                           if report.verdict_counts.get(r.id, {}).get(Status.FAIL.value))
        banner = (f"The title failed {failed_rules} of {checks} behaviour checks "
                  f"({_plural(fail, 'failed verdict')}, {_plural(warn, 'warning')})")
    elif warn:
        banner = f"The title passed every behaviour check, with {_plural(warn, 'warning')}"
    else:
        banner = "The title passed every behaviour check"
    span = "" if report.start is None else (
        f" \N{MIDDLE DOT} {_when(report.start)} to {_when(report.end)}, "
        f"{(report.end or report.start) - report.start:.1f} s")
    skipped = f", {report.skipped_total} unreadable line(s) skipped" \
        if report.skipped_total else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mpsdproxy report: {_e(os.path.basename(report.source) or 'records')}</title>
<style>{CSS}</style></head>
<body><main>
<h1>Session directory report</h1>
<p class="sub">{_e(report.source)} &middot; {report.exchanges} exchanges{_e(span)}{_e(skipped)}</p>
<div class="banner {level}" id="outcome">{_e(banner)}</div>
<p class="note">A game title talked to the Xbox Multiplayer Session Directory through
mpsdproxy, which recorded every exchange and may have injected faults from a scenario (rows of
the status table such as 503, 429 and 412). This page judges what the title did next: each
<b>check</b> below passes or fails (waiting out Retry-After, backing off, re-reading after a
412, not repeating a conflicting write), or warns about a call pattern the service's rate
limits and the Xbox Live Trace Analyzer frown on. Record numbers link to the exchanges behind
a verdict. Limits: {_e(report.limits)}.</p>
<h2>Checks</h2>
{_html_verdicts(report)}
<h2>Timeline</h2>
<p class="note">Each dot is one exchange, on the row of the resource it named, coloured by
the class of its status code.</p>
{_html_timeline(report)}
<h2>What happened</h2>
{_html_totals(report)}
<h2>Coverage of the status table</h2>
{_html_coverage(report)}
<h2>Responses that departed from the table ({report.anomaly_total})</h2>
{_html_anomalies(report)}
<h2>Records behind the verdicts</h2>
{_html_evidence(report)}
</main></body></html>
"""
