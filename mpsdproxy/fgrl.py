"""Fine-grained rate limiting (FGRL): the one sliding window, and what it answers.

Everything that counts calls against the service's budgets lives in this
file: the injector's throttle rules, the stand-in's limiter and the call-rate
verdicts all use `Caller` / `SlidingWindow`, so an injected 429, an emulated
429 and a verdict agree on when a call is over budget and on Retry-After.

The service's rules (protocol notes §5.1, "Fine-grained rate limiting"):
- a caller may make `burst` calls in any 15 s and `sustained` calls in any
  300 s;
- calls the service admitted fill the burst window; every call, throttled
  ones too, fills the sustained window, so a caller that keeps hammering
  stays throttled;
- a throttled call gets 429 with `Retry-After` (whole seconds: the client
  library parses an integer, §5.3) and the FGRL message below.

A call at time t leaves a `seconds`-long window at t + seconds exactly, so a
call at 0 is out of a 15 s window at 15: for a burst of 2 and calls at 0, 1
and 2 s, the third is throttled with Retry-After 13.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections import deque
from dataclasses import dataclass
from typing import Any
from typing import NamedTuple

__all__ = [
    "BURST_SECONDS",
    "SUSTAINED_SECONDS",
    "Budget",
    "Decision",
    "SlidingWindow",
    "Caller",
    "Callers",
    "message",
]

BURST_SECONDS = 15
SUSTAINED_SECONDS = 300


@dataclass(frozen=True)
class Budget:
    """Calls a caller may make per burst window and per sustained window."""

    burst: int
    sustained: int
    burst_seconds: float = BURST_SECONDS
    sustained_seconds: float = SUSTAINED_SECONDS

    def __post_init__(self) -> None:
        for name in ("burst", "sustained"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} should be a whole number >= 1, not {value!r}")
        for name in ("burst_seconds", "sustained_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} should be > 0, not {getattr(self, name)!r}")


class Decision(NamedTuple):
    """What the service would say to one call."""

    ok: bool
    retry_after: int  # whole seconds until a call would be admitted; 0 when ok
    current: int  # calls in the deciding window, this one included
    maximum: int  # that window's budget
    period: float  # that window's length in seconds


class SlidingWindow:
    """At most `limit` calls in any `seconds`: the newest calls inside the window.

    Keeps at most `keep` entries (default `limit + 1`: enough to see the limit
    broken and to say when the oldest counted call leaves), so memory stays
    flat however hard a caller hammers. Each entry may carry a tag (a record's
    sequence number) for evidence.
    """

    __slots__ = ("limit", "seconds", "entries")

    def __init__(self, limit: int, seconds: float, keep: int | None = None) -> None:
        self.limit = limit
        self.seconds = seconds
        self.entries: deque[tuple[float, Any]] = deque(maxlen=keep or limit + 1)

    def prune(self, now: float) -> None:
        """Forget calls that have left the window by `now`."""
        entries, horizon = self.entries, now - self.seconds
        while entries and entries[0][0] <= horizon:
            entries.popleft()

    def count(self, now: float) -> int:
        """Calls still inside the window at `now` (as far as kept)."""
        self.prune(now)
        return len(self.entries)

    def add(self, now: float, tag: Any = None) -> int:
        """Count a call at `now`; returns the calls in the window, this one included."""
        self.prune(now)
        self.entries.append((now, tag))
        return len(self.entries)

    def full(self, now: float) -> bool:
        """Whether one more call at `now` would break the limit."""
        return self.count(now) >= self.limit

    def wait(self, now: float) -> float:
        """Seconds from `now` until one more call fits (0 when it fits now)."""
        n = self.count(now)
        if n < self.limit:
            return 0.0
        oldest_counted = self.entries[n - self.limit][0]
        return max(0.0, oldest_counted + self.seconds - now)

    @property
    def first(self) -> tuple[float, Any] | None:
        """The oldest kept call (time, tag)."""
        return self.entries[0] if self.entries else None


def _whole(seconds: float) -> int:
    return max(1, math.ceil(seconds - 1e-9))


class Caller:
    """One caller's two FGRL windows, deciding call by call as the service does."""

    __slots__ = ("budget", "burst", "sustained")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.burst = SlidingWindow(budget.burst, budget.burst_seconds)
        self.sustained = SlidingWindow(budget.sustained, budget.sustained_seconds)

    def admit(self, now: float) -> Decision:
        """Decide one call at `now` and count it (in the burst window only if admitted)."""
        budget = self.budget
        burst_wait = self.burst.wait(now)
        refused = burst_wait > 0 or self.sustained.full(now)
        self.sustained.add(now)
        if not refused:
            current = self.burst.add(now)
            return Decision(True, 0, current, budget.burst, budget.burst_seconds)
        # The refused call is in the sustained window now: the wait counts it too, so a
        # caller that waits as told is admitted.
        sustained_wait = self.sustained.wait(now)
        if sustained_wait > burst_wait:
            return Decision(False, _whole(sustained_wait), len(self.sustained.entries),
                            budget.sustained, budget.sustained_seconds)
        return Decision(False, _whole(burst_wait), len(self.burst.entries) + 1, budget.burst,
                        budget.burst_seconds)


class Callers:
    """Callers by key (a user's redacted token), the least recently seen forgotten
    beyond `max_callers`: memory stays flat with any number of users."""

    def __init__(self, budget: Budget, max_callers: int = 10_000) -> None:
        self.budget = budget
        self.max_callers = max_callers
        self._callers: OrderedDict[str, Caller] = OrderedDict()

    def admit(self, key: str, now: float) -> Decision:
        caller = self._callers.get(key)
        if caller is None:
            caller = self._callers[key] = Caller(self.budget)
            if len(self._callers) > self.max_callers:
                self._callers.popitem(last=False)
        else:
            self._callers.move_to_end(key)
        return caller.admit(now)

    def clear(self) -> None:
        self._callers.clear()


def message(decision: Decision, limit_type: str = "Rate") -> dict[str, Any]:
    """The FGRL body of a 429 (protocol notes §5.1), for the call `decision` refused."""
    return {
        "version": 1,
        "currentRequests": decision.current,
        "maxRequests": decision.maximum,
        "periodInSeconds": int(decision.period) if float(decision.period).is_integer()
        else decision.period,
        "limitType": limit_type,
    }
