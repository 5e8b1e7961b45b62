"""Applying a scenario: triggers count matches and decide, the engine picks the winner.

Pure logic over `model.Request` and a caller-supplied clock, so the injector
addon stays thin and every decision is testable without a proxy. Nothing here
imports mitmproxy. Throttle rules count calls with `fgrl.Callers`, the one FGRL
window, so an injected 429 and the stand-in's agree on Retry-After.

A rule whose fault the service could not give for this request (the catalog's
`why_not`, unless the fault says `force: true`) neither fires nor counts the
request as a match: `nth: 1` means the first request it can apply to. Such
requests are counted apart (`RuleStats.inapplicable`, with the last reason).

State lives on the instances and is bounded: per rule at most `MAX_SCOPES`
scopes and throttled callers, the least recently used forgotten, so memory
stays flat however long a playtest runs. Nothing is remembered per request.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from typing import NamedTuple

from mpsdproxy import catalog
from mpsdproxy import fgrl
from mpsdproxy import model
from mpsdproxy.scenario.match import Facts
from mpsdproxy.scenario.match import Matcher
from mpsdproxy.scenario.model import Channel
from mpsdproxy.scenario.model import Fault
from mpsdproxy.scenario.model import Origin
from mpsdproxy.scenario.model import Per
from mpsdproxy.scenario.model import Phase
from mpsdproxy.scenario.model import Rule
from mpsdproxy.scenario.model import Scenario
from mpsdproxy.scenario.model import When

__all__ = ["MAX_SCOPES", "Counters", "Trigger", "Firing", "RuleStats", "Engine"]

#: Scopes, trigger and throttle users kept per rule; the oldest is forgotten
#: beyond this, so memory stays flat however long a playtest runs.
MAX_SCOPES = 10_000
#: The most situation shapes a plan remembers whether its rules apply to.
MAX_SHAPES = 1024


# --- triggers ---------------------------------------------------------------------------


@dataclass(slots=True)
class Counters:
    """One scope's counts for one rule."""

    matches: int = 0
    eligible: int = 0  # matches inside the time window: what nth/first/every count
    fired: int = 0
    first_match: float | None = None


class Trigger:
    """Decides, match by match, whether a rule fires; counters are kept per scope key.

    `fires(now, scope)` counts a match and decides; `count(now, scope)` only
    counts (a match that an earlier rule answered); `step` is `count` then
    `ready` in one call, for the engine. `now` is any monotonic clock in
    seconds, the same one `start` was read from.
    """

    __slots__ = ("when", "rng", "start", "match_count", "fire_count", "max_scopes", "_scopes",
                 "_timed")

    def __init__(self, when: When, rng: random.Random, start: float,
                 max_scopes: int = MAX_SCOPES) -> None:
        self.when = when
        self._timed = when.after is not None  # whether the time window needs checking
        self.rng = rng
        self.start = start
        self.match_count = 0
        self.fire_count = 0
        self.max_scopes = max_scopes
        self._scopes: OrderedDict[str, Counters] = OrderedDict()

    def reset(self, start: float | None = None, rng: random.Random | None = None) -> None:
        self.start = self.start if start is None else start
        self.rng = rng or self.rng
        self.match_count = self.fire_count = 0
        self._scopes.clear()

    def _in_window(self, now: float, counters: Counters) -> bool:
        when = self.when
        if when.after is None:
            return True
        origin = self.start if when.from_ is Origin.START else counters.first_match
        begin = (origin if origin is not None else now) + when.after
        return now >= begin and (when.for_ is None or now < begin + when.for_)

    def _counted(self, now: float, scope: str) -> Counters:
        """The scope's counters, made the most recently used, with this match counted
        (not yet as eligible)."""
        scopes = self._scopes
        counters = scopes.get(scope)
        if counters is None:
            counters = scopes[scope] = Counters(first_match=now)
            while len(scopes) > self.max_scopes:
                scopes.popitem(last=False)
        else:
            scopes.move_to_end(scope)
        counters.matches += 1
        self.match_count += 1
        return counters

    def count(self, now: float, scope: str = "") -> Counters:
        """Count a match in `scope` (and as eligible when inside the time window)."""
        counters = self._counted(now, scope)
        if not self._timed or self._in_window(now, counters):
            counters.eligible += 1
        return counters

    def ready(self, now: float, counters: Counters) -> bool:
        """Whether the match just counted satisfies every condition (draws the probability)."""
        return self._in_window(now, counters) and self._allows(counters)

    def _allows(self, counters: Counters) -> bool:
        """Whether the count conditions hold for the eligible match just counted (draws
        the probability last, so a draw is only spent when everything else holds)."""
        when = self.when
        n = counters.eligible
        if when.nth is not None and n != when.nth:
            return False
        if when.first is not None and n > when.first:
            return False
        if when.every is not None and n % when.every:
            return False
        if when.times is not None and counters.fired >= when.times:
            return False
        return when.probability is None or self.rng.random() < when.probability

    def step(self, now: float, scope: str = "") -> Counters | None:
        """`count`, then `ready`, in one call (the engine's, once per matching rule): the
        counters when the match satisfies every condition, else None."""
        counters = self._counted(now, scope)
        if self._timed and not self._in_window(now, counters):
            return None
        counters.eligible += 1
        return counters if self._allows(counters) else None

    def record_fire(self, counters: Counters) -> None:
        counters.fired += 1
        self.fire_count += 1

    def fires(self, now: float, scope: str = "") -> bool:
        """Count a match in `scope` and say whether the rule fires on it."""
        counters = self.step(now, scope)
        if counters is None:
            return False
        self.record_fire(counters)
        return True


