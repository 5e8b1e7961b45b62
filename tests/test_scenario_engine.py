"""Triggers, throttling and the engine: which rule fires on which `model.Request`, and when."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mpsdproxy import catalog
from mpsdproxy import classify
from mpsdproxy import faults
from mpsdproxy import fgrl
from mpsdproxy import model
from mpsdproxy import resources
from mpsdproxy import scenario
from mpsdproxy.scenario import Engine
from mpsdproxy.scenario import Per
from mpsdproxy.scenario import Phase
from mpsdproxy.scenario import Trigger

ROOT = Path(__file__).resolve().parent.parent
SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
GAME = f"/serviceconfigs/{SCID}/sessiontemplates/GameSession/sessions/game-1"
HOPPER = f"/serviceconfigs/{SCID}/hoppers/QuickMatch"
MPSD = "sessiondirectory.xboxlive.com"

Pairs = Mapping[str, str] | Iterable[tuple[str, str]]


def request(method: str = "GET", path: str = LOBBY, host: str = MPSD,
            headers: Pairs = ()) -> model.Request:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return model.Request(method, f"https://{host}{path}", model.Headers(pairs))


def rules_yaml(*rules: str, top: str = "") -> str:
    return top + "rules:\n" + "".join(f"  - {r}\n" for r in rules)


def engine_for(*rules: str, seed: int = 0) -> Engine:
    return Engine(scenario.parse_scenario(rules_yaml(*rules, top=f"seed: {seed}\n")), start=0.0)


def shipped_engine(name: str) -> Engine:
    return Engine(scenario.load(ROOT / "mpsdproxy" / "scenarios" / f"{name}.yaml"), start=0.0)


def names(fired: Iterable[scenario.Firing | None]) -> list[str | None]:
    return [f.rule.name if f else None for f in fired]


# --- shipped scenarios ------------------------------------------------------------------


#: The walk every-fault.yaml is written for: (method, path, headers, whether the session
#: existed before the request as the proxy knows it: None until it has seen it).
EVERY_FAULT_WALK: list[tuple[str, str, dict[str, str], bool | None]] = (
    [("GET", LOBBY, {}, None)]                                      # 204: not created yet
    + [("PUT", LOBBY, {"If-None-Match": "*"}, False)]                # the create: 201
    + [("GET", LOBBY, {}, True)]                                     # 200
    + [("GET", LOBBY, {"If-None-Match": '"e1"'}, True)] * 4           # 304, 429, 503, delay
    + [("PUT", LOBBY, {"If-Match": '"e0"'}, True)]                   # 412 with the session
    + [("PUT", LOBBY, {"If-None-Match": "*"}, True)]                 # 412, bodiless
    + [("PUT", LOBBY, {}, True)] * 6                                 # 400 ... dropped
    + [("DELETE", LOBBY, {}, True)]                                  # 405
    + [("POST", "/handles", {}, None)]                               # 202
    + [("GET", "/handles/h1/session", {}, None)]                     # 404
    + [("GET", HOPPER + "/stats", {}, None)]                         # untouched
)


def walk(engine: Engine, steps: list[tuple[str, str, dict[str, str], bool | None]],
         ) -> list[scenario.Firing | None]:
    """Each step through both phases, as the proxy asks: the response phase only for a
    request that was forwarded."""
    fired = []
    for method, path, headers, exists in steps:
        sent = request(method, path, headers=headers)
        firing = engine.evaluate(sent, Phase.REQUEST, now=1.0, exists=exists)
        if firing is None or not (firing.rule.fault.answers or firing.rule.fault.connection):
            firing = engine.evaluate(sent, Phase.RESPONSE, now=1.0, exists=exists) or firing
        fired.append(firing)
    return fired


def test_every_fault_walks_through_every_status_where_the_service_can_give_it() -> None:
    """The walk meets each status once, each on a request its row can answer."""
    engine = shipped_engine("every-fault")
    fired = walk(engine, EVERY_FAULT_WALK)
    assert names(fired) == [
        "read-204", "write-201", "read-200", "read-304", "read-429", "read-503",
        "read-delayed", "write-412-stale-etag", "write-412-exists", "write-400", "write-403",
        "write-403-read-only", "write-409", "write-204-deleted", "write-dropped",
        "delete-405", "handle-202", "handle-404", None]
    statuses = {f.rule.fault.row(request(m, p, headers=h), e).status
                for f, (m, p, h, e) in zip(fired, EVERY_FAULT_WALK, strict=True)
                if f is not None and f.rule.fault.answers}
    assert statuses == set(catalog.listed_statuses())
    assert all(s.fires == 1 for s in engine.stats())
    # each answer, built from its row as the table says, classifies as that row, conformant,
    # and is one the service could give there
    document = {"constants": {}, "properties": {}, "changeNumber": 2}
    for (method, path, headers, exists), firing in zip(EVERY_FAULT_WALK, fired, strict=True):
        if firing is None or firing.rule.fault.status is None:
            continue
        sent = request(method, path, headers=headers)
        fault = firing.rule.fault
        row = fault.row(sent, exists)
        assert row is not None
        assert catalog.why_not(row, catalog.Situation.of(sent, exists)) is None
        answer = faults.build(row, session=document if row.returns_session else None,
                              etag='"e2"', retry_after=fault.retry_after)
        found = classify.classify(model.Exchange(sent, answer))
        assert (found.id, found.anomalies) == (row.id, ()), firing.rule.name


def test_stale_etag_on_join_fires_once_per_lobby_on_an_etag_only() -> None:
    engine = shipped_engine("stale-etag-on-join")
    cond = {"If-Match": '"etag"'}
    other = LOBBY.replace("lobby-1", "lobby-2")
    seq = [(request("PUT"), True), (request("PUT", headers={"If-Match": "*"}), True),
           (request("PUT", headers=cond), None), (request("PUT", headers=cond), True),
           (request("PUT", headers=cond), True), (request("PUT", other, headers=cond), True),
           (request("PUT", GAME, headers=cond), True)]
    assert [engine.evaluate(r, now=1.0, exists=e) is not None for r, e in seq] == [
        False, False, False, True, False, True, False]
    (stats,) = engine.stats()
    assert (stats.matches, stats.fires, stats.inapplicable) == (3, 2, 1)
    assert stats.last_reason == ("412.if-match-session needs If-Match with an ETag on an "
                                 "existing session; the proxy has not seen this session yet")


def test_outage_windows() -> None:
    engine = shipped_engine("outage")
    seq = [(29.9, LOBBY), (30.0, LOBBY), (49.9, HOPPER), (50.0, LOBBY), (120.0, HOPPER),
           (120.0, LOBBY + "/members/me"), (124.9, LOBBY), (125.0, LOBBY)]
    fired = [engine.evaluate(request("GET", path), now=now) for now, path in seq]
    assert names(fired) == [
        None, "outage", "outage", None, None, "aftershock", "aftershock", None]
    assert (fired[1].rule.fault.status, fired[1].rule.fault.retry_after) == (503, 5)


def test_lost_write_answer_replaces_the_3rd_and_drops_the_6th() -> None:
    engine = shipped_engine("lost-write-answer")
    assert engine.evaluate(request("PUT"), Phase.REQUEST, now=1.0) is None
    fired = [engine.evaluate(request("PUT"), Phase.RESPONSE, now=1.0) for _ in range(8)]
    assert names(fired) == [
        None, None, "write-answered-503", None, None, "write-answer-dropped", None, None]


def test_slow_matchmaking_delays() -> None:
    engine = shipped_engine("slow-matchmaking")
    create = engine.evaluate(request("POST", HOPPER), now=1.0)
    ticket = engine.evaluate(request("GET", HOPPER + "/tickets/t1"), now=1.0)
    stats = engine.evaluate(request("GET", HOPPER + "/stats"), now=1.0)
    assert 0 < create.delay <= 8.0 and 0.2 <= ticket.delay <= 2.0 and stats.delay == 1.5
    assert engine.evaluate(request("GET", LOBBY), now=1.0) is None


def test_fgrl_throttling_answers_429_past_the_burst() -> None:
    engine = shipped_engine("fgrl-throttling")
    fired = [engine.evaluate(request("POST", "/handles"), user="alice", now=1.0)
             for _ in range(4)]
    assert fired[:3] == [None] * 3
    assert fired[3].rule.name == "fgrl-budget"
    assert fired[3].throttle == fgrl.Decision(False, 15, 4, 3, 15)
    assert engine.evaluate(request("POST", "/handles"), user="bob", now=1.0) is None


# --- throttling -------------------------------------------------------------------------


def throttle_engine(burst: int, sustained: int) -> Engine:
    return engine_for(f"{{name: fgrl, fault: {{throttle: {{burst: {burst}, "
                      f"sustained: {sustained}}}}}}}")


def test_throttle_burst_of_2_at_0_1_2_seconds_refuses_the_third_for_13_seconds() -> None:
    """The same numbers as the stand-in's: both count with fgrl's one window."""
    engine = throttle_engine(2, 100)
    got = [engine.evaluate(request(), user="u", now=t) for t in (0.0, 1.0, 2.0)]
    assert got[:2] == [None, None]
    assert got[2] is not None and got[2].throttle == fgrl.Decision(False, 13, 3, 2, 15)
    caller = fgrl.Caller(fgrl.Budget(2, 100))
    assert [caller.admit(t) for t in (0.0, 1.0, 2.0)][2] == got[2].throttle
    assert engine.evaluate(request(), user="other", now=2.0) is None  # each user has a budget
    assert engine.evaluate(request(), user="u", now=14.9) is not None
    assert engine.evaluate(request(), user="u", now=15.0) is None


def test_throttle_never_lets_more_than_burst_through_in_15_seconds() -> None:
    engine = throttle_engine(5, 1000)
    allowed = [t / 4 for t in range(400)
               if engine.evaluate(request(), user="u", now=t / 4) is None]
    for i, t in enumerate(allowed):
        assert sum(1 for u in allowed[i:] if u - t < 15) <= 5


def test_throttle_sustained_counts_throttled_requests() -> None:
    engine = throttle_engine(4, 6)
    fired = [engine.evaluate(request(), user="u", now=t * 20.0) for t in range(8)]
    assert [f is None for f in fired] == [True] * 6 + [False] * 2
    decision = engine.evaluate(request(), user="u", now=160.0).throttle
    assert (decision.ok, decision.maximum, decision.period) == (False, 6, 300)


def test_throttle_sustained_retry_after_is_truthful() -> None:
    """Nine calls, 20 s apart, against a sustained budget of 6: the refused call at 160 s
    counts too, so one more call fits once the calls at 0-60 s have left, at 360 s."""
    engine = throttle_engine(4, 6)
    for t in range(8):
        engine.evaluate(request(), user="u", now=t * 20.0)
    decision = engine.evaluate(request(), user="u", now=160.0).throttle
    assert decision.retry_after == 200
    assert engine.evaluate(request(), user="u", now=160.0 + decision.retry_after) is None


def test_throttle_keys_on_the_user_else_the_client() -> None:
    engine = throttle_engine(1, 10)
    assert engine.evaluate(request(), client="10.0.0.1", now=1.0) is None
    assert engine.evaluate(request(), client="10.0.0.1", now=1.0) is not None
    assert engine.evaluate(request(), client="10.0.0.1", user="alice", now=1.0) is None


# --- the engine -------------------------------------------------------------------------


def test_first_rule_that_fires_wins_and_the_others_still_count() -> None:
    engine = engine_for(
        "{name: every-2nd, when: {every: 2}, fault: {status: 503}}",
        "{name: third, when: {nth: 3}, fault: {status: 404}}",
        "{name: fourth, when: {nth: 4}, fault: {status: 400}}",
    )
    fired = [engine.evaluate(request(), now=1.0) for _ in range(5)]
    assert names(fired) == [None, "every-2nd", "third", "every-2nd", None]
    stats = {s.name: (s.matches, s.fires) for s in engine.stats()}
    assert stats == {"every-2nd": (5, 2), "third": (5, 1), "fourth": (5, 0)}
    assert list(engine.stats_lines())[0] == "every-2nd: 5 matched, 2 fired"


def test_rules_only_see_their_phase_and_their_match() -> None:
    engine = engine_for(
        "{name: put-answer, match: {method: PUT}, phase: response, fault: {status: 503}}",
        "{name: hopper-lag, match: {resource: hopper}, fault: {delay: 2s}}",
    )
    assert engine.evaluate(request("PUT"), Phase.REQUEST, now=1.0) is None
    fired = engine.evaluate(request("PUT"), Phase.RESPONSE, now=1.0)
    assert fired is not None and fired.rule.name == "put-answer"
    lag = engine.evaluate(request("POST", HOPPER), now=1.0)
    assert lag is not None and lag.delay == 2.0 and lag.throttle is None
    assert engine.evaluate(request("POST", HOPPER), Phase.RESPONSE, now=1.0) is None


def test_per_client_and_per_session_scopes() -> None:
    engine = engine_for(
        "{name: 2nd-per-client, per: client, when: {nth: 2}, fault: {status: 429}}",
        "{name: 1st-per-session, per: session, match: {method: PUT}, when: {nth: 1}, "
        "fault: {status: 409}}",
    )
    seq = [("GET", LOBBY, "a"), ("GET", LOBBY, "b"), ("GET", GAME, "a"), ("PUT", GAME, "b"),
           ("PUT", GAME, "c"), ("PUT", HOPPER, "c"), ("PUT", LOBBY, "d")]
    fired = [engine.evaluate(request(m, p), client=c, now=1.0) for m, p, c in seq]
    # GAME's first PUT was answered by the per-client rule, so only LOBBY's fires; the
    # hopper names no session, so the per-session rule does not see it
    assert [(f.rule.name, f.scope) if f else None for f in fired] == [
        None, None, ("2nd-per-client", "a"), ("2nd-per-client", "b"), None,
        ("2nd-per-client", "c"), ("1st-per-session", resources.parse(LOBBY).key)]


def test_probability_and_delay_repeat_with_the_scenario_seed() -> None:
    rules = ("{name: p, when: {probability: 0.5}, fault: {delay: {uniform: [0s, 1s]}}}",
             "{name: q, when: {probability: 0.5}, fault: {status: 503}}")

    def run(seed: int) -> list[tuple[str, float] | None]:
        engine = engine_for(*rules, seed=seed)
        out = []
        for _ in range(50):
            f = engine.evaluate(request(), now=1.0)
            out.append((f.rule.name, f.delay) if f else None)
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)
    assert {f[0] for f in run(7) if f} == {"p", "q"}


def test_throttle_rule_fires_only_past_the_budget() -> None:
    engine = engine_for(
        "{name: fgrl, fault: {throttle: {burst: 2, sustained: 10}}}",
        "{name: rest, fault: {status: 404}}",
    )
    got = [engine.evaluate(request(), user="alice", now=5.0) for _ in range(3)]
    assert names(got) == ["rest", "rest", "fgrl"]
    assert got[2].throttle == fgrl.Decision(False, 15, 3, 2, 15)
    assert got[2].rule.fault.row(request()).id == scenario.THROTTLE_ENTRY
    bob = engine.evaluate(request(), user="bob", now=5.0)
    assert bob is not None and bob.rule.name == "rest"


def test_enable_disable_and_reset() -> None:
    engine = engine_for("{name: a, when: {nth: 1}, fault: {status: 503}}",
                        "{name: b, fault: {status: 404}}")
    engine.disable("A")
    assert engine.evaluate(request(), now=1.0).rule.name == "b"
    assert [s.matches for s in engine.stats()] == [0, 1]
    engine.enable("a")
    assert engine.evaluate(request(), now=1.0).rule.name == "a"  # off, a never saw the first
    engine.disable()
    assert engine.evaluate(request(), now=1.0) is None
    assert [s.matches for s in engine.stats()] == [1, 2]
    engine.enable()
    engine.reset()
    assert [(s.matches, s.fires) for s in engine.stats()] == [(0, 0), (0, 0)]
    assert engine.evaluate(request(), now=1.0).rule.name == "a"
    with pytest.raises(ValueError, match="no rule named 'zzz'.*rules are: a, b"):
        engine.disable("zzz")


def test_rules_sharing_a_match_still_count_on_their_own() -> None:
    """Equal matches are checked once per request; each rule keeps its own phase, scope,
    switch and counters."""
    engine = engine_for(
        "{name: a, match: {method: PUT, path: '*/sessions/*'}, when: {nth: 2}, "
        "fault: {status: 503}}",
        "{name: b, match: {method: PUT, path: '*/sessions/*'}, per: session, "
        "when: {nth: 1}, fault: {status: 404}}",
        "{name: c, match: {method: PUT, path: '*/sessions/*'}, phase: response, "
        "fault: {status: 409}}",
        "{name: d, match: {method: PUT, path: '*/sessions/*'}, per: client, "
        "when: {nth: 3}, fault: {status: 429}}",
    )
    assert engine.phases == {Phase.REQUEST, Phase.RESPONSE}
    seq = [(request("PUT"), "x"), (request("PUT"), "x"), (request("GET"), ""),
           (request("PUT", HOPPER), ""), (request("PUT"), "x"), (request("PUT", GAME), "y")]
    fired = [engine.evaluate(r, client=c, now=1.0) for r, c in seq]
    assert [(f.rule.name, f.scope) if f else None for f in fired] == [
        ("b", resources.parse(LOBBY).key), ("a", ""), None, None, ("d", "x"),
        ("b", resources.parse(GAME).key)]
    stats = {s.name: (s.matches, s.fires) for s in engine.stats()}
    assert stats == {"a": (4, 1), "b": (4, 2), "c": (0, 0), "d": (4, 1)}
    engine.disable("b")
    new = request("PUT", "/serviceconfigs/x/sessiontemplates/t/sessions/new")
    assert engine.evaluate(new, now=1.0) is None
    assert engine.evaluate(request("PUT"), Phase.RESPONSE, now=1.0).rule.name == "c"


def test_disabled_in_file_starts_off() -> None:
    engine = engine_for("{name: a, enabled: false, fault: {status: 503}}")
    assert engine.evaluate(request(), now=1.0) is None
    assert engine.stats()[0].enabled is False


def test_reset_moves_the_time_window() -> None:
    engine = engine_for("{name: a, when: {after: 10s, for: 5s}, fault: {status: 503}}")
    assert engine.evaluate(request(), now=12.0) is not None
    engine.reset(start=100.0)
    assert engine.evaluate(request(), now=105.0) is None
    assert engine.evaluate(request(), now=111.0) is not None


def test_nth_fires_exactly_once_under_50_concurrent_clients() -> None:
    engine = engine_for("{name: once, match: {method: PUT}, when: {nth: 25}, "
                        "fault: {status: 503}}")
    barrier = threading.Barrier(50)
    results: list[scenario.Firing | None] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        barrier.wait(timeout=10)
        for _ in range(20):
            f = engine.evaluate(request("PUT"), client=f"c{i}")
            with lock:
                results.append(f)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(results) == 1000
    assert sum(1 for f in results if f is not None) == 1
    assert engine.stats()[0].matches == 1000


def test_every_condition_of_a_match_is_checked_on_every_request() -> None:
    """Nothing is remembered between requests: requests that differ from a matching one
    only in method, resource, path, host or a header each get their own answer."""
    engine = engine_for(
        "{name: a, match: {method: PUT, resource: session, path: '*/lobby-*', "
        "host: '*.xboxlive.com', headers: {If-Match: '*'}}, fault: {status: 412}}")
    cond = [("If-Match", "*")]
    hit = request("PUT", LOBBY, headers=cond)
    misses = [request("GET", LOBBY, headers=cond),
              request("PUT", LOBBY, host="example.org", headers=cond),
              request("PUT", LOBBY),
              request("PUT", LOBBY.replace("lobby", "game"), headers=cond),
              request("PUT", LOBBY + "/members/me", headers=cond)]
    for sent in [hit, *misses, hit]:
        assert (engine.evaluate(sent, now=1.0) is not None) is (sent is hit)
    assert engine.stats()[0].matches == 2


@pytest.mark.parametrize(("rule", "caller", "existence"), [
    ("{name: r, match: {}, when: {every: 2}, fault: {delay: 1ms}}", False, False),
    ("{name: r, match: {}, per: session, when: {nth: 2}, fault: {drop: true}}", False, False),
    ("{name: r, match: {}, fault: {status: 412, force: true}}", False, False),
    ("{name: r, match: {}, per: client, when: {nth: 2}, fault: {delay: 1ms}}", True, False),
    ("{name: r, match: {}, fault: {throttle: {burst: 1, sustained: 1}}}", True, False),
    ("{name: r, match: {}, when: {every: 2}, fault: {status: 412}}", False, True),
])
def test_an_engine_says_whether_it_reads_the_caller_and_the_session_state(
        rule: str, caller: bool, existence: bool) -> None:
    """What an engine says it does not read changes none of its decisions: a caller may
    leave it out."""
    engine = engine_for(rule)
    assert (engine.reads_caller, engine.reads_existence) == (caller, existence)
    blind = engine_for(rule)
    sent = [request("PUT", path, headers={"If-Match": '"e1"'})
            for path in (LOBBY, GAME, LOBBY, LOBBY, GAME, LOBBY)]
    told = [engine.evaluate(r, now=float(i), client=f"c{i % 2}", user=f"u{i % 2}",
                            exists=i % 3 == 0) for i, r in enumerate(sent)]
    left_out = [blind.evaluate(r, now=float(i),
                               client=f"c{i % 2}" if caller else "",
                               user=f"u{i % 2}" if caller else "",
                               exists=(i % 3 == 0) if existence else None)
                for i, r in enumerate(sent)]
    assert told == left_out
    assert engine.stats() == blind.stats()


# --- the engine against the plain reading of the rules ----------------------------------


class _PlainRule:
    """One rule's state kept the plain way, with the engine's documented random streams
    (one per rule and purpose, seeded `seed:index:purpose`)."""

    def __init__(self, rule: scenario.Rule, seed: int, start: float) -> None:
        self.rule, self.seed, self.start = rule, seed, start
        self.enabled = rule.enabled
        self.reset()

    def reset(self) -> None:
        prefix = f"{self.seed}:{self.rule.index}"
        self.trigger = Trigger(self.rule.when, random.Random(f"{prefix}:when"), self.start)
        self.delay_rng = random.Random(f"{prefix}:delay")
        budget = self.rule.fault.throttle
        self.callers = fgrl.Callers(budget) if budget else None


class _PlainEngine:
    """The engine's contract written the plain way: every rule in file order, its match,
    Trigger.step before a winner and Trigger.count after one."""

    def __init__(self, parsed: scenario.Scenario, start: float) -> None:
        self.rules = [_PlainRule(rule, parsed.seed, start) for rule in parsed.rules]

    def evaluate(self, sent: model.Request, phase: Phase, client: str, user: str,
                 now: float) -> scenario.Firing | None:
        winner = None
        for plain in self.rules:
            rule = plain.rule
            if rule.phase is not phase or not plain.enabled:
                continue
            scope = {Per.GLOBAL: "", Per.CLIENT: client,
                     Per.SESSION: sent.resource.key}[rule.per]
            if scope is None or not scenario.matches(rule.match, sent):
                continue
            if winner is not None:
                plain.trigger.count(now, scope)
                continue
            counters = plain.trigger.step(now, scope)
            if counters is None:
                continue
            decision = plain.callers.admit(user or client, now) if plain.callers else None
            if decision is not None and decision.ok:
                continue
            plain.trigger.record_fire(counters)
            winner = scenario.Firing(rule, scope, rule.fault.delay_seconds(plain.delay_rng),
                                     decision)
        return winner

    def stats(self) -> list[scenario.RuleStats]:
        return [scenario.RuleStats(p.rule.name, p.rule.phase, p.enabled, p.trigger.match_count,
                                   p.trigger.fire_count) for p in self.rules]


PLAIN_MATCHES = [
    {}, {"method": "GET"}, {"method": ["GET", "PUT"], "resource": "session"},
    {"resource": ["member", "session"], "path": "*/sessions/*"},
    {"path": "*/lobby-*", "host": "*.xboxlive.com"}, {"headers": {"If-Match": "*"}},
    {"method": "PUT", "headers": {"If-Match": '"0x1*', "If-None-Match": False}},
    {"resource": "hopper"},
]
PLAIN_WHENS = [
    {}, {"nth": 1}, {"nth": 3}, {"first": 2}, {"every": 2}, {"every": 3, "times": 1},
    {"probability": 0.5}, {"first": 3, "probability": 0.7}, {"after": "2s"},
    {"after": "1s", "for": "3s", "from": "first-match"}, {"after": "0s", "for": "2s", "nth": 2},
    {"every": 1, "times": 2, "probability": 0.9},
]
PLAIN_FAULTS = [
    {"status": 503}, {"delay": {"uniform": ["10ms", "50ms"]}},
    {"throttle": {"burst": 2, "sustained": 3}, "status": 429},
]
PLAIN_RULES = st.fixed_dictionaries(
    {"match": st.sampled_from(PLAIN_MATCHES), "when": st.sampled_from(PLAIN_WHENS),
     "fault": st.sampled_from(PLAIN_FAULTS), "per": st.sampled_from(list(Per)),
     "phase": st.sampled_from(list(Phase)), "enabled": st.booleans()})
PLAIN_REQUESTS = st.tuples(
    st.sampled_from(["GET", "PUT", "get", "DELETE"]),
    st.sampled_from([LOBBY, GAME, HOPPER, LOBBY + "/members/me", "/handles", "/x?y=1"]),
    st.sampled_from([MPSD, "example.org", "127.0.0.1:8081"]),
    st.sampled_from([(), (("If-Match", "*"),), (("if-match", '"0x1A"'),),
                     (("If-Match", '"0x2"'), ("If-None-Match", "*"))]),
    st.sampled_from(["", "c1", "c2"]), st.sampled_from(list(Phase)),
    st.floats(min_value=0, max_value=2))
PLAIN_ACTIONS = st.one_of(
    PLAIN_REQUESTS, st.tuples(st.just("toggle"), st.integers(0, 7)), st.just(("reset",)))


def _named(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, rule in enumerate(rules):
        rule = {"name": f"r{i}", **rule}
        if rule["fault"].get("throttle") and rule["phase"] is Phase.RESPONSE:
            rule["phase"] = Phase.REQUEST  # throttling answers before the service
        if rule["match"].get("resource") == "hopper" and rule["per"] is Per.SESSION:
            rule["per"] = Per.CLIENT  # a hopper is no session
        out.append({k: str(v) if isinstance(v, Per | Phase) else v for k, v in rule.items()})
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=st.lists(PLAIN_RULES, min_size=1, max_size=8),
       actions=st.lists(PLAIN_ACTIONS, min_size=10, max_size=60), seed=st.integers(0, 3))
def test_engine_decides_as_the_plain_reading_of_the_rules(
        rules: list[dict[str, Any]], actions: list[tuple[Any, ...]], seed: int) -> None:
    """Same winners, scopes, delays, throttle numbers and stats as rule-by-rule checking,
    through switches and resets."""
    parsed = scenario.parse_scenario(json.dumps({"seed": seed, "rules": _named(rules)}))
    engine, plain = Engine(parsed, start=0.0), _PlainEngine(parsed, start=0.0)
    now = 0.0
    for action in actions:
        if action[0] == "reset":
            engine.reset()
            for rule in plain.rules:
                rule.reset()
            continue
        if action[0] == "toggle":
            index = action[1] % len(parsed.rules)
            enabled = not plain.rules[index].enabled
            engine.set_enabled(enabled, f"r{index}")
            plain.rules[index].enabled = enabled
            continue
        method, path, host, headers, client, phase, step = action
        now += step
        sent = request(method, path, host, headers)
        assert engine.evaluate(sent, phase, client=client, user=client, now=now) == \
            plain.evaluate(sent, phase, client, client, now)
        assert engine.stats() == plain.stats()
