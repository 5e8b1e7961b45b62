"""The call-pattern rules: call-rate budgets and the Xbox Live Trace Analyzer's rules
(protocol notes §5.4). They warn, and fail only at the certification line (ten
times the sustained budget).

The budgets count calls in `fgrl.SlidingWindow`s, the one FGRL window the
injector's throttle and the stand-in use too, so a verdict says "over budget"
exactly where the service would answer 429.
"""

from __future__ import annotations

import enum
import heapq
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import NamedTuple

from mpsdproxy import fgrl
from mpsdproxy.verdicts.analyzer import analyzer_stats
from mpsdproxy.verdicts.analyzer import burst_size
from mpsdproxy.verdicts.analyzer import excess_windows
from mpsdproxy.verdicts.base import MAX_EVIDENCE
from mpsdproxy.verdicts.base import NOTHING
from mpsdproxy.verdicts.base import BaseRule
from mpsdproxy.verdicts.base import Concern
from mpsdproxy.verdicts.base import Decided
from mpsdproxy.verdicts.base import Status
from mpsdproxy.verdicts.base import Verdict
from mpsdproxy.verdicts.base import gaps
from mpsdproxy.verdicts.base import ms
from mpsdproxy.verdicts.limits import ServiceLimits
from mpsdproxy.verdicts.rta_rules import polling_reason
from mpsdproxy.verdicts.rta_state import Listening
from mpsdproxy.verdicts.state import Facts
from mpsdproxy.verdicts.state import HostKey
from mpsdproxy.verdicts.state import Keyed

__all__ = [
    "RateBudgetRule",
    "BurstRule",
    "RepeatedCallsRule",
    "PollingRule",
    "SmallBatchRule",
    "BatchFrequencyRule",
]

#: A console quiet on a host this long has ended its trace there (burst is decided).
IDLE_S = 3600
#: Most calls held per console and host for burst detection (judged in parts past it).
BURST_HOLD = 50_000
#: Most calls held for burst detection in all (24 bytes each).
BURST_HOLD_TOTAL = 500_000
#: Most calls held for their turn in request-time order (repeated calls).
REORDER_HOLD = 10_000


class _Over(enum.Flag):
    """The budget checks a user is over; reported in this order."""

    NONE = 0
    CERTIFICATION = enum.auto()
    SUSTAINED = enum.auto()
    BURST = enum.auto()


#: The checks over their limit, by (at the certification line, over the sustained limit,
#: over the burst limit): the flags combined once here rather than for every call.
_OVER_OF: dict[tuple[bool, bool, bool], _Over] = {
    (cert, sustained, burst): (_Over.CERTIFICATION if cert else _Over.NONE)
    | (_Over.SUSTAINED if sustained else _Over.NONE) | (_Over.BURST if burst else _Over.NONE)
    for cert in (False, True) for sustained in (False, True) for burst in (False, True)}


@dataclass(slots=True)
class _Budget:
    burst: fgrl.SlidingWindow
    sustained: fgrl.SlidingWindow
    over: _Over = _Over.NONE  # the checks reported that are still over their limit


@dataclass(slots=True)
class _Peak:
    burst: int = 0
    sustained: int = 0


