"""End to end: the shipped scenarios through `mpsdproxy run --scenario` in front of the stand-in.

Real clients on real sockets. Each scenario fires exactly as written: the rule
behind every exchange (the recording's provenance) and the counts printed at
shutdown (matched, fired, not applicable) are what a fresh `scenario.Engine`
predicts for the same requests, told whether the proxy had seen each one's
session. Injected answers are the table's rows, and only where the service can
give them; a forced 412 is a newer session made real on the stand-in.
"""

from __future__ import annotations

import random
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import urllib3
from conftest import Launcher
from conftest import read_records
from scenario_kit import HOPPER
from scenario_kit import SHIPPED
from scenario_kit import Title
from scenario_kit import activity_handle
from scenario_kit import auth
from scenario_kit import check_conformant
from scenario_kit import check_forced_412
from scenario_kit import check_row
from scenario_kit import direct
from scenario_kit import lobby
from scenario_kit import me
from scenario_kit import not_applicable_reasons
from scenario_kit import predict
from scenario_kit import predict_counts
from scenario_kit import raw_get
from scenario_kit import read_all
from scenario_kit import rules_of
from scenario_kit import shutdown_counts
from scenario_kit import start

from mpsdproxy import catalog
from mpsdproxy import scenario
from mpsdproxy import title

#: The player of the walks below (synthetic): the stand-in knows one xuid per user.
XUID = "2533274800000001"


# --- every fault of the table -----------------------------------------------------------------

#: every-fault.yaml's walk (its header comment): the rule each request gets, and whether the
#: proxy had seen its session exist before it. Only forwarded answers teach the proxy: the
#: injected 204 leaves the lobby unknown, the forwarded create shows it.
EVERY_FAULT_WALK = [
    "read-204", "write-201", "read-200", "read-304", "read-429", "read-503", "read-delayed",
    "write-412-stale-etag", "write-412-exists", "write-400", "write-403", "write-403-read-only",
    "write-409", "write-204-deleted", "write-dropped", "delete-405", "handle-202", "handle-404",
    None]
EVERY_FAULT_SEEN: list[bool | None] = [None, None] + [True] * 14 + [None] * 3

#: The row each answered rule's answer is.
EVERY_FAULT_ROWS = {
    "read-204": "204.get-session", "write-201": "201.created", "read-200": "200.ok",
    "read-304": "304.not-modified", "read-429": "429.too-many-requests",
    "read-503": "503.service-unavailable", "write-412-stale-etag": "412.if-match-session",
    "write-412-exists": "412.precondition-failed", "write-400": "400.bad-request",
    "write-403": "403.forbidden", "write-403-read-only": "403.read-only",
    "write-409": "409.conflict", "write-204-deleted": "204.put-session-deleted",
    "delete-405": "405.method-not-allowed", "handle-202": "202.accepted",
    "handle-404": "404.not-found"}


