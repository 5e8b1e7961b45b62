"""The Trace Analyzer's call statistics, computed as its C# computes them (for the burst rule).

The burst threshold depends on the mean gap and variance of a console's calls
over the whole trace, in the analyzer's own integer arithmetic and with its
quirks kept (xbox-live-trace-analyzer `Source/RulesEngine/ServiceCallStats.cs`,
`Source/Rules/BurstDetectionRule.cs`, `Source/RulesEngine/Utils.cs`), so a
report and the analyzer flag the same bursts on the same capture.
"""

from __future__ import annotations

import math

__all__ = ["analyzer_stats", "burst_size", "excess_windows"]



def _ceil_u32(value: float) -> int:
    """C#'s `(UInt32)Math.Ceiling(x)` as the analyzer's .NET Framework build runs it on x64:
    infinity converts to 0 (the 64-bit truncation's low word)."""
    return 0 if math.isinf(value) else math.ceil(value) % (1 << 32)


def analyzer_stats(calls: list[tuple[int, int]]) -> tuple[int, int]:
    """(mean gap in ms, variance) of `calls` (request start in µs, elapsed ms), sorted by
    start, exactly as ServiceCallStats.cs GatherStats computes them (~L35-L140).

    In unsigned 64-bit integers: the mean is updated as (n * mean + gap) / (n + 1)
    with n counting calls, not gaps (so the first gap is halved), and the variance
    is taken around the mean *elapsed call time* (GatherSecondOrderStats, ~L118:
    `localDev = gap - avg` where `avg = m_avgElapsedCallTimeMs`), wrapping at 2**64.
    """
    wrap = 1 << 64
    n = mean_elapsed = mean_gap = 0
    last: int | None = None
    for start, elapsed in calls:
        mean_elapsed = (n * mean_elapsed + elapsed) // (n + 1)
        if last is not None and start >= last:
            mean_gap = (n * mean_gap + (start - last) // 1000) // (n + 1)
        last, n = start, n + 1
    n = variance = 0
    last = None
    for start, _ in calls:
        if last is not None and start >= last:
            dev = ((start - last) // 1000 - mean_elapsed) % wrap
            variance = ((n * variance + dev * dev) % wrap) // (n + 1)
        last, n = start, n + 1
    return mean_gap, variance


def burst_size(mean_gap: int, variance: int) -> int:
    """BurstDetectionRule.cs Run (~L25): ceil(calls per second) + ceil(2 * 1000 / sd)."""
    per_second = math.inf if mean_gap == 0 else 1000.0 / mean_gap
    spread = math.inf if variance == 0 else 1000.0 / math.sqrt(variance)
    return (_ceil_u32(per_second) + _ceil_u32(2.0 * spread)) % (1 << 32)


def excess_windows(starts: list[int], window_ms: float, most: int) -> list[tuple[int, int]]:
    """Utils.cs GetExcessCallsForTimeWindow (~L300): the [i, j) runs of `starts` (µs,
    sorted) holding more than `most` calls within `window_ms` of the run's first call.

    A run is cut when a call falls out of the window of its first call (the gap in
    whole ms, truncated, over `window_ms`) while it holds more than `most` calls;
    the next run starts at that call. Fewer than two calls make no run.
    """
    out: list[tuple[int, int]] = []
    if len(starts) < 2:
        return out
    first = 0
    for current in range(len(starts)):
        while (starts[current] - starts[first]) // 1000 > window_ms:
            if current - first > most:
                out.append((first, current))
                first = current
            else:
                first += 1
            if first == current:
                break
    if len(starts) - first > most:
        out.append((first, len(starts)))
    return out
