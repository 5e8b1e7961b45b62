"""Triggers (when a matching request makes a rule fire), delays and truncation: pure units
over a fake clock; the engine that uses them is tested in test_scenario_engine.py."""

from __future__ import annotations

import random

import pytest

from mpsdproxy import scenario
from mpsdproxy.scenario import Trigger
from mpsdproxy.scenario import When

# --- triggers ---------------------------------------------------------------------------


def fires(when: When, times: list[float], scopes: list[str] | None = None,
          seed: int = 0) -> list[bool]:
    trigger = Trigger(when, random.Random(seed), start=100.0)
    scopes = scopes or [""] * len(times)
    return [trigger.fires(now, scope) for now, scope in zip(times, scopes, strict=True)]


T10 = [100.0 + i for i in range(10)]


@pytest.mark.parametrize("when,expected", [
    (When(), [True] * 10),
    (When(nth=3), [False, False, True] + [False] * 7),
    (When(first=2), [True, True] + [False] * 8),
    (When(every=3), [False, False, True, False, False, True, False, False, True, False]),
    (When(every=2, times=2), [False, True, False, True] + [False] * 6),
    (When(times=3), [True] * 3 + [False] * 7),
    (When(after=3.0), [False] * 3 + [True] * 7),
    (When(after=3.0, for_=2.0), [False] * 3 + [True, True] + [False] * 5),
    (When(after=2.0, nth=2), [False, False, False, True] + [False] * 6),
    (When(after=0.0, for_=1.5, first=5), [True, True] + [False] * 8),
    (When(probability=0.0), [False] * 10),
    (When(probability=1.0), [True] * 10),
])
def test_trigger_on_a_fake_clock(when: When, expected: list[bool]) -> None:
    assert fires(when, T10) == expected


def test_window_from_first_match_counts_per_scope() -> None:
    when = When(after=5.0, for_=5.0, from_=scenario.Origin.FIRST_MATCH)
    times = [200.0, 204.0, 205.0, 209.9, 210.0, 206.0, 211.0, 212.0]
    scopes = ["a", "a", "a", "a", "a", "b", "b", "b"]
    assert fires(when, times, scopes) == [False, False, True, True, False, False, True, True]


def test_per_scope_counters_are_independent() -> None:
    scopes = ["s1", "s2", "s1", "s1", "s2", "s2", "s3"]
    assert fires(When(nth=2), [1.0] * 7, scopes) == [
        False, False, True, False, True, False, False]
    trigger = Trigger(When(nth=2), random.Random(0), start=0.0)
    for scope in scopes:
        trigger.fires(1.0, scope)
    assert (trigger.match_count, trigger.fire_count) == (7, 2)


def test_probability_repeats_with_the_seed_and_is_about_right() -> None:
    when = When(probability=0.3)
    run1 = fires(when, [1.0] * 2000, seed=7)
    assert run1 == fires(when, [1.0] * 2000, seed=7)
    assert run1 != fires(when, [1.0] * 2000, seed=8)
    assert 500 < sum(run1) < 700


def test_scopes_are_bounded() -> None:
    trigger = Trigger(When(nth=1), random.Random(0), start=0.0, max_scopes=3)
    assert [trigger.fires(1.0, s) for s in "abcd"] == [True] * 4
    assert trigger.fires(1.0, "a") is True  # "a" was forgotten: counting starts again
    assert trigger.fires(1.0, "d") is False


@pytest.mark.parametrize("max_scopes", [1, 2, 3, 0])
def test_the_least_recently_counted_scope_is_forgotten_first(max_scopes: int) -> None:
    """With nth: 1 a scope fires exactly when it is new to the trigger, so its firings
    show which scopes a plain LRU of `max_scopes` keeps, whether counted or stepped."""
    rng = random.Random(max_scopes)
    trigger = Trigger(When(nth=1), random.Random(0), start=0.0, max_scopes=max_scopes)
    kept: list[str] = []  # least recently used first
    for _ in range(500):
        scope = rng.choice("aabbcde")
        new = scope not in kept
        if rng.random() < 0.5:
            assert (trigger.count(1.0, scope).matches == 1) is new
        else:
            assert trigger.fires(1.0, scope) is new
        kept = [s for s in kept if s != scope] + [scope]
        kept = kept[-max_scopes:] if max_scopes else []


@pytest.mark.parametrize("when", [
    When(), When(nth=3), When(first=2), When(every=3), When(every=2, times=2), When(times=3),
    When(after=3.0), When(after=3.0, for_=2.0), When(after=2.0, nth=2),
    When(after=0.0, for_=1.5, first=5), When(probability=0.3),
    When(after=5.0, for_=5.0, from_=scenario.Origin.FIRST_MATCH, every=2),
])
def test_step_is_count_then_ready(when: When) -> None:
    """The engine's one-call `step` decides, counts and draws exactly as `count` then
    `ready` do, scope by scope."""
    times = [100.0 + i / 2 for i in range(40)]
    scopes = [("a", "b", "")[i % 3] for i in range(40)]
    one = Trigger(when, random.Random(5), start=100.0, max_scopes=2)
    two = Trigger(when, random.Random(5), start=100.0, max_scopes=2)
    for now, scope in zip(times, scopes, strict=True):
        counters = one.count(now, scope)
        expected = one.ready(now, counters)
        if expected:
            one.record_fire(counters)
        stepped = two.step(now, scope)
        assert (stepped is not None) == expected
        if stepped is not None:
            two.record_fire(stepped)
        assert stepped is None or stepped == counters
    assert (one.match_count, one.fire_count) == (two.match_count, two.fire_count)


# --- delays and truncation --------------------------------------------------------------


def test_delay_sampling() -> None:
    rng = random.Random(1)
    assert scenario.Fault().delay_seconds(rng) == 0.0
    assert scenario.Fault(delay=scenario.FixedDelay(1.5)).delay_seconds(rng) == 1.5
    uniform = scenario.UniformDelay(0.2, 2.0)
    draws = [uniform.sample(rng) for _ in range(500)]
    assert all(0.2 <= d <= 2.0 for d in draws) and max(draws) - min(draws) > 1.5
    lognormal = scenario.LognormalDelay(0.3, 1.5, 2.0)
    draws = [lognormal.sample(rng) for _ in range(2000)]
    assert max(draws) == 2.0 and min(draws) > 0
    assert sorted(draws)[1000] == pytest.approx(0.3, rel=0.25)
    assert scenario.Fault(delay=uniform).delay_seconds(random.Random(1)) == \
        scenario.Fault(delay=uniform).delay_seconds(random.Random(1))


@pytest.mark.parametrize("truncate_to,body,expected", [
    (None, b"0123456789", b"01234"), (3, b"0123456789", b"012"),
    (100, b"0123456789", b"012345678"), (None, b"", b""), (0, b"x", b""),
])
def test_truncate_cuts_short(truncate_to: int | None, body: bytes, expected: bytes) -> None:
    assert scenario.Fault(truncate=True, truncate_to=truncate_to).cut(body) == expected


