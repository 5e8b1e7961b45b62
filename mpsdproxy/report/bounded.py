"""Bounded accumulators: whatever a recording holds, these stay the same size.

A counter keeps at most MAX_KEYS distinct keys (the rest count as OTHER); a
latency histogram is a fixed array of log-spaced buckets.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from dataclasses import field
from typing import Any

__all__ = ["MAX_KEYS", "OTHER", "LatencyHistogram", "Capped", "OpAcc", "AnomalyAcc"]

#: Most distinct keys a counter keeps before the rest go to OTHER.
MAX_KEYS = 256
OTHER = "other"


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



class Capped(Counter):  # type: ignore[type-arg]
    """A Counter that keeps at most MAX_KEYS distinct keys; the rest count as OTHER."""

    def add(self, key: Any, n: int = 1) -> None:
        if key not in self and len(self) >= MAX_KEYS:
            key = OTHER
        self[key] += n


@dataclass
class OpAcc:
    count: int = 0
    classes: Counter = field(default_factory=Counter)  # type: ignore[type-arg]
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass
class AnomalyAcc:
    count: int = 0
    message: str = ""
    records: list[int] = field(default_factory=list)