# --- the engine -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Firing:
    """A rule that fired on a request, with what the injector needs to act on it."""

    rule: Rule
    scope: str
    delay: float = 0.0  # seconds to wait before acting, already drawn
    throttle: fgrl.Decision | None = None  # for throttle rules: the 429's numbers


@dataclass(frozen=True, slots=True)
class RuleStats:
    """One rule's counts: requests it matched and could apply to, times it fired, and
    requests it matched but could not apply to as the service would (with the last
    reason why)."""

    name: str
    phase: Phase
    enabled: bool
    matches: int
    fires: int
    inapplicable: int = 0
    last_reason: str | None = None
    channel: Channel = Channel.HTTP


#: What a rule of each channel counts, in the counts lines (HTTP rules count requests).
_COUNTED = {Channel.HTTP: "", Channel.TAP: "taps ", Channel.RTA: "RTA messages ",
            Channel.SUBSCRIBE: "subscribes "}


class _Runtime:
    """One rule's live state: its switch, trigger, delay draws and throttled callers."""

    __slots__ = ("rule", "seed", "enabled", "trigger", "delay_rng", "callers", "checks",
                 "inapplicable", "last_reason")

    def __init__(self, rule: Rule, seed: int, start: float) -> None:
        self.rule = rule
        self.seed = seed
        self.enabled = rule.enabled
        fault = rule.fault
        #: Whether the fault's answer may be one the service cannot give (else it always
        #: applies, and no request needs looking at).
        self.checks = fault.status is not None and not fault.force and fault.throttle is None
        self.inapplicable = 0
        self.last_reason: str | None = None
        self.trigger = Trigger(rule.when, self._rng("when"), start)
        self.delay_rng = self._rng("delay")
        budget = rule.fault.throttle
        self.callers = fgrl.Callers(budget, MAX_SCOPES) if budget is not None else None

    def _rng(self, purpose: str) -> random.Random:
        """One stream per rule and purpose: adding jitter to one rule shifts no other draw."""
        return random.Random(f"{self.seed}:{self.rule.index}:{purpose}")

    def refused(self, reason: str) -> None:
        """Count a matching request the fault cannot apply to, and why."""
        self.inapplicable += 1
        self.last_reason = reason

    def reset(self, start: float | None) -> None:
        self.inapplicable, self.last_reason = 0, None
        self.trigger.reset(start, self._rng("when"))
        self.delay_rng = self._rng("delay")
        if self.callers is not None:
            self.callers.clear()


#: Where a rule's scope is in the scopes `Engine.evaluate` works out per request.
_SCOPE_AT = {Per.GLOBAL: 0, Per.CLIENT: 1, Per.SESSION: 2}

#: A situation's shape (`catalog.Situation.shape`): all that decides whether a fault applies.
Shape = tuple[Any, ...]


class _Step(NamedTuple):
    """One rule of a plan: which of the engine's distinct matchers it uses, where its scope
    is (`_SCOPE_AT`), and its place among the plan's rules that check applicability."""

    runtime: _Runtime
    slot: int
    scope_at: int
    check_at: int | None