def test_every_fault_walks_through_every_row(launch: Launcher) -> None:
    path = SHIPPED / "every-fault.yaml"
    standin, proxy = start(launch, path)
    t = Title(proxy.url)
    session = lobby("every")
    answers: list[httpx.Response | None] = [t.send("GET", session)]  # not created yet
    answers.append(t.send("PUT", session, body=me(XUID), headers=(("If-None-Match", "*"),)))
    created = answers[-1]
    assert created is not None and created.status_code == 201
    etag = created.headers["etag"]
    answers.append(t.send("GET", session))
    took = []
    for _ in range(4):
        started = time.monotonic()
        answers.append(t.send("GET", session, headers=(("If-None-Match", etag),)))
        took.append(time.monotonic() - started)
    before = direct(standin, "GET", session)
    answers.append(t.send("PUT", session, body=me(XUID), headers=(("If-Match", etag),)))
    stale, held = answers[-1], direct(standin, "GET", session)  # what it holds after the 412
    answers.append(t.send("PUT", session, body=me(XUID), headers=(("If-None-Match", "*"),)))
    answers += [t.send("PUT", session, body={"properties": {"custom": {"n": i}}})
                for i in range(6)]
    answers += [t.send("DELETE", session),
                t.send("POST", "/handles", body=activity_handle("every")),
                t.send("GET", "/handles/h1/session"), t.send("GET", HOPPER + "/stats")]
    t.close()
    after = direct(standin, "GET", session)

    walked, exists = EVERY_FAULT_WALK, EVERY_FAULT_SEEN
    assert predict(path, t.sent, exists) == walked  # the walk the file is written for
    records = read_records(proxy.record)  # type: ignore[arg-type]
    assert rules_of(records) == walked
    for response, rule in zip(answers, walked, strict=True):
        if rule in EVERY_FAULT_ROWS:
            check_row(response, EVERY_FAULT_ROWS[rule])  # type: ignore[arg-type]
    check_conformant(records)
    answered = {r["provenance"]["rule"]: r["classification"]["id"] for r in records
                if r["provenance"]["source"] == "injected" and r["response"]
                and not r["provenance"].get("forwarded")}
    assert answered == EVERY_FAULT_ROWS  # each status of the table once, as its row
    assert {catalog.get(r).status for r in answered.values()} == set(catalog.listed_statuses())

    # the 200 is the session as the proxy last saw it; 429 and 503 say when to come back
    assert (answers[2].json(), answers[2].headers["etag"]) == (created.json(), etag)  # type: ignore
    assert [answers[i].headers["retry-after"] for i in (4, 5)] == ["1", "1"]  # type: ignore
    assert took[3] >= 1.5 and records[6]["provenance"]["forwarded"] is True  # then forwarded
    assert answers[6].status_code == 304  # type: ignore[union-attr]  # the stand-in's own
    # the forced 412: the stand-in changed the session, as another console would have
    assert before.headers["etag"] == etag and before.json() == created.json()
    check_forced_412(stale, etag, created.json()["changeNumber"], held)
    assert records[7]["provenance"]["changed_on"] == "stand-in"
    assert records[7]["provenance"]["change_number"] == stale.json()["changeNumber"]
    # nothing injected after it reached the stand-in: the session is as the 412 left it
    assert after.json() == held.json() and after.headers["etag"] == held.headers["etag"]
    # write-dropped: the connection closed with no answer
    assert answers[14] is None and records[14]["response"] is None and records[14]["error"]
    assert records[-1]["provenance"]["source"] == "forwarded"

    counts = shutdown_counts(proxy)
    assert counts == predict_counts(path, t.sent, exists)
    assert all(count.fired == 1 for count in counts.values())
    # a row the service cannot give there skips the request, and says why
    assert counts["read-204"] == (1, 1, 1) and counts["read-200"] == (1, 1, 1)
    assert counts["write-201"] == (1, 1, 0)  # injected writes never reach the response phase
    assert counts["write-412-exists"] == (1, 1, 1)  # the create: no session to exist yet
    reasons = not_applicable_reasons(proxy)
    assert reasons["read-204"].startswith("204.get-session needs")
    assert reasons["read-200"].startswith("200.ok needs")
    assert "the proxy has not seen this session yet" in reasons["write-412-exists"]


# --- stale ETag on join: the 412 carries what the stand-in holds ------------------------------

