"""The streaming engine: judges exchanges one at a time with bounded state.

`Engine.feed(exchange)` returns the verdicts that exchange decided (a
Retry-After broken, a 412 answered with the right ETag, a waiting verdict
whose deadline the exchange's time passed); `Engine.finish()` decides whatever
is still waiting and adds one summary verdict for every rule that decided
nothing (pass when it saw relevant traffic, not-applicable when it saw none).

Only MPSD traffic is judged (`classify.is_mpsd`): an exchange with any other
host is fed to no rule, so a sign-in, telemetry or a search engine in a
whole-machine capture never counts against the session directory's budgets,
bursts, polling or repeated calls. Such an exchange still moves the clock (time
passed for the verdicts waiting on it) and is counted in `other`.

An MPSD exchange goes only to the rules it can concern, decided from properties
of each rule read once (`_Plans`): a rule that follows the Trace Analyzer
(`concern`) never gets a call it does not analyse; a rule that judges what follows
an answer of some statuses (`starts_on`: a 429, a 409) gets other exchanges only
while something from such an answer waits (it is `awake`, not `quiet`). Most
answers (a 200 to a GET) concern a handful of the rules.

The engine also keeps, per rule, which requests it looked at (`looked_at`): a
count and the record seq numbers as ranges (bounded), so a report can say
"looked at 9 requests: records 36..45". A rule looked at an exchange when its
`seen` count grew while it was fed that exchange.

Real-Time Activity: `Engine.feed_message(message)` takes each websocket
message (`recording.messages.WebsocketMessage`), in order with the exchanges.
A message on the RTA websocket goes to the RTA rules (`rta_rules`: taps read,
reconnects, resyncs); the note of a frame a fault kept from the title (`dropped`) goes
to none, except that of an `rta: close`, which stands for the service ending the
websocket (the proxy cut it as a network loss does, so its close record reads as the
title's); a `GET /connect` handshake, though not MPSD traffic, goes
to them too (it says whose websocket it is, and is a reconnect attempt). One
`rta_state.Listening` follows every title's websocket, subscriptions and
session views; the polling rule reads it to say why polling is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from mpsdproxy import classify
from mpsdproxy import model
from mpsdproxy.recording.messages import WebsocketMessage
from mpsdproxy.verdicts.base import BaseRule
from mpsdproxy.verdicts.base import Concern
from mpsdproxy.verdicts.base import Decided
from mpsdproxy.verdicts.base import Status
from mpsdproxy.verdicts.base import Verdict
from mpsdproxy.verdicts.fault_rules import BackoffRule
from mpsdproxy.verdicts.fault_rules import ConflictRule
from mpsdproxy.verdicts.fault_rules import PreconditionRule
from mpsdproxy.verdicts.fault_rules import RetryAfterRule
from mpsdproxy.verdicts.limits import Limits
from mpsdproxy.verdicts.limits import RuleSettings
from mpsdproxy.verdicts.limits import default_limits
from mpsdproxy.verdicts.pattern_rules import BatchFrequencyRule
from mpsdproxy.verdicts.pattern_rules import BurstRule
from mpsdproxy.verdicts.pattern_rules import PollingRule
from mpsdproxy.verdicts.pattern_rules import RateBudgetRule
from mpsdproxy.verdicts.pattern_rules import RepeatedCallsRule
from mpsdproxy.verdicts.pattern_rules import SmallBatchRule
from mpsdproxy.verdicts.recovery_rules import RecoveryCallRule
from mpsdproxy.verdicts.recovery_rules import RecoveryStateRule
from mpsdproxy.verdicts.rta_rules import ReconnectRule
from mpsdproxy.verdicts.rta_rules import ResyncRule
from mpsdproxy.verdicts.rta_rules import RtaRule
from mpsdproxy.verdicts.rta_rules import TapReadRule
from mpsdproxy.verdicts.rta_state import Listening
from mpsdproxy.verdicts.rta_state import is_handshake
from mpsdproxy.verdicts.state import Facts
from mpsdproxy.verdicts.state import facts_of
from mpsdproxy.verdicts.streak_rules import Consecutive429Rule
from mpsdproxy.verdicts.streak_rules import MissingSessionRule

__all__ = ["DEFAULT_MAX_KEYS", "EXPIRY_STEP_S", "MAX_RANGES", "RULE_CLASSES", "LookedAt",
           "Engine"]

DEFAULT_MAX_KEYS = 10_000
#: Waiting verdicts are looked at (at most) this often, in record time.
EXPIRY_STEP_S = 1.0

#: At most this many ranges of record seqs are kept per rule for "looked at".
MAX_RANGES = 12


class LookedAt:
    """The requests one rule looked at: how many, and their seqs as ranges (bounded).

    Seqs extend the last range when they follow it; past MAX_RANGES ranges only
    the count and the last seq move on, and `text` says how many were not listed.
    """

    __slots__ = ("count", "ranges", "unlisted", "last")

    def __init__(self) -> None:
        self.count = 0
        self.ranges: list[list[int]] = []
        self.unlisted = 0
        self.last: int | None = None

    def add(self, seq: int) -> None:
        self.count += 1
        self.last = seq
        ranges = self.ranges
        if ranges and ranges[-1][1] + 1 == seq:
            ranges[-1][1] = seq
        elif ranges and ranges[-1][0] <= seq <= ranges[-1][1]:
            pass  # seen again (a rule looking twice): already listed
        elif len(ranges) < MAX_RANGES:
            ranges.append([seq, seq])
        else:
            self.unlisted += 1

    @property
    def records(self) -> str:
        """`36..45, 50`: the listed seqs."""
        return ", ".join(f"{a}..{b}" if b > a else str(a) for a, b in self.ranges)

    @property
    def text(self) -> str:
        """`looked at 9 requests: records 36..45`, for people."""
        if not self.count:
            return "looked at no requests"
        noun = "request" if self.count == 1 else "requests"
        more = f" and {self.unlisted} more up to record {self.last}" if self.unlisted else ""
        word = "record" if self.count == 1 else "records"
        return f"looked at {self.count} {noun}: {word} {self.records}{more}"

    def to_dict(self) -> dict[str, object]:
        return {"requests": self.count, "ranges": [list(r) for r in self.ranges],
                "unlisted": self.unlisted, "text": self.text}


#: The rules, in the order of base.RULES (the order verdicts and summaries come out in).
RULE_CLASSES: tuple[type[BaseRule], ...] = (
    RetryAfterRule, BackoffRule, PreconditionRule, ConflictRule, MissingSessionRule,
    TapReadRule, ReconnectRule, ResyncRule, RecoveryCallRule, RecoveryStateRule,
    RateBudgetRule, BurstRule, RepeatedCallsRule, PollingRule, Consecutive429Rule,
    SmallBatchRule, BatchFrequencyRule,
)


class _Plans:
    """Which rules an MPSD exchange goes to, in the rules' order, worked out once from
    each rule's `concern` and `starts_on`: a call the Trace Analyzer does not analyse
    goes to no rule that follows the analyzer, and an answer goes to a rule with
    `starts_on` only when its status is one of those or the rule is awake (something
    from such an answer waits). Most exchanges concern few rules: the others are not
    asked."""

    def __init__(self, rules: list[BaseRule]) -> None:
        #: analysed -> the rules its `concern` allows
        self.allowed: dict[bool, tuple[BaseRule, ...]] = {
            analysed: tuple(rule for rule in rules if rule.concern is Concern.EVERY
                            or (analysed and rule.concern is Concern.ANALYSED))
            for analysed in (False, True)}
        statuses = {s for rule in rules if rule.starts_on is not None for s in rule.starts_on}
        #: (analysed, status) -> the rules it goes to when no rule is awake; a status no
        #: rule starts on: `(analysed, None)`
        self.asleep: dict[tuple[bool, int | None], tuple[BaseRule, ...]] = {
            (analysed, status): tuple(rule for rule in allowed if rule.starts_on is None
                                      or status in rule.starts_on)
            for analysed, allowed in self.allowed.items() for status in (*statuses, None)}

    def rules_for(self, facts: Facts, awake: set[BaseRule]) -> Sequence[BaseRule]:
        """The rules `facts` goes to, in order (a new list only while a rule is awake)."""
        if awake:
            status = facts.status
            return [rule for rule in self.allowed[facts.analysed]
                    if rule.starts_on is None or status in rule.starts_on or rule in awake]
        plan = self.asleep.get((facts.analysed, facts.status))
        return self.asleep[(facts.analysed, None)] if plan is None else plan


class Engine:
    """Judges exchanges one at a time with bounded state.

    Everything it holds is bounded: sliding windows and per-key last state,
    each key with a deadline, and at most `max_keys` keys per rule (the least
    recently used key is decided and dropped first), so memory stays flat
    however long the recording.

    Exchanges should come roughly in the order they were recorded (by end
    time); a waiting verdict is decided `reorder_grace_s` after its deadline,
    so a slow request recorded late is still judged against it.
    """

    def __init__(self, limits: Limits | None = None, *, max_keys: int = DEFAULT_MAX_KEYS,
                 settings: RuleSettings | None = None) -> None:
        self.limits = limits or default_limits()
        if settings is not None:
            self.limits = replace(self.limits, rules=settings)
        self.settings = self.limits.rules
        self.rules: list[BaseRule] = [cls(self.settings, self.limits, max_keys)
                                      for cls in RULE_CLASSES]
        self.looked: dict[str, LookedAt] = {rule.id: LookedAt() for rule in self.rules}
        self.plans = _Plans(self.rules)
        #: The rules with `starts_on` that hold something from such an answer now (not
        #: `quiet`): each exchange goes to them too, whatever its status.
        self.awake: set[BaseRule] = set()
        #: the titles' RTA websockets, subscriptions and session views, shared by the rules
        self.listening = Listening(max_keys)
        self.rta_rules: list[RtaRule] = [r for r in self.rules if isinstance(r, RtaRule)]
        for rule in self.rules:
            if hasattr(rule, "listening"):
                rule.listening = self.listening
        #: websocket messages fed, and how many of them were RTA's
        self.messages = 0
        self.rta_messages = 0
        self.now = 0.0
        self.next_expiry = -math.inf
        #: exchanges fed, MPSD or not
        self.fed = 0
        #: exchanges fed that were not MPSD traffic (judged by no rule)
        self.other = 0
        #: (rule id, status) -> how many verdicts were decided
        self.counts: dict[tuple[str, Status], int] = {}
        self.finished = False

    def facts(self, exchange: model.Exchange) -> Facts:
        """What the rules read from `exchange` (numbered `fed + 1` when it has no seq)."""
        return facts_of(exchange, self._service, now=self.now, seq=self.fed + 1,
                        custom_agent=self.settings.custom_user_agent)

    def _service(self, host: str, kind: str, path: str) -> str:
        return self.limits.service_for(host, kind, path).name

    def looked_at(self, rule_id: str) -> LookedAt:
        """The requests rule `rule_id` looked at so far."""
        return self.looked[rule_id]

    def feed(self, exchange: model.Exchange) -> list[Verdict]:
        """The verdicts this exchange decides (its own, and those whose time it passed)."""
        if self.finished:
            raise RuntimeError("the engine has finished: make a new one for more exchanges")
        if not classify.is_mpsd(exchange):
            if is_handshake(exchange):
                return self._handshake(exchange)
            return self._pass_over(exchange)
        facts = self.facts(exchange)
        self.fed += 1
        out = self._catch_up(facts.start)
        self.listening.saw(facts)
        looked = self.looked
        for rule in self.plans.rules_for(facts, self.awake):
            before = rule.seen
            decided = rule.feed(facts)
            if rule.seen > before:
                looked[rule.id].add(facts.seq)
            if rule.starts_on is not None:
                self._wake(rule)
            if decided:
                out.extend(self._counted(decided))
        return out

    def _wake(self, rule: BaseRule) -> None:
        """Keep `awake` up to date for a rule with `starts_on`, after it was fed or its
        waits expired."""
        if rule.quiet():
            self.awake.discard(rule)
        else:
            self.awake.add(rule)

    def _handshake(self, exchange: model.Exchange) -> list[Verdict]:
        """A `GET /connect`: not MPSD traffic, but whose websocket it is (and a reconnect)."""
        facts = self.facts(exchange)
        out = self._pass_over(exchange)
        self.listening.handshake(facts)
        for rule in self.rta_rules:
            out.extend(self._looked(rule, facts.seq, rule.handshake, facts))
        return out

    def feed_message(self, message: WebsocketMessage) -> list[Verdict]:
        """The verdicts a websocket message decides (its own, and those whose time it passed).

        Feed every message in order with the exchanges (a recording's order); a message
        without a seq is numbered after the records fed so far. Messages on other
        websockets than RTA's only move the clock.
        """
        if self.finished:
            raise RuntimeError("the engine has finished: make a new one for more messages")
        self.messages += 1
        seq = message.seq if message.seq is not None else self.fed + self.messages
        out = [] if message.start is None else self._catch_up(message.start)
        if message.dropped:  # a fault kept it from the title: only its time passes ...
            if message.provenance.get("fault") != "rta:close":
                return out
            # ... but an `rta: close` lost it with the websocket, which the service ended
            message = replace(message, opcode="close", payload=b"", dropped=False)
        event = self.listening.event(message, seq, self.now)
        if event is None:
            return out
        self.rta_messages += 1
        for rule in self.rta_rules:
            out.extend(self._looked(rule, seq, rule.feed_message, event))
        return out

    def _looked(self, rule: BaseRule, seq: int, feed: Callable[[Any], Decided],
                what: Any) -> Decided:
        before = rule.seen
        decided = feed(what)
        if rule.seen > before:
            self.looked[rule.id].add(seq)
        if rule.starts_on is not None:
            self._wake(rule)
        return self._counted(decided) if decided else decided

    @property
    def judged(self) -> int:
        """How many of the exchanges fed were MPSD traffic, given to the rules."""
        return self.fed - self.other

    def _pass_over(self, exchange: model.Exchange) -> list[Verdict]:
        """An exchange no rule judges: counted, and its time still passes."""
        self.fed += 1
        self.other += 1
        start = exchange.start if exchange.start is not None else exchange.end
        return [] if start is None else self._catch_up(start)

    def _catch_up(self, start: float) -> list[Verdict]:
        """Move the clock to `start`, deciding what waited only once a step has passed."""
        if start <= self.now:
            return []
        if start - self.settings.reorder_grace_s < self.next_expiry:
            self.now = start  # `advance(start)` with nothing due yet
            return []
        return self.advance(start)

    def advance(self, now: float) -> list[Verdict]:
        """Decide what waited for a time `now` has passed (the live log calls this on a timer)."""
        if now <= self.now:
            return []
        self.now = now
        cutoff = now - self.settings.reorder_grace_s
        if cutoff < self.next_expiry:
            return []
        self.next_expiry = cutoff + EXPIRY_STEP_S
        out: list[Verdict] = []
        for rule in self.rules:
            decided = rule.expire(cutoff)
            if rule in self.awake:
                self._wake(rule)
            if decided:
                out.extend(self._counted(decided))
        self.listening.expire(cutoff)
        return out

    def finish(self) -> list[Verdict]:
        """Decide everything still waiting, then summarise each rule that decided nothing."""
        if self.finished:
            return []
        out: list[Verdict] = []
        for rule in self.rules:
            out.extend(self._counted(rule.finish()))
        decided = {rule for rule, _ in self.counts}
        for rule in self.rules:
            if rule.id in decided:
                continue
            if rule.seen:
                reason = f"{rule.summary()} ({self.looked[rule.id].text})"
                summary = rule.verdict(Status.PASS, reason, time=self.now or None)
            else:
                summary = rule.verdict(
                    Status.NOT_APPLICABLE,
                    f"nothing to judge: {rule.nothing} (in {self._judged_text()})",
                    time=self.now or None)
            out.extend(self._counted((summary,)))
        self.finished = True
        return out

    def _judged_text(self) -> str:
        text = f"{self.judged} session-directory exchanges"
        return f"{text}, {self.other} with other hosts not judged" if self.other else text

    def _counted(self, verdicts: Decided) -> Decided:
        for v in verdicts:
            self.counts[(v.rule, v.status)] = self.counts.get((v.rule, v.status), 0) + 1
        return verdicts

    def total(self, status: Status) -> int:
        """How many verdicts of this status were decided so far."""
        return sum(n for (_, s), n in self.counts.items() if s is status)
