"""The call-pattern rules: call-rate budgets and the Xbox Live Trace Analyzer's rules
(protocol notes §5.4). They warn, and fail only at the certification line (ten
times the sustained budget).

The budgets count calls in `fgrl.SlidingWindow`s, the one FGRL window the
injector's throttle and the stand-in use too, so a verdict says "over budget"
exactly where the service would answer 429.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from mpsdproxy import fgrl
from mpsdproxy.verdicts.base import MAX_EVIDENCE
from mpsdproxy.verdicts.base import NOTHING
from mpsdproxy.verdicts.base import BaseRule
from mpsdproxy.verdicts.base import Decided
from mpsdproxy.verdicts.base import Status
from mpsdproxy.verdicts.base import Verdict
from mpsdproxy.verdicts.base import gaps
from mpsdproxy.verdicts.base import ms
from mpsdproxy.verdicts.limits import ServiceLimits
from mpsdproxy.verdicts.state import CallKey
from mpsdproxy.verdicts.state import Facts
from mpsdproxy.verdicts.state import HostKey
from mpsdproxy.verdicts.state import Keyed
from mpsdproxy.verdicts.state import ServiceKey

__all__ = [
    "RateBudgetRule",
    "BurstRule",
    "RepeatedCallsRule",
    "PollingRule",
    "SmallBatchRule",
    "BatchFrequencyRule",
]

#: How long a client's call statistics are kept after its last call.
IDLE_S = 3600
#: The most calls a burst window keeps (evidence and count).
BURST_KEEP = 1024


class _Over(enum.Flag):
    """The budget checks a user is over; reported in this order."""

    NONE = 0
    CERTIFICATION = enum.auto()
    SUSTAINED = enum.auto()
    BURST = enum.auto()


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

    Over the burst or the sustained limit warns (the service would throttle
    from there); reaching the certification line fails. Each is reported once
    until the count falls back under its limit. The sustained window keeps as
    many calls as the certification line needs to be seen reached.
    """

    id = "rate-budget"
    nothing = "no requests"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.budgets: Keyed[ServiceKey, _Budget] = Keyed(self.max_keys)
        self.peaks: dict[str, _Peak] = {}
        self.services = self.limits.by_name()

    def feed(self, ex: Facts) -> Decided:
        self.seen += 1
        limits = self.services[ex.service]
        key = ServiceKey(ex.client, ex.service)
        budget = self.budgets.get(key)
        if budget is None:
            budget = _Budget(limits.burst.sliding(),
                             limits.sustained.sliding(keep=limits.certification))
        burst = budget.burst.add(ex.start, ex.seq)
        sustained = budget.sustained.add(ex.start, ex.seq)
        peak = self.peaks.setdefault(ex.service, _Peak())
        peak.burst = max(peak.burst, burst)
        peak.sustained = max(peak.sustained, sustained)
        new = _Over.NONE
        if budget.over or burst > limits.burst.calls or sustained > limits.sustained.calls:
            over = _Over.NONE
            if sustained >= limits.certification:
                over |= _Over.CERTIFICATION
            if sustained > limits.sustained.calls:
                over |= _Over.SUSTAINED
            if burst > limits.burst.calls:
                over |= _Over.BURST
            new = over & ~budget.over
            budget.over = over
        self.budgets.put(key, budget, ex.start + limits.sustained.seconds)
        return self._report(new, budget, ex, limits) if new else NOTHING

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
class _Rate:
    window: fgrl.SlidingWindow
    last: float | None = None
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    in_burst: bool = False