class _Plan:
    """The rules of one channel and phase, in file order, and why the faults of those that
    check applicability cannot apply, by situation shape.

    `why_not` reads nothing but the shape, so each kind of request is judged once for
    all the plan's rules (at most `MAX_SHAPES` kinds kept: methods are the title's to
    choose), and a request pays for one shape however many rules match it.
    """

    __slots__ = ("steps", "per_session", "_checking", "_reasons")

    def __init__(self, runtimes: list[_Runtime], slots: list[int]) -> None:
        steps: list[_Step] = []
        checking: list[Fault] = []
        for runtime, slot in zip(runtimes, slots, strict=True):
            check_at = None
            if runtime.checks:
                check_at = len(checking)
                checking.append(runtime.rule.fault)
            steps.append(_Step(runtime, slot, _SCOPE_AT[runtime.rule.per], check_at))
        self.steps = tuple(steps)
        #: Whether a rule is counted per session (only then is the session key needed).
        self.per_session = any(runtime.rule.per is Per.SESSION for runtime in runtimes)
        self._checking = tuple(checking)
        self._reasons: dict[Shape, tuple[str | None, ...]] = {}

    def reasons(self, request: model.Request, exists: bool | None) -> tuple[str | None, ...]:
        """Why each checking rule's fault cannot apply to this request (None: it can), in
        the order of `_Step.check_at`."""
        shape = catalog.Situation.shape_of(request, exists)
        reasons = self._reasons.get(shape)
        if reasons is None:
            if len(self._reasons) >= MAX_SHAPES:
                self._reasons.clear()
            situation = catalog.Situation.of(request, exists)
            reasons = self._reasons[shape] = tuple(
                fault.why_not(situation) for fault in self._checking)
        return reasons