def test_stale_etag_on_join_returns_the_current_session_and_etag(launch: Launcher) -> None:
    path = SHIPPED / "stale-etag-on-join.yaml"
    standin, proxy = start(launch, path)
    t = Title(proxy.url)
    exists: list[bool | None] = []  # per request: had the proxy seen its session exist?

    def send(method: str, where: str, known: bool | None, body: Any = None,
             if_match: str | None = None) -> httpx.Response | None:
        exists.append(known)
        headers = (("If-Match", if_match),) if if_match is not None else ()
        return t.send(method, where, body=body, headers=headers)

    # a: created through the proxy, so the proxy has seen it
    a = lobby("join-a")
    created = send("PUT", a, None, me(XUID))
    assert created is not None and created.status_code == 201
    sent = created.headers["etag"]
    refused = send("PUT", a, True, me(XUID), sent)
    check_forced_412(refused, sent, created.json()["changeNumber"], direct(standin, "GET", a))
    resent = send("PUT", a, True, me(XUID), sent)  # the stale ETag again
    assert resent is not None and resent.status_code == 412  # the stand-in's own, as real
    assert resent.headers["etag"] == refused.headers["etag"]  # type: ignore[union-attr]
    retried = send("PUT", a, True, me(XUID), refused.headers["etag"])  # type: ignore
    assert retried is not None and retried.status_code == 200  # once per lobby
    assert retried.json()["changeNumber"] == refused.json()["changeNumber"] + 1  # type: ignore

    # b: created around the proxy: no 412 until the proxy has seen it, then one
    b = lobby("join-b")
    around = direct(standin, "PUT", b, body=me(XUID))
    assert around.status_code == 201
    unseen = send("PUT", b, None, me(XUID), around.headers["etag"])
    assert unseen is not None and unseen.status_code == 200  # the stand-in's answer
    refused_b = send("PUT", b, True, me(XUID), unseen.headers["etag"])
    check_forced_412(refused_b, unseen.headers["etag"], unseen.json()["changeNumber"],
                     direct(standin, "GET", b))

    # c: a handle moves the session's ETag behind the proxy's back; the proxy forgets the
    # session it held, so the stale write meets the stand-in's own 412, whose session the
    # proxy then sees; the title's retry with that ETag gets the forced 412
    c = lobby("join-c")
    created_c = send("PUT", c, None, me(XUID))
    assert created_c is not None and created_c.status_code == 201
    handle = send("POST", "/handles", None, activity_handle("join-c"))
    assert handle is not None and handle.status_code == 201
    real = send("PUT", c, None, me(XUID), created_c.headers["etag"])
    held_c = direct(standin, "GET", c)
    assert real is not None and real.status_code == 412
    assert held_c.headers["etag"] != created_c.headers["etag"]
    assert real.headers["etag"] == held_c.headers["etag"] and real.json() == held_c.json()
    refused_c = send("PUT", c, True, me(XUID), real.headers["etag"])
    check_forced_412(refused_c, real.headers["etag"], real.json()["changeNumber"],
                     direct(standin, "GET", c))
    retried_c = send("PUT", c, True, me(XUID), refused_c.headers["etag"])  # type: ignore
    assert retried_c is not None and retried_c.status_code == 200

    # a game session is not a lobby: the rule's path does not match it
    game = title.session_path("join-game", "GameSession")
    assert send("PUT", game, None, me(XUID)).status_code == 201  # type: ignore
    untouched = send("PUT", game, True, me(XUID), '"stale"')
    assert untouched is not None and untouched.status_code == 412  # the stand-in's own
    t.close()

    records = read_records(proxy.record)  # type: ignore[arg-type]
    expected = predict(path, t.sent, exists)
    assert rules_of(records) == expected
    forced = [i for i, rule in enumerate(expected) if rule]
    assert forced == [1, 5, 9]  # a's first ETag write, b's and c's once the proxy saw them
    check_conformant(records)
    for i, answer in zip(forced, (refused, refused_b, refused_c), strict=True):
        provenance = records[i]["provenance"]
        assert records[i]["classification"]["id"] == "412.if-match-session"
        assert provenance["changed_on"] == "stand-in"
        assert provenance["change_number"] == answer.json()["changeNumber"]  # type: ignore
    for i, record in enumerate(records):  # the rest are the stand-in's own answers
        if i not in forced:
            assert record["provenance"] == {"source": "forwarded"}, i
    assert records[2]["classification"]["id"] == "412.if-match-session"  # the resend's
    counts = shutdown_counts(proxy)
    assert counts == predict_counts(path, t.sent, exists)
    # matched: a's 3 ETag writes, b's and c's writes once seen; skipped: b's and c's unseen
    assert counts == {"stale-etag-on-join": (6, 3, 2)}
    assert not_applicable_reasons(proxy) == {"stale-etag-on-join": (
        "412.if-match-session needs If-Match with an ETag on an existing session; "
        "the proxy has not seen this session yet")}


# --- FGRL throttling --------------------------------------------------------------------------