class RateBudgetRule(BaseRule):
    """Sliding-window request counts per user and service against the FGRL budgets.

    The budgets are the Trace Analyzer's per-service CallFrequency limits
    (data/limits.yaml; CallFrequencyRule.cs: over the sustained or burst limit
    warns, ten times the sustained limit is the certification error), counted
    per user (`Facts.client`, the XBL user hash) and per service or sub-path
    limit (`Facts.service`), as the service's FGRL counts them. Every call
    counts, whoever sent it: the service throttles a user's calls whatever
    their user agent.

    Over the burst or the sustained limit warns (the service would throttle
    from there); reaching the certification line fails. Each is reported once
    until the count falls back under its limit. The sustained window keeps as
    many calls as the certification line needs to be seen reached.
    """

    id = "rate-budget"
    nothing = "no requests"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        #: (client, service) -> that caller's windows against that service's budgets
        self.budgets: Keyed[tuple[str, str], _Budget] = Keyed(self.max_keys)
        self.peaks: dict[str, _Peak] = {}
        self.services = self.limits.by_name()

    def feed(self, ex: Facts) -> Decided:
        # One call, local names: this runs for every MPSD exchange.
        self.seen += 1
        service, start = ex.service, ex.start
        limits = self.services[service]
        key = (ex.client, service)
        budget = self.budgets.get(key)
        if budget is None:
            budget = _Budget(limits.burst.sliding(),
                             limits.sustained.sliding(keep=limits.certification))
        burst = budget.burst.add(start, ex.seq)
        sustained = budget.sustained.add(start, ex.seq)
        peak = self.peaks.get(service)
        if peak is None:
            peak = self.peaks[service] = _Peak()
        if burst > peak.burst:
            peak.burst = burst
        if sustained > peak.sustained:
            peak.sustained = sustained
        # (Flags compared by identity: `bool()` of a flag is a Python call, on every call.)
        new = _Over.NONE
        burst_limit, sustained_limit = limits.burst.calls, limits.sustained.calls
        if (budget.over is not _Over.NONE or burst > burst_limit
                or sustained > sustained_limit):
            over = _OVER_OF[(sustained >= limits.certification,
                             sustained > sustained_limit, burst > burst_limit)]
            if over is not budget.over:  # the same checks as before: nothing new, nor to keep
                new = over & ~budget.over
                budget.over = over
        self.budgets.put(key, budget, start + limits.sustained.seconds)
        return NOTHING if new is _Over.NONE else self._report(new, budget, ex, limits)

    def _report(self, new: _Over, budget: _Budget, ex: Facts,
                limits: ServiceLimits) -> list[Verdict]:
        """The verdicts of the checks that just went over."""
        checks = (
            (_Over.CERTIFICATION, budget.sustained, Status.FAIL, limits.certification,
             limits.sustained.seconds, "the certification line"),
            (_Over.SUSTAINED, budget.sustained, Status.WARN, limits.sustained.calls,
             limits.sustained.seconds, "the sustained limit: the service would throttle"),
            (_Over.BURST, budget.burst, Status.WARN, limits.burst.calls, limits.burst.seconds,
             "the burst limit: the service would throttle"),
        )
        out: list[Verdict] = []
        for flag, window, status, limit, seconds, what in checks:
            if flag not in new or window.first is None:
                continue
            first_time, first_seq = window.first
            span = ms(ex.start - first_time)
            out.append(self.verdict(
                status,
                f"{len(window.entries)} requests to {ex.service} within {span:.0f} ms (records "
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
        for name, peak in self.peaks.items():
            s = self.limits.service(name)
            parts.append(f"{name} peak {peak.burst}/{s.burst.calls} per {s.burst.seconds:g} s, "
                         f"{peak.sustained}/{s.sustained.calls} per {s.sustained.seconds:g} s")
        return "every user stayed within budget: " + "; ".join(parts)


@dataclass(slots=True)
class _History:
    """One console's calls to one host: start (µs), elapsed (ms), seq, in arrival order."""

    starts: array = field(default_factory=lambda: array("q"))
    elapsed: array = field(default_factory=lambda: array("q"))
    seqs: array = field(default_factory=lambda: array("q"))
    last: float = 0.0


class BurstRule(BaseRule):
    """The Trace Analyzer's BurstDetection, on the whole trace as it runs it.

    What the analyzer does (BurstDetectionRule.cs Run, ~L20-L45): per console and
    host (RulesEngine.cs RunRulesOnData; rule "*.*" of Rules.json), over the calls
    it analyses sorted by request time, it takes the trace's mean gap and
    variance (`analyzer_stats`), allows burst size = ceil(1000 / mean gap) +
    ceil(2 * 1000 / sqrt(variance)) calls per `burst_window_ms`
    (BurstDetectionWindowMs 2000), finds the runs above it
    (`excess_windows`) and warns for each run of at least `burst_min_calls`
    (BurstSizeToDetect 3). No warm-up: a trace of any length is judged.

    The statistics are the whole trace's, so the calls are held per console and
    host (start, elapsed, seq: 24 bytes a call) and judged at the end, when a
    console has been quiet on a host for IDLE_S, or in parts of BURST_HOLD calls;
    over BURST_HOLD_TOTAL held calls the longest-quiet history is judged first.
    """

    id = "burst"
    nothing = "no calls the Trace Analyzer analyses"
    concern = Concern.ANALYSED

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.held: OrderedDict[tuple[str, str], _History] = OrderedDict()
        self.total = 0

    def feed(self, ex: Facts) -> Decided:
        if not ex.analysed:
            return NOTHING
        self.seen += 1
        key = (ex.console, ex.host)
        history = self.held.get(key)
        if history is None:
            history = self.held[key] = _History()
        self.held.move_to_end(key)
        start = round(ex.start * 1_000_000)
        history.starts.append(start)
        history.elapsed.append((round(ex.end * 1_000_000) - start) // 1000)
        history.seqs.append(ex.seq)
        history.last = max(history.last, ex.start)
        self.total += 1
        out: list[Verdict] = []
        if len(history.seqs) >= BURST_HOLD:
            out.extend(self._decide(key, self.held.pop(key)))
        while self.total > BURST_HOLD_TOTAL and self.held:
            out.extend(self._decide(*self.held.popitem(last=False)))
        return out or NOTHING

    def _decide(self, key: tuple[str, str], history: _History) -> list[Verdict]:
        self.total -= len(history.seqs)
        order = sorted(range(len(history.seqs)), key=history.starts.__getitem__)
        starts = [history.starts[i] for i in order]
        mean_gap, variance = analyzer_stats([(history.starts[i], history.elapsed[i])
                                             for i in order])
        size = burst_size(mean_gap, variance)
        window = self.settings.burst_window_ms
        out = []
        for first, end in excess_windows(starts, window, size):
            if end - first < self.settings.burst_min_calls:
                continue
            seqs = [history.seqs[i] for i in order[first:end]]
            span = (starts[end - 1] - starts[first]) // 1000
            out.append(self.verdict(
                Status.WARN,
                f"burst of {end - first} calls to {key[1] or 'the service'} within {span} ms "
                f"(records {seqs[0]}..{seqs[-1]}): more than the {size} calls per "
                f"{window:.0f} ms this console's rate over the trace allows (ceil(1000 / "
                f"{mean_gap} ms mean gap) + ceil(2 * 1000 / sqrt({variance})))",
                seqs, (float(span),), key[0], key[1], starts[end - 1] / 1_000_000))
        return out

    def expire(self, now: float) -> Decided:
        out: list[Verdict] = []
        for key in [k for k, h in self.held.items() if h.last + IDLE_S <= now]:
            out.extend(self._decide(key, self.held.pop(key)))
        return out or NOTHING

    def finish(self) -> Decided:
        out: list[Verdict] = []
        while self.held:
            out.extend(self._decide(*self.held.popitem(last=False)))
        return out

    def summary(self) -> str:
        return f"no burst in {self.seen} analysed calls"


#: "The same call" for RepeatedCalls and PollingDetection: console, host, URI as sent, body.
_SameCall = tuple[str, str, str, int]


class _Pending(NamedTuple):
    """An analysed call waiting for the calls that started before it (reorder grace)."""

    start_us: int
    order: int
    key: _SameCall
    seq: int
    start: float
    social: bool
    label: str
    where: str


@dataclass(slots=True)
class _Anchor:
    """A call the analyzer visits as `thisItem`, and the later calls in its window."""

    start_us: int
    first: _Pending
    members: list[_Pending] = field(default_factory=list)


class RepeatedCallsRule(BaseRule):
    """The Trace Analyzer's RepeatedCalls, as it runs it.

    What the analyzer does (RepeatedCallsRule.cs Run, ~L40-L75), per console and
    host, over the calls it analyses in request-time order: each call not sent
    by SocialManager and not already part of a finding opens a group of every
    *strictly later* call (by request time: a call at the same instant is not
    later) less than `repeat_interval_ms` after it (the gap in whole ms,
    truncated; MinAllowedRepeatIntervalMs 5000) with the same URI (as sent, case
    kept; the method is not compared) and the same body; a group with a second
    call is one warning, and all its calls are then skipped as openers. Two calls
    at the same instant each open a group, so a later repeat of both is in two
    findings, as in the analyzer.

    Calls are taken in request-time order: each is held `reorder_grace_s` (at
    most REORDER_HOLD of them) so a slow request recorded late still comes in
    its place; a group is decided when its window has passed.
    """

    id = "repeated-calls"
    nothing = "no calls the Trace Analyzer analyses"
    concern = Concern.ANALYSED

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pending: list[_Pending] = []
        self.order = 0
        self.open: Keyed[_SameCall, list[_Anchor]] = Keyed(self.max_keys)

    def feed(self, ex: Facts) -> Decided:
        if not ex.analysed:
            return NOTHING
        self.seen += 1
        self.order += 1
        heapq.heappush(self.pending, _Pending(
            round(ex.start * 1_000_000), self.order, (ex.console, ex.host, ex.uri, ex.body_hash),
            ex.seq, ex.start, ex.social, ex.label, ex.where))
        out: list[Verdict] = []
        while len(self.pending) > REORDER_HOLD:
            out.extend(self._take(heapq.heappop(self.pending)))
        return out or NOTHING

    def _take(self, call: _Pending) -> list[Verdict]:
        """One call in request-time order: join the open groups, maybe open one."""
        interval = self.settings.repeat_interval_ms
        out: list[Verdict] = []
        keep: list[_Anchor] = []
        joined = False
        for anchor in self.open.get(call.key) or ():
            later = call.start_us > anchor.start_us
            if later and (call.start_us - anchor.start_us) // 1000 < interval:
                anchor.members.append(call)
                joined = True
            elif later:
                out.extend(self._close(anchor))
                continue
            keep.append(anchor)
        if not joined and not call.social and len(keep) < MAX_EVIDENCE:
            keep.append(_Anchor(call.start_us, call))
        if not keep:
            self.open.pop(call.key)
            return out
        newest = max(a.start_us for a in keep)
        for _, anchors in self.open.put(call.key, keep, newest / 1e6 + interval / 1000):
            out.extend(v for a in anchors for v in self._close(a))
        return out

    def _close(self, anchor: _Anchor) -> list[Verdict]:
        if not anchor.members:
            return []
        first, calls = anchor.first, [anchor.first, *anchor.members]
        last = calls[-1]
        gap = (last.start_us - first.start_us) // 1000
        return [self.verdict(
            Status.WARN,
            f"{first.label} sent {len(calls)} times with the same URI and body within "
            f"{gap} ms (records {', '.join(str(c.seq) for c in calls[:MAX_EVIDENCE])}; at "
            f"least {self.settings.repeat_interval_ms:.0f} ms expected between them)",
            [c.seq for c in calls], gaps([c.start for c in calls]), first.key[0], first.where,
            last.start)]

    def _release(self, cutoff: float | None) -> list[Verdict]:
        out: list[Verdict] = []
        while self.pending and (cutoff is None or self.pending[0].start <= cutoff):
            out.extend(self._take(heapq.heappop(self.pending)))
        return out

    def expire(self, now: float) -> Decided:
        out = self._release(now)
        out.extend(v for _, anchors in self.open.due(now) for a in anchors
                   for v in self._close(a))
        return out or NOTHING

    def finish(self) -> Decided:
        out = self._release(None)
        out.extend(v for _, anchors in self.open.drain() for a in anchors
                   for v in self._close(a))
        return out


@dataclass(slots=True)
class _Run:
    last: float
    seqs: list[int]  # the run's last `polling_min_calls` calls
    times: list[float]
    delta: float | None = None
    reported: bool = False


class PollingRule(BaseRule):
    """The Trace Analyzer's PollingDetection, over consecutive identical calls.

    What the analyzer does (PollingDetectionRule.cs Run, ~L200-L240): per console
    and host, over the calls it analyses, for each call not sent by SocialManager
    it takes the *other* calls with the same URI and body (the method is not
    compared), links every pair of them at most MaxFrequencyMs apart (one hour,
    Constants.cs) into chains whose gaps stay within SameDeltaThresholdPercent
    (.01) of each other, and warns for each chain of at least MinSequenceSize (5)
    calls not contained in a longer one. Streaming, each call is linked to the
    one before it (the chains of consecutive calls, the ones a poller makes),
    and a run goes on while each gap is within `polling_tolerance` of the gap
    before it; a run of `polling_min_calls` calls warns, once. Only calls the
    analyzer analyses are judged, keyed as it compares them. A session polled
    gets the reason too (`rta_rules.polling_reason`): the title also has an RTA
    subscription open, lost it, or never subscribed.
    """

    id = "polling"
    nothing = "no requests"
    concern = Concern.ANALYSED

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.runs: Keyed[_SameCall, _Run] = Keyed(self.max_keys)
        #: the titles' RTA websockets (the engine sets it): why polling a session is wrong
        self.listening: Listening | None = None

    def feed(self, ex: Facts) -> Decided:
        if ex.social or not ex.analysed:
            return NOTHING
        self.seen += 1
        s = self.settings
        key = (ex.console, ex.host, ex.uri, ex.body_hash)
        run = self.runs.get(key)
        out: Decided = NOTHING
        if run is None or not 0 < ex.start - run.last <= s.polling_max_interval_s:
            run = _Run(ex.start, [ex.seq], [ex.start])  # a new run
        else:
            delta = ex.start - run.last
            if run.delta is None or abs(delta - run.delta) > s.polling_tolerance * run.delta:
                # Not evenly spaced: a new run starts at the call before this one.
                del run.seqs[:-1], run.times[:-1]
                run.reported = False
            run.seqs.append(ex.seq)
            run.times.append(ex.start)
            if len(run.seqs) > s.polling_min_calls:
                del run.seqs[0], run.times[0]
            run.delta, run.last = delta, ex.start
            if len(run.seqs) >= s.polling_min_calls and not run.reported:
                run.reported = True
                out = [self.verdict(
                    Status.WARN,
                    f"{ex.label} polled: {len(run.seqs)} identical calls about every "
                    f"{ms(delta):.0f} ms (within {s.polling_tolerance:.0%})"
                    f"{polling_reason(self.listening, ex) if self.listening else ''}",
                    run.seqs, gaps(run.times), ex.client, ex.where, ex.start)]
        self.runs.put(key, run, ex.start + s.polling_max_interval_s)
        return out

    def expire(self, now: float) -> Decided:
        self.runs.due(now)
        return NOTHING


class SmallBatchRule(BaseRule):
    """The Trace Analyzer's SmallBatchDetection: a batch call with too few users.

    The analyzer (SmallBatchDetectionRule.cs) matches the session directory's
    batch URIs of Rules.json and counts the `xuids` list of the body; only calls
    it analyses are judged. (Its handles-query pattern names the list
    `owners.xuids`, which its JObject lookup never finds, so it never judges a
    handles query; mpsdproxy counts `owners.xuids` there.)
    """

    id = "small-batch"
    nothing = "no batch calls"
    concern = Concern.ANALYSED

    def feed(self, ex: Facts) -> Decided:
        if ex.xuids is None or not ex.analysed:
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


class BatchFrequencyRule(BaseRule):
    """The Trace Analyzer's BatchFrequency: batch calls within `batch_window_ms` of the
    first of a set are one set; a set of two or more warns when it closes.

    As BatchFrequencyRule.cs Run (~L50-L100), per console and host, over the calls
    it analyses. (The analyzer leaves the call that opens the next set out of
    that set's count; mpsdproxy counts it.)
    """

    id = "batch-frequency"
    nothing = "no batch calls"
    concern = Concern.ANALYSED

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.sets: Keyed[HostKey, _BatchSet] = Keyed(self.max_keys)

    def feed(self, ex: Facts) -> Decided:
        if ex.xuids is None or not ex.analysed:
            return NOTHING
        self.seen += 1
        window = self.settings.batch_window_ms / 1000
        key = HostKey(ex.console, ex.host)
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

    def _close(self, key: HostKey, batch: _BatchSet) -> Decided:
        if len(batch.seqs) < 2:
            return NOTHING
        window = self.settings.batch_window_ms
        return [self.verdict(
            Status.WARN,
            f"{len(batch.seqs)} batch calls within {window:.0f} ms ({batch.xuids} users in "
            "all): combine them into one call",
            batch.seqs, gaps(batch.times), key.client, batch.host, batch.times[-1])]

    def expire(self, now: float) -> Decided:
        return [v for k, s in self.sets.due(now) for v in self._close(k, s)]

    def finish(self) -> Decided:
        return [v for k, s in self.sets.drain() for v in self._close(k, s)]

    def summary(self) -> str:
        return f"{self.seen} batch calls, none within {self.settings.batch_window_ms:.0f} ms " \
               "of another"
