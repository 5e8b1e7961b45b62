"""The one FGRL window: what the injector, the stand-in and the verdicts all count with."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mpsdproxy import fgrl


def test_burst_of_two_refuses_the_third_call_until_the_first_leaves() -> None:
    caller = fgrl.Caller(fgrl.Budget(burst=2, sustained=100))
    assert caller.admit(0).ok and caller.admit(1).ok
    refused = caller.admit(2)
    assert refused == fgrl.Decision(False, 13, 3, 2, 15)
    assert fgrl.message(refused) == {"version": 1, "currentRequests": 3, "maxRequests": 2,
                                     "periodInSeconds": 15, "limitType": "Rate"}
    assert not caller.admit(14.9).ok
    assert caller.admit(15).ok  # the call at 0 left the 15 s window at 15


def test_throttled_calls_fill_the_sustained_window() -> None:
    caller = fgrl.Caller(fgrl.Budget(burst=1, sustained=3))
    assert caller.admit(0).ok
    assert not caller.admit(1).ok
    assert not caller.admit(2).ok
    decision = caller.admit(20)  # the burst window is clear, the sustained one is not
    assert not decision.ok and decision.period == 300 and decision.retry_after == 281


@given(st.lists(st.floats(min_value=0, max_value=1000), min_size=1, max_size=60),
       st.integers(min_value=1, max_value=5))
def test_no_window_ever_admits_more_than_its_budget(times: list[float], burst: int) -> None:
    caller = fgrl.Caller(fgrl.Budget(burst=burst, sustained=10_000))
    admitted: list[float] = []
    for now in sorted(times):
        decision = caller.admit(now)
        if decision.ok:
            admitted.append(now)
            # A call leaves the window `seconds` after it was made (t + 15), in the
            # window's own arithmetic: `now - 15` would round differently for tiny t.
            assert sum(1 for t in admitted if t + 15 > now) <= burst
        else:
            assert decision.retry_after >= 1


def test_callers_are_bounded_and_independent() -> None:
    callers = fgrl.Callers(fgrl.Budget(burst=1, sustained=10), max_callers=2)
    assert callers.admit("a", 0).ok and callers.admit("b", 0).ok
    assert not callers.admit("a", 1).ok
    assert callers.admit("c", 1).ok  # "b" is forgotten, "a" stays
    assert not callers.admit("a", 2).ok


def test_a_sliding_window_keeps_only_what_it_needs() -> None:
    window = fgrl.SlidingWindow(limit=3, seconds=10)
    for t in range(100):
        window.add(t * 0.01, tag=t)
    assert len(window.entries) == 4
    assert window.full(1.0) and window.wait(1.0) > 0
    assert window.count(20) == 0