def test_fgrl_throttling_counts_each_user(launch: Launcher) -> None:
    path = SHIPPED / "fgrl-throttling.yaml"
    standin, proxy = start(launch, path)
    t = Title(proxy.url)
    session = lobby("fgrl")
    answers = [t.send("PUT", session, user="fa", body=me("4001"))]
    answers += [t.send("GET", session, user="fa") for _ in range(5)]
    answers += [t.send("GET", f"{session}/members/me", user="fb") for _ in range(2)]
    t.close()

    records = read_records(proxy.record)  # type: ignore[arg-type]
    expected = predict(path, t.sent)
    assert rules_of(records) == expected
    assert expected[3:6] == ["fgrl-budget"] * 3  # fa's 4th to 6th: past a burst of 3
    assert "fgrl-budget" not in expected[6:]  # fb has a budget of its own
    for response, rule in zip(answers, expected, strict=True):
        assert response is not None
        if rule is None:
            assert response.status_code != 429
            continue
        check_row(response, "429.too-many-requests")
        if rule == "fgrl-budget":
            message = response.json()
            assert message["maxRequests"] == 3 and message["periodInSeconds"] == 15
            assert message["currentRequests"] > 3
            assert 1 <= int(response.headers["retry-after"]) <= 16
        else:
            assert response.headers["retry-after"] == "3"
    check_conformant(records)
    counts = shutdown_counts(proxy)
    assert counts["fgrl-budget"] == (8, expected.count("fgrl-budget"), 0)
    assert counts["throttled-read"][1] == expected.count("throttled-read")


# --- a write that happened but whose answer was lost ------------------------------------------

def test_lost_write_answer_applies_the_write_then_loses_the_answer(launch: Launcher) -> None:
    path = SHIPPED / "lost-write-answer.yaml"
    standin, proxy = start(launch, path)
    t = Title(proxy.url)
    session = lobby("lost")
    answers = []
    for i in range(6):
        body = me("5001") if i == 0 else {"properties": {"custom": {"n": i}}}
        answers.append(t.send("PUT", session, body=body))
        if i == 2:
            third = direct(standin, "GET", session).json()
    t.close()
    final = direct(standin, "GET", session).json()

    assert [a.status_code if a else None for a in answers] == [201, 200, 503, 200, 200, None]
    check_row(answers[2], "503.service-unavailable")  # type: ignore[arg-type]
    assert answers[2].headers["retry-after"] == "2"  # type: ignore[union-attr]
    assert third["properties"]["custom"] == {"n": 2}  # the 3rd write took effect all the same
    assert third["changeNumber"] == 3
    assert final["properties"]["custom"] == {"n": 5} and final["changeNumber"] == 6
    records = read_records(proxy.record)  # type: ignore[arg-type]
    assert rules_of(records) == predict(path, t.sent)
    assert records[2]["provenance"]["phase"] == "response"
    assert records[5]["response"] is None and records[5]["provenance"]["fault"] == "drop"
    assert records[5]["provenance"]["lost_status"] == 200  # what the service had answered
    assert records[2]["provenance"]["lost_status"] == 200
    assert shutdown_counts(proxy) == {"write-answered-503": (6, 1, 0),
                                      "write-answer-dropped": (6, 1, 0)}


# --- everything at once -----------------------------------------------------------------------

def test_lobby_under_pressure_fires_as_written(launch: Launcher) -> None:
    path = SHIPPED / "lobby-under-pressure.yaml"
    standin, proxy = start(launch, path)
    t = Title(proxy.url)
    session = lobby("pressure")
    created = t.send("PUT", session, body=me(XUID))
    assert created is not None and created.status_code == 201
    exists: list[bool | None] = [None]  # the lobby is seen from the create on; the hopper never
    etag = created.headers["etag"]
    refusals: dict[int, tuple[str, int, httpx.Response, httpx.Response]] = {}
    hopper_took = 0.0
    for i in range(12):
        exists.append(None if i == 2 else True)
        if i % 3 == 0:
            answer = t.send("GET", session)
        elif i % 3 == 1:
            sent, seen = etag, direct(standin, "GET", session).json()["changeNumber"]
            answer = t.send("PUT", session, body=me(XUID), headers=(("If-Match", sent),))
            if answer is not None and answer.status_code == 412:
                refusals[len(t.sent) - 1] = (sent, seen, answer, direct(standin, "GET", session))
        elif i == 2:
            started = time.monotonic()
            answer = t.send("POST", HOPPER, body={"giveUpDuration": 60})
            hopper_took = time.monotonic() - started
        else:
            answer = t.send("PUT", session, body={"properties": {"custom": {"i": i}}})
        if i != 2 and answer is not None and "etag" in answer.headers:
            etag = answer.headers["etag"]  # the title adopts what it is told, a 412's too
    t.close()

    records = read_records(proxy.record)  # type: ignore[arg-type]
    expected = predict(path, t.sent, exists)
    assert rules_of(records) == expected
    assert expected.count("stale-etag-on-join") == 1 and expected.count("drop") == 1
    assert expected.count("lost-answer") == 1 and "outage" not in expected
    assert expected[2] is None  # the first ETag write: nth 2 lets it through
    assert hopper_took >= 1.5
    check_conformant(records)
    for i, (record, rule) in enumerate(zip(records, expected, strict=True)):
        if rule == "stale-etag-on-join":
            assert record["classification"]["id"] == "412.if-match-session"
            assert record["provenance"]["changed_on"] == "stand-in"
            sent, before, refused, held = refusals[i]
            check_forced_412(refused, sent, before, held)
            assert record["provenance"]["change_number"] == refused.json()["changeNumber"]
        if rule == "lost-answer":
            assert record["response"]["status"] == 503 and record["provenance"]["phase"] == \
                "response"
            assert record["provenance"]["lost_status"] == 200  # the stand-in took the write
        if rule == "drop":
            assert record["response"] is None
    assert list(refusals) == [expected.index("stale-etag-on-join")]  # no other write failed
    counts = shutdown_counts(proxy)
    assert counts == predict_counts(path, t.sent, exists)
    for name in ("stale-etag-on-join", "fgrl", "lag", "lost-answer", "drop", "outage"):
        assert counts[name].fired == expected.count(name)
    assert counts["outage"] == (len(t.sent), 0, 0)  # every request counts; none in its window
    # the create has no If-Match, so the 412 rule only ever met ETag writes to a seen lobby
    assert counts["stale-etag-on-join"].inapplicable == 0


