"""Building a report: one pass over the records into bounded aggregates.

Every record becomes a `model.Exchange` (`recording.to_exchange`), goes
through the verdict engine and into the aggregates below; every websocket
message record goes to the verdict engine too, in order with the exchanges,
and into the RTA section (`report.rta`: connections, subscriptions, taps per
session, and each 412 linked to the tap before it), so a recording of
any length reports in flat memory. A record no wire could carry (a status of
99999, CR/LF in a header) is counted as a skipped line and named, never fatal.

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
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from mpsdproxy import classify
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import verdicts
from mpsdproxy.recording import messages as ws
from mpsdproxy.report.bounded import MAX_KEYS
from mpsdproxy.report.bounded import OTHER
from mpsdproxy.report.bounded import AnomalyAcc
from mpsdproxy.report.bounded import Capped
from mpsdproxy.report.bounded import OpAcc
from mpsdproxy.report.data import FAIL_ON
from mpsdproxy.report.data import STATUS_ORDER
from mpsdproxy.report.data import AnomalyCount
from mpsdproxy.report.data import Operation
from mpsdproxy.report.data import Point
from mpsdproxy.report.data import RecordSummary
from mpsdproxy.report.data import Report
from mpsdproxy.report.data import status_class
from mpsdproxy.report.rta import RtaAcc
from mpsdproxy.resources import Kind
from mpsdproxy.verdicts import Status
from mpsdproxy.verdicts import Verdict

__all__ = ["ReportBuilder", "build_report", "read_into", "report_records", "exit_code"]

MAX_SKIPPED = 20
#: How an exchange whose URL names no host is listed among the other hosts.
NO_HOST = "(no host)"


# --------------------------------------------------------------------------- building


class ReportBuilder:
    """Feeds records to the verdict engine and keeps bounded aggregates for the report."""

    def __init__(self, limits: verdicts.Limits | None = None, *, source: str = "",
                 max_points: int = 1500, max_marked: int = 400, keep_verdicts: int = 50,
                 ring: int = 4096, max_evidence: int = 2000, max_lanes: int = 24) -> None:
        self.limits = limits or verdicts.default_limits()
        self.engine = verdicts.Engine(self.limits)
        self.source = source
        self.max_points = max_points
        self.max_marked = max_marked
        self.keep_verdicts = keep_verdicts
        self.ring_size = ring
        self.max_evidence = max_evidence
        self.max_lanes = max_lanes
        self.offered = 0
        self.exchanges = 0
        self.mpsd_exchanges = 0
        self.other_hosts = Capped()
        self.start: float | None = None
        self.end: float | None = None
        self.skipped: list[tuple[int, str]] = []
        self.skipped_total = 0
        self.by_status = Capped()
        self.by_entry = Capped()
        self.by_kind = Capped()
        self.by_source = Capped()
        self.injected_rules = Capped()
        self.operations: dict[tuple[str, str], OpAcc] = {}
        self.anomalies: dict[str, AnomalyAcc] = {}
        self.kept: dict[tuple[str, Status], list[Verdict]] = {}
        self.omitted: dict[str, dict[str, int]] = {}
        self.ring: OrderedDict[int, RecordSummary] = OrderedDict()
        self.evidence: dict[int, RecordSummary] = {}
        self.lanes: dict[str, int] = {}
        self.points: list[Point] = []
        self.marked: list[Point] = []
        self.stride = 1
        self.tick = 0
        self.rta = RtaAcc()

    # ---- per record

    def add(self, record: Mapping[str, Any], line: int | None = None) -> list[Verdict]:
        """Take in one record (from `line` of the file, else the n-th offered); returns the
        verdicts it decided. A record no wire could carry is skipped and named."""
        self.offered += 1
        line = self.offered if line is None else line
        if ws.is_message(record):
            return self.add_message(record, line)
        problem = recording.check_outline(dict(record))
        if problem is not None:
            self.skip(line, problem)
            return []
        try:
            exchange = recording.to_exchange(record)
        except ValueError as e:  # model.ModelError is a ValueError
            self.skip(line, f"record {record.get('seq')}: {e}")
            return []
        return self.add_exchange(exchange, _classification(record, exchange))

    def add_message(self, record: Mapping[str, Any], line: int | None = None
                    ) -> list[Verdict]:
        """Take in one websocket message record: into the RTA section, and to the verdict
        engine in order with the exchanges (`Engine.feed_message`)."""
        problem = ws.check_message(record)
        if problem is not None:
            self.skip(self.offered if line is None else line,
                      f"record {record.get('seq')}: {problem}")
            return []
        self.rta.message(record)
        decided = self.engine.feed_message(ws.from_record(record))
        self._keep(decided)
        return decided

    def add_exchange(self, exchange: model.Exchange,
                     classification: Mapping[str, Any]) -> list[Verdict]:
        """Take in one exchange (seq set) and its classification as a dict.

        An exchange that is not MPSD traffic (`classify.is_mpsd`) is only counted
        by host: whatever classification a record stored for it, it is in no row,
        anomaly, coverage, operation or timeline (the verdict engine skips it too).
        """
        decided = self.engine.feed(exchange)
        self.exchanges += 1
        self.rta.exchange(exchange, _where(exchange))
        start, end = _times(exchange)
        if start is not None and end is not None:
            self.start = start if self.start is None else min(self.start, start)
            self.end = end if self.end is None else max(self.end, end)
        if not classify.is_mpsd(exchange):
            self.other_hosts.add(exchange.request.host or NO_HOST)
            self._keep(decided)
            return decided
        self.mpsd_exchanges += 1
        return self._add_mpsd(exchange, classification, start, decided)

    def _add_mpsd(self, exchange: model.Exchange, classification: Mapping[str, Any],
                  start: float | None, decided: list[Verdict]) -> list[Verdict]:
        entry = classification.get("id")
        entry = entry if isinstance(entry, str) else None
        source = str(exchange.provenance.get("source") or "forwarded")
        rule = exchange.provenance.get("rule") if source == "injected" else None
        rule = None if rule is None else str(rule)
        seq = exchange.seq or 0
        method = exchange.request.method.upper()
        self.by_status.add(exchange.status)
        self.by_entry.add(entry)
        self.by_kind.add(exchange.resource.kind.value)
        self.by_source.add(source)
        if rule is not None:
            self.injected_rules.add(rule)
        self._operation(method, exchange)
        self._anomalies(seq, classification)
        where = _where(exchange)
        self._remember(RecordSummary(seq, start, method, where, exchange.status, entry, source,
                                     rule, self._lane(where)))
        self._keep(decided)
        return decided

    def skip(self, line: int, problem: str) -> None:
        """A line that could not be used: counted, and the first few named."""
        self.skipped_total += 1
        if len(self.skipped) < MAX_SKIPPED:
            self.skipped.append((line, problem))

    def _operation(self, method: str, exchange: model.Exchange) -> None:
        key = (method or "?", exchange.resource.kind.value)
        acc = self.operations.get(key)
        if acc is None:
            if len(self.operations) >= MAX_KEYS:
                key = (OTHER, OTHER)
                acc = self.operations.setdefault(key, OpAcc())
            else:
                acc = self.operations[key] = OpAcc()
        acc.count += 1
        acc.classes[status_class(exchange.status)] += 1
        duration = exchange.duration_ms
        acc.latency.add(float(duration) if duration is not None else 0.0)

    def _anomalies(self, seq: int, classification: Mapping[str, Any]) -> None:
        for anomaly in classification.get("anomalies") or ():
            if not isinstance(anomaly, Mapping):
                continue
            code = str(anomaly.get("code") or "unknown")
            acc = self.anomalies.get(code)
            if acc is None:
                if len(self.anomalies) >= MAX_KEYS:
                    code = OTHER
                    acc = self.anomalies.setdefault(code, AnomalyAcc())
                else:
                    acc = self.anomalies[code] = AnomalyAcc(
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
        if summary.time is None:
            return  # nowhere on the timeline
        point = Point(summary.time, summary.lane, status_class(summary.status),
                      summary.source == "injected", summary.seq)
        if point.injected and len(self.marked) < self.max_marked:
            self.marked.append(point)
        self.tick += 1
        if (self.tick - 1) % self.stride == 0:
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
            limits=self.limits.source,
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
            looked_at={r.id: self.engine.looked_at(r.id).to_dict()
                       for r in verdicts.RULES if r.id in self.engine.looked},
            verdicts=tuple(kept),
            omitted=self.omitted,
            evidence=dict(self.evidence),
            lanes=tuple(lanes),
            points=tuple(self.points),
            marked=tuple(self.marked),
            sampled_every=self.stride,
            mpsd_exchanges=self.mpsd_exchanges,
            other_hosts=dict(self.other_hosts),
            rta=self.rta.finish(),
        )


def _times(exchange: model.Exchange) -> tuple[float | None, float | None]:
    """(start, end) for the timeline: a missing start is the end, a missing or early
    end is the start; both None when the record said neither."""
    start = exchange.start if exchange.start is not None else exchange.end
    end = exchange.end if exchange.end is not None else start
    if start is not None and end is not None and end < start:
        end = start
    return start, end


def _where(exchange: model.Exchange) -> str:
    """The resource for people: sessions/lobby-1, handles/query, else the path."""
    resource = exchange.resource
    if resource.kind is Kind.UNKNOWN:
        return exchange.request.path.split("?", 1)[0].lower()
    return resource.short


def _classification(record: Mapping[str, Any], exchange: model.Exchange) -> Mapping[str, Any]:
    """The record's stored classification, or one made now for records written without."""
    found = record.get("classification")
    if isinstance(found, Mapping):
        return found
    return classify.classify(exchange).to_dict()