class BurstRule(BaseRule):
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
        self.rates: Keyed[HostKey, _Rate] = Keyed(self.max_keys)
        self.window_s = self.settings.burst_window_ms / 1000

    def feed(self, ex: Facts) -> Decided:
        self.seen += 1
        key = ex.per_host
        rate = self.rates.get(key)
        if rate is None:
            rate = _Rate(fgrl.SlidingWindow(BURST_KEEP, self.window_s, keep=BURST_KEEP))
        size = rate.window.add(ex.start, ex.seq)
        limit = self._limit(rate) if size >= self.settings.burst_min_calls else math.inf
        out: Decided = NOTHING
        if size <= limit:
            rate.in_burst = False
        elif not rate.in_burst:
            rate.in_burst = True
            out = [self._burst(ex, rate, size, limit)]
        self._learn(rate, ex.start)
        self.rates.put(key, rate, ex.start + IDLE_S)
        return out

    def _limit(self, rate: _Rate) -> float:
        """The most calls this title's usual rate allows in a window (infinite until
        `burst_warmup_calls` gaps with some spread were seen)."""
        variance = rate.m2 / rate.n if rate.n else 0.0
        if rate.n < self.settings.burst_warmup_calls or rate.mean <= 0 or variance <= 0:
            return math.inf
        return math.ceil(1000 / rate.mean) + math.ceil(2 * 1000 / math.sqrt(variance))

    def _burst(self, ex: Facts, rate: _Rate, size: int, limit: float) -> Verdict:
        first = rate.window.first[0] if rate.window.first else ex.start
        return self.verdict(
            Status.WARN,
            f"burst of {size} calls to {ex.host or 'the service'} within "
            f"{self.settings.burst_window_ms:.0f} ms (this title's usual rate allows "
            f"{limit:.0f})",
            [seq for _, seq in rate.window.entries], (ms(ex.start - first),), ex.client,
            ex.host, ex.start)

    @staticmethod
    def _learn(rate: _Rate, start: float) -> None:
        """Take the gap since the call before into the running mean and variance."""
        last = rate.last
        if last is not None and start >= last:
            gap = (start - last) * 1000
            rate.n += 1
            delta = gap - rate.mean
            rate.mean += delta / rate.n
            rate.m2 += delta * (gap - rate.mean)
        if last is None or start > last:
            rate.last = start

    def expire(self, now: float) -> Decided:
        self.rates.due(now)
        return NOTHING


@dataclass(slots=True)
class _Seen:
    time: float
    seq: int
    reported: bool = False


class RepeatedCallsRule(BaseRule):
    """The Trace Analyzer's RepeatedCalls: the same call again within `repeat_interval_ms`.

    "The same call" is the same method, URI and request body, from one client
    to one host; calls sent by SocialManager are skipped, as the analyzer does.
    One warning per run of repeats.
    """

    id = "repeated-calls"
    nothing = "no requests"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.last: Keyed[CallKey, _Seen] = Keyed(self.max_keys)

    def feed(self, ex: Facts) -> Decided:
        if ex.social:
            return NOTHING
        self.seen += 1
        interval = self.settings.repeat_interval_ms
        key = ex.call
        prev = self.last.get(key)
        out: Decided = NOTHING
        if prev is None:
            prev = _Seen(ex.start, ex.seq)
        else:
            gap = ms(ex.start - prev.time)
            if 0 <= gap <= interval:
                if not prev.reported:
                    out = [self.verdict(
                        Status.WARN,
                        f"{ex.label} repeated with the same body after {gap:.0f} ms (records "
                        f"{prev.seq}, {ex.seq}; at least {interval:.0f} ms expected)",
                        (prev.seq, ex.seq), (gap,), ex.client, ex.where, ex.start)]
                prev.reported = True
            else:
                prev.reported = False
            prev.time, prev.seq = ex.start, ex.seq
        self.last.put(key, prev, ex.start + interval / 1000)
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


class PollingRule(BaseRule):
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
        self.runs: Keyed[CallKey, _Run] = Keyed(self.max_keys)

    def feed(self, ex: Facts) -> Decided:
        if ex.social:
            return NOTHING
        self.seen += 1
        s = self.settings
        key = ex.call
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
                    f"{ms(delta):.0f} ms (within {s.polling_tolerance:.0%})",
                    run.seqs, gaps(run.times), ex.client, ex.where, ex.start)]
        self.runs.put(key, run, ex.start + s.polling_max_interval_s)
        return out

    def expire(self, now: float) -> Decided:
        self.runs.due(now)
        return NOTHING


class SmallBatchRule(BaseRule):
    """The Trace Analyzer's SmallBatchDetection: a batch call with too few users."""

    id = "small-batch"
    nothing = "no batch calls"

    def feed(self, ex: Facts) -> Decided:
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


class BatchFrequencyRule(BaseRule):
    """The Trace Analyzer's BatchFrequency: batch calls within `batch_window_ms` of the
    first of a set are one set; a set of two or more warns when it closes."""

    id = "batch-frequency"
    nothing = "no batch calls"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.sets: Keyed[HostKey, _BatchSet] = Keyed(self.max_keys)

    def feed(self, ex: Facts) -> Decided:
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