# --- an outage, in a compressed copy ----------------------------------------------------------

def test_outage_windows_open_and_close_over_real_time(launch: Launcher, tmp_path: Path) -> None:
    """outage.yaml with its windows scaled down and counted from the first request (the
    shipped `from: first-match`), so the test controls the clock's origin. The shipped
    file's own windows are checked on a fake clock in test_injector. Every probe is at
    least 0.3 s from a window's edge."""
    text = (SHIPPED / "outage.yaml").read_text()
    text = text.replace("{after: 30s, for: 20s}", "{after: 600ms, for: 1200ms, from: first-match}")
    text = text.replace("{after: 2m, for: 5s}", "{after: 2400ms, for: 800ms, from: first-match}")
    assert text.count("first-match}") == 2
    copy = tmp_path / "outage.yaml"
    copy.write_text(text)
    standin, proxy = start(launch, copy)
    session = lobby("outage")
    direct(standin, "PUT", session, user="o0", body=me("7001"))
    t = Title(proxy.url)
    origin = time.monotonic()

    def at(offset: float, path: str = session) -> int | None:
        time.sleep(max(0.0, origin + offset - time.monotonic()))
        answer = t.send("GET", path, user=f"o{offset}")
        return answer.status_code if answer else None

    # outage: [0.6 s, 1.8 s); aftershock, on sessions and elements only: [2.4 s, 3.2 s)
    probes = [(0, session), (0.9, session), (1.5, HOPPER + "/stats"), (2.1, session),
              (2.7, session), (2.75, HOPPER + "/stats"), (3.5, session)]
    statuses = [at(offset, path) for offset, path in probes]
    t.close()
    assert statuses == [200, 503, 503, 200, 503, 200, 200]
    records = read_records(proxy.record)  # type: ignore[arg-type]
    assert rules_of(records) == [None, "outage", "outage", None, "aftershock", None, None]
    retry = [dict(r["response"]["headers"])["Retry-After"] for r in records
             if r["provenance"].get("rule")]
    assert retry == ["5", "5", "2"]
    check_conformant(records)
    assert shutdown_counts(proxy) == {"outage": (7, 2, 0), "aftershock": (5, 1, 0)}


# --- slow matchmaking -------------------------------------------------------------------------