def report_records(records: Iterable[Mapping[str, Any]],
                   limits: verdicts.Limits | None = None, source: str = "") -> Report:
    """A report over records already in hand (a list, a generator); a record that
    cannot be used is skipped and named by its position."""
    builder = ReportBuilder(limits, source=source)
    for record in records:
        builder.add(record)
    return builder.finish()


def build_report(path: str | os.PathLike[str], limits: verdicts.Limits | None = None,
                 progress: Callable[[int], None] | None = None) -> Report:
    """Stream a recording into a report. Bad lines are counted and named, never fatal.
    `progress`, when given, is told how many lines have been read so far (the CLI shows a
    counter with it)."""
    return read_into(ReportBuilder(limits, source=os.fspath(path)), path, progress)


def read_into(builder: ReportBuilder, path: str | os.PathLike[str],
              progress: Callable[[int], None] | None = None) -> Report:
    """Stream a recording into `builder` (a `ReportBuilder` or one that also stores what
    it decides) and finish it: the one reading loop of every report."""
    for count, (line, item) in enumerate(recording.numbered(path, messages=True), 1):
        if isinstance(item, recording.ReadIssue):
            builder.skip(item.line, item.problem)
        else:
            builder.add(item, line)
        if progress is not None:
            progress(count)
    return builder.finish()


def exit_code(report: Report, fail_on: str | None) -> int:
    """0, or 1 when the report trips the `--fail-on` gate (None never trips it).

    A recording without session-directory traffic trips any gate: a CI gate must
    not pass a capture in which there was nothing to judge. Lines the reader
    skipped are reported but never trip the gate: a truncated last line is what
    a stopped proxy leaves.
    """
    if fail_on is None:
        return 0
    if fail_on not in FAIL_ON:
        raise ValueError(f"fail_on should be one of {', '.join(FAIL_ON)}, not {fail_on!r}")
    if report.no_mpsd or report.failed:
        return 1
    if fail_on == "anomaly" and report.anomaly_total:
        return 1
    return 0