class Engine:
    """Applies a scenario's rules to requests, in file order; the first rule that fires wins
    and every other matching rule still counts the request.

    Rules of one phase are tried per call: the injector asks with
    Phase.REQUEST before forwarding, and with Phase.RESPONSE for exchanges it
    forwarded. Thread-safe, so nth fires once however many clients race.
    """

    def __init__(self, scenario: Scenario, start: float | None = None) -> None:
        self.scenario = scenario
        self.start = time.monotonic() if start is None else start
        self.enabled = True
        self._lock = threading.Lock()
        self._runtimes = [_Runtime(rule, scenario.seed, self.start) for rule in scenario.rules]
        #: Each distinct match compiled once: a request is checked once per distinct match.
        self._matchers: list[Matcher] = []
        slots: dict[Matcher, int] = {}
        grouped: dict[tuple[Channel, Phase], tuple[list[_Runtime], list[int]]] = {}
        for runtime in self._runtimes:
            matcher = Matcher.of(runtime.rule.match)
            slot = slots.setdefault(matcher, len(self._matchers))
            if slot == len(self._matchers):
                self._matchers.append(matcher)
            runtimes, plan_slots = grouped.setdefault(
                (runtime.rule.channel, runtime.rule.phase), ([], []))
            runtimes.append(runtime)
            plan_slots.append(slot)
        self._plans = {key: _Plan(*group) for key, group in grouped.items()}
        #: Whether `evaluate` reads its `client` and `user` (a rule counted per client, or
        #: throttling callers) and its `exists` (a fault the catalog must judge): a caller
        #: may leave out what no rule reads.
        self.reads_caller = any(runtime.rule.per is Per.CLIENT or runtime.callers is not None
                                for runtime in self._runtimes)
        self.reads_existence = any(runtime.checks for runtime in self._runtimes)
        #: The phases some HTTP rule acts in (the injector asks only in these).
        self.phases = frozenset(phase for channel, phase in grouped if channel is Channel.HTTP)
        #: What the rules act on: HTTP requests, shoulder taps, the RTA websocket.
        self.channels = frozenset(channel for channel, _ in grouped)

    def evaluate(self, request: model.Request, phase: Phase = Phase.REQUEST, *,
                 client: str = "", user: str = "", now: float | None = None,
                 exists: bool | None = None, channel: Channel = Channel.HTTP) -> Firing | None:
        """The rule that fires on this request in this phase, or None.

        Only the rules of `channel` are tried and count: an HTTP request by default; the
        RTA faults addon asks with a shoulder tap (or websocket message) described as the
        request for what it names (`Channel.TAP`, `RTA`, `SUBSCRIBE`).

        `client` keys `per: client` (the redacted Authorization, else the address);
        `user` keys throttling (the redacted Authorization; `client` when empty).
        `exists` says whether the request's session existed before it, as far as the
        proxy knows (None: it has not seen the session); with the request it decides
        whether a rule's answer is one the service could give (`catalog.why_not`). In
        phase response it is still what was known before the request was forwarded.
        """
        plan = self._plans.get((channel, phase)) if self.enabled else None
        if plan is None:
            return None
        now = time.monotonic() if now is None else now
        facts = Facts.of(request)
        scopes = ("", client, request.resource.key if plan.per_session else None)
        verdicts: list[bool | None] = [None] * len(self._matchers)
        reasons: tuple[str | None, ...] | None = None
        with self._lock:
            winner: Firing | None = None
            for runtime, slot, scope_at, check_at in plan.steps:
                scope = scopes[scope_at]
                if scope is None or not runtime.enabled:
                    continue
                matched = verdicts[slot]
                if matched is None:
                    matched = verdicts[slot] = self._matchers[slot].test(facts)
                if not matched:
                    continue
                if check_at is not None:
                    if reasons is None:
                        reasons = plan.reasons(request, exists)
                    reason = reasons[check_at]
                    if reason is not None:
                        runtime.refused(reason)
                        continue
                if winner is not None:
                    runtime.trigger.count(now, scope)
                    continue
                counters = runtime.trigger.step(now, scope)
                if counters is not None:
                    winner = self._fire(runtime, now, scope, counters, user or client)
            return winner

    def _fire(self, runtime: _Runtime, now: float, scope: str, counters: Counters,
              caller: str) -> Firing | None:
        """A match that satisfies the rule's `when`: the rule fires unless its throttle
        lets the request through."""
        decision = None
        if runtime.callers is not None:
            decision = runtime.callers.admit(caller, now)
            if decision.ok:
                return None
        runtime.trigger.record_fire(counters)
        delay = runtime.rule.fault.delay_seconds(runtime.delay_rng)
        return Firing(runtime.rule, scope, delay, decision)

    def reset(self, start: float | None = None) -> None:
        """Forget every count and draw, as if the scenario had just been loaded; `start`
        moves the origin of the time windows (default: keep it)."""
        with self._lock:
            if start is not None:
                self.start = start
            for runtime in self._runtimes:
                runtime.reset(start)

    def _runtime(self, name: str) -> _Runtime:
        for runtime in self._runtimes:
            if runtime.rule.name.lower() == name.lower():
                return runtime
        names = ", ".join(r.rule.name for r in self._runtimes)
        raise ValueError(f"no rule named {name!r} in {self.scenario.name}; its rules are: {names}")

    def set_enabled(self, enabled: bool, rule: str | None = None) -> None:
        """Switch one rule (by name) or, with no name, the whole engine on or off."""
        if rule is None:
            self.enabled = enabled
            return
        with self._lock:
            self._runtime(rule).enabled = enabled

    def enable(self, rule: str | None = None) -> None:
        self.set_enabled(True, rule)

    def disable(self, rule: str | None = None) -> None:
        self.set_enabled(False, rule)

    def stats(self) -> list[RuleStats]:
        """Each rule's match and fire counts, in file order."""
        with self._lock:
            return [RuleStats(r.rule.name, r.rule.phase, r.enabled, r.trigger.match_count,
                              r.trigger.fire_count, r.inapplicable, r.last_reason,
                              r.rule.channel)
                    for r in self._runtimes]

    def stats_lines(self) -> Iterator[str]:
        """One readable line per rule, for the summary printed at shutdown: `name: 3
        matched, 1 fired, 2 not applicable (why, the last time)`; an RTA rule says what it
        counted (`missed-tap: 4 taps matched, 1 fired`)."""
        for s in self.stats():
            line = f"{s.name}: {s.matches} {_COUNTED[s.channel]}matched, {s.fires} fired"
            if s.inapplicable:
                line += f", {s.inapplicable} not applicable ({s.last_reason})"
            yield line + ("" if s.enabled else " (off)")