def test_slow_matchmaking_delays_by_the_seeded_draws(launch: Launcher) -> None:
    path = SHIPPED / "slow-matchmaking.yaml"
    spec = scenario.load(path)
    standin, proxy = start(launch, path)
    t = Title(proxy.url)
    started = time.monotonic()
    ticket = t.send("POST", HOPPER, body={"giveUpDuration": 60})
    took = time.monotonic() - started
    assert ticket is not None and ticket.status_code == 200
    ticket_id = ticket.json()["ticketId"]
    answers: dict[str, tuple[httpx.Response | None, float]] = {}

    def timed(name: str, path: str) -> None:
        with httpx.Client(base_url=proxy.url, timeout=20) as client:
            begun = time.monotonic()
            answer = client.get(path, headers=[title.CONTRACT, ("Authorization", auth("qa"))])
            answers[name] = (answer, time.monotonic() - begun)

    workers = [threading.Thread(target=timed, args=("ticket", f"{HOPPER}/tickets/{ticket_id}")),
               threading.Thread(target=timed, args=("stats", f"{HOPPER}/stats"))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    t.close()

    # the rules' own streams of draws, seeded as the engine seeds them
    create_draw = spec.rules[0].fault.delay_seconds(random.Random(f"{spec.seed}:0:delay"))
    ticket_draw = spec.rules[1].fault.delay_seconds(random.Random(f"{spec.seed}:1:delay"))
    assert took >= create_draw
    assert answers["ticket"][0].status_code == 200 and answers["ticket"][1] >= ticket_draw  # type: ignore
    assert answers["stats"][0].status_code == 200 and answers["stats"][1] >= 1.5  # type: ignore
    records = read_records(proxy.record)  # type: ignore[arg-type]
    delays = {r["provenance"]["rule"]: r["provenance"]["delay_ms"] for r in records}
    assert delays == {"slow-ticket-create": pytest.approx(create_draw * 1000, abs=0.01),
                      "slow-ticket-calls": pytest.approx(ticket_draw * 1000, abs=0.01),
                      "slow-hopper-stats": 1500.0}
    for record in records:  # the answers themselves are the stand-in's
        assert record["provenance"]["forwarded"] is True
        assert record["classification"]["id"] == "200.ok"
    assert shutdown_counts(proxy) == {"slow-ticket-create": (1, 1, 0),
                                      "slow-ticket-calls": (1, 1, 0),
                                      "slow-hopper-stats": (1, 1, 0)}


# --- a real client that honours Retry-After ---------------------------------------------------

def test_a_client_that_honours_retry_after_waits_as_told(launch: Launcher,
                                                           tmp_path: Path) -> None:
    rules = tmp_path / "retry.yaml"
    rules.write_text("name: retry\nseed: 1\nrules:\n  - name: busy\n"
                     "    match: {method: GET, resource: session}\n    when: {nth: 1}\n"
                     "    fault: {status: 503, retry_after: 2}\n")
    standin, proxy = start(launch, rules)
    session = lobby("retry")
    direct(standin, "PUT", session, body=me("8001"))
    retry = urllib3.Retry(total=None, connect=0, read=0, status=2, status_forcelist=[503],
                          respect_retry_after_header=True, backoff_factor=0)
    with urllib3.PoolManager(retries=retry, timeout=20) as pool:
        started = time.monotonic()
        answer = pool.request("GET", proxy.url + session, headers={
            "x-xbl-contract-version": "107", "Authorization": auth("qa")})
        elapsed = time.monotonic() - started
    assert answer.status == 200
    assert elapsed >= 2
    records = read_records(proxy.record)  # type: ignore[arg-type]
    assert [r["response"]["status"] for r in records] == [503, 200]
    assert rules_of(records) == ["busy", None]


# --- nth under concurrency --------------------------------------------------------------------

def test_nth_fires_exactly_once_under_50_concurrent_clients(launch: Launcher,
                                                            tmp_path: Path) -> None:
    rules = tmp_path / "nth.yaml"
    rules.write_text("name: nth\nrules:\n  - name: the-25th\n    match: {method: GET}\n"
                     "    when: {nth: 25}\n    fault: {status: 503, retry_after: 1}\n")
    standin, proxy = start(launch, rules)
    session = lobby("crowd")
    barrier = threading.Barrier(50, timeout=20)
    statuses: list[int | None] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(base_url=proxy.url, timeout=20) as c:
            barrier.wait()
            try:
                status: int | None = c.get(session, headers=[
                    title.CONTRACT, ("Authorization", auth(f"crowd{i}"))]).status_code
            except httpx.TransportError:
                status = None
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert len(statuses) == 50
    assert Counter(statuses) == {204: 49, 503: 1}
    records = read_records(proxy.record)  # type: ignore[arg-type]
    assert len(records) == 50
    assert Counter(rules_of(records)) == {None: 49, "the-25th": 1}
    assert shutdown_counts(proxy) == {"the-25th": (50, 1, 0)}


# --- connection faults on the wire ------------------------------------------------------------

def test_drop_reset_truncate_and_hang_on_the_wire(launch: Launcher, tmp_path: Path) -> None:
    rules = tmp_path / "wire.yaml"
    rules.write_text(
        "name: wire\nrules:\n"
        "  - {name: drop, match: {method: GET}, when: {nth: 1}, fault: {drop: true}}\n"
        "  - {name: reset, match: {method: GET}, when: {nth: 2}, fault: {reset: true}}\n"
        "  - {name: cut, match: {method: GET}, when: {nth: 3},\n"
        "     fault: {status: 200, truncate: 10}}\n"
        "  - {name: hang, match: {method: GET}, when: {nth: 4}, fault: {hang: true}}\n")
    standin, proxy = start(launch, rules)
    session = lobby("wire")
    t = Title(proxy.url)
    assert t.send("PUT", session, body=me("9001")).status_code == 201  # type: ignore[union-attr]
    t.close()

    with raw_get(proxy.port, session, "w1") as sock:  # drop: an orderly close, no answer
        assert read_all(sock) == b""
    with raw_get(proxy.port, session, "w2") as sock:  # reset: TCP RST
        with pytest.raises(ConnectionResetError):
            read_all(sock)
    with raw_get(proxy.port, session, "w3") as sock:  # truncate: a short read, then close
        data = read_all(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head)[1])  # type: ignore[index]
    assert head.startswith(b"HTTP/1.1 200") and len(body) == 10 < length
    held = raw_get(proxy.port, session, "w4")  # hang: nothing comes back
    held.settimeout(0.8)
    with pytest.raises(TimeoutError):
        held.recv(1)
    held.close()  # the client gives up; the proxy lets go of the flow

    records: list[dict[str, Any]] = []
    for _ in range(100):
        records = read_records(proxy.record)  # type: ignore[arg-type]
        if len(records) == 5:
            break
        time.sleep(0.05)
    assert rules_of(records) == [None, "drop", "reset", "cut", "hang"]
    assert [r["response"] is None for r in records] == [False, True, True, False, True]
    assert 0.8 <= records[4]["provenance"]["held_s"] < 10
    assert records[3]["response"]["headers"]


# --- hot reload -------------------------------------------------------------------------------

def test_edits_reload_while_the_proxy_runs(launch: Launcher, tmp_path: Path) -> None:
    rules = tmp_path / "live.yaml"
    rules.write_text("name: live\nrules:\n  - {name: first, fault: {status: 503}}\n")
    standin, proxy = start(launch, rules)
    session = lobby("live")
    t = Title(proxy.url)
    assert t.send("GET", session, user="l0").status_code == 503  # type: ignore[union-attr]
    rules.write_text("name: live\nrules:\n  - {name: second, fault: {status: 429}}\n")
    statuses = []
    for i in range(40):  # the watcher looks every 0.5 s
        statuses.append(t.send("GET", session, user=f"l{i + 1}").status_code)  # type: ignore
        if statuses[-1] == 429:
            break
        time.sleep(0.1)
    assert statuses[-1] == 429
    rules.write_text("name: live\nrules:\n  - {name: third, fault: {status: 999}}\n")
    time.sleep(1.2)
    assert t.send("GET", session, user="l99").status_code == 429  # type: ignore[union-attr]
    t.close()
    output = proxy.wait_output(f"{rules}:3:", "the previous version stays in force")
    assert f"{rules}:3:" in output and "the previous version stays in force" in output
    assert shutdown_counts(proxy)["second"][1] >= 2


# --- a broken scenario never listens ----------------------------------------------------------

def test_run_refuses_a_broken_scenario_before_listening(launch: Launcher, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nrules:\n  - name: x\n    when: {nth: 0}\n"
                      "    fault: {status: 503}\n")
    with pytest.raises(RuntimeError, match="before listening") as failed:
        launch.proxy("--mode", "reverse:http://127.0.0.1:1", "--scenario", str(broken))
    process = launch.started[-1]
    assert process.proc.returncode != 0
    assert f"{broken}:4:" in str(failed.value) and "rules[0].when.nth" in str(failed.value)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", process.port), timeout=1).close()
