"""End to end: the shipped scenarios through `mpsdproxy run --scenario` in front of the stand-in.

Real clients on real sockets. Each scenario must fire exactly as written: the
rule behind every exchange (from the recording's provenance) is the one a
fresh `scenario.Engine` predicts for the same requests in the same order, and
the counts printed at shutdown agree. Injected answers must be the table's
rows (content type, body, headers), a forced 412 must carry the session the
stand-in holds with its current ETag, and a client that honours Retry-After
must wait as told.
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
from scenario_kit import SCID
from scenario_kit import SHIPPED
from scenario_kit import Title
from scenario_kit import auth
from scenario_kit import check_conformant
from scenario_kit import check_row
from scenario_kit import direct
from scenario_kit import lobby
from scenario_kit import me
from scenario_kit import predict
from scenario_kit import rules_of
from scenario_kit import shutdown_counts
from scenario_kit import start

from mpsdproxy import scenario
from mpsdproxy import title

# --- every fault of the table -----------------------------------------------------------------

EVERY_FAULT_READS = ["200.ok", "204.get-session", "404.not-found", "429.too-many-requests",
                     "503.service-unavailable", "200.ok"]
EVERY_FAULT_WRITES = ["201.created", "202.accepted", "400.bad-request", "403.forbidden",
                      "403.read-only", "405.method-not-allowed", "409.conflict",
                      "204.put-session-deleted"]


def test_every_fault_walks_through_every_row(launch: Launcher) -> None:
    standin, proxy = start(launch, SHIPPED / "every-fault.yaml")
    t = Title(proxy.url)
    path = lobby("every")
    created = t.send("PUT", path, body=me("2001"))
    assert created is not None and created.status_code == 201
    etag = created.headers["etag"]
    reads = []
    for _ in EVERY_FAULT_READS:
        started = time.monotonic()
        reads.append((t.send("GET", path), time.monotonic() - started))
    not_modified = t.send("GET", path, headers=(("If-None-Match", etag),))
    stale = t.send("PUT", path, body={"properties": {"custom": {"a": 1}}},
                   headers=(("If-Match", '"old"'),))
    exists = t.send("PUT", path, body=me("2001"), headers=(("If-None-Match", "*"),))
    writes = [t.send("PUT", path, body={"properties": {"custom": {"n": i}}})
              for i in range(len(EVERY_FAULT_WRITES) + 1)]
    t.close()
    now = direct(standin, "GET", path)

    for (response, _), expected in zip(reads, EVERY_FAULT_READS, strict=True):
        assert response is not None
        check_row(response, expected)
    assert reads[0][0].json() == created.json()  # the session as the proxy last saw it
    assert reads[3][0].headers["retry-after"] == "1" and reads[4][0].headers["retry-after"] == "1"
    assert reads[5][1] >= 1.5  # read-delayed, then answered by the stand-in
    check_row(not_modified, "304.not-modified")  # type: ignore[arg-type]
    check_row(stale, "412.if-match-session")  # type: ignore[arg-type]
    assert stale.json() == now.json() and stale.headers["etag"] == now.headers["etag"]  # type: ignore
    check_row(exists, "412.precondition-failed")  # type: ignore[arg-type]
    for response, expected in zip(writes, EVERY_FAULT_WRITES, strict=False):
        assert response is not None
        check_row(response, expected)
    assert writes[-1] is None  # write-dropped: the connection closed with no answer

    records = read_records(proxy.record)  # type: ignore[arg-type]
    assert rules_of(records) == predict(SHIPPED / "every-fault.yaml", t.sent)
    check_conformant(records)
    assert records[-1]["response"] is None and records[-1]["error"]
    counts = shutdown_counts(proxy)
    rules = [r.name for r in scenario.load(SHIPPED / "every-fault.yaml").rules]
    assert {name: counts[name][1] for name in rules} == dict.fromkeys(rules, 1)
    assert counts["read-200"] == (6, 1) and counts["write-201"] == (10, 1)


# --- stale ETag on join: the 412 carries what the stand-in holds ------------------------------

def test_stale_etag_on_join_returns_the_current_session_and_etag(launch: Launcher) -> None:
    standin, proxy = start(launch, SHIPPED / "stale-etag-on-join.yaml")
    t = Title(proxy.url)
    # a: created through the proxy, so the proxy has seen it
    a = lobby("join-a")
    created = t.send("PUT", a, body=me("3001"))
    assert created is not None and created.status_code == 201
    refused = t.send("PUT", a, body=me("3001"), headers=(("If-Match", created.headers["etag"]),))
    held = direct(standin, "GET", a)
    assert refused is not None and refused.status_code == 412
    assert refused.json() == held.json() and refused.headers["etag"] == held.headers["etag"]
    retried = t.send("PUT", a, body=me("3001"), headers=(("If-Match", refused.headers["etag"]),))
    assert retried is not None and retried.status_code == 200  # once per lobby
    # b: created around the proxy, so it reads the session from the service itself
    b = lobby("join-b")
    assert direct(standin, "PUT", b, body=me("3001")).status_code == 201
    refused_b = t.send("PUT", b, body=me("3001"), headers=(("If-Match", '"whatever"'),))
    held_b = direct(standin, "GET", b)
    assert refused_b is not None and refused_b.status_code == 412
    assert refused_b.json() == held_b.json()
    assert refused_b.headers["etag"] == held_b.headers["etag"]
    # c: a handle bumps the session's ETag behind the proxy's back: the 412 has the new one
    c = lobby("join-c")
    created_c = t.send("PUT", c, body=me("3001"))
    handle = t.send("POST", "/handles", body={"version": 1, "type": "activity", "sessionRef": {
        "scid": SCID, "templateName": "LobbySession", "name": "join-c"}})
    assert created_c is not None and handle is not None and handle.status_code == 201
    refused_c = t.send("PUT", c, body=me("3001"),
                       headers=(("If-Match", created_c.headers["etag"]),))
    held_c = direct(standin, "GET", c)
    assert refused_c is not None and refused_c.status_code == 412
    assert held_c.headers["etag"] != created_c.headers["etag"]
    assert refused_c.headers["etag"] == held_c.headers["etag"]
    assert refused_c.json() == held_c.json()
    # a game session is not a lobby: the rule's path does not match it
    game = title.session_path("join-game", "GameSession")
    t.send("PUT", game, body=me("3001"))
    untouched = t.send("PUT", game, body=me("3001"), headers=(("If-Match", '"stale"'),))
    assert untouched is not None and untouched.status_code == 412  # the stand-in's own
    t.close()

    records = read_records(proxy.record)  # type: ignore[arg-type]
    assert rules_of(records) == predict(SHIPPED / "stale-etag-on-join.yaml", t.sent)
    check_conformant(records)
    injected = [r for r in records if r["provenance"]["source"] == "injected"]
    assert [r["classification"]["id"] for r in injected] == ["412.if-match-session"] * 3
    assert [bool(r["provenance"].get("session_read")) for r in injected] == [False, True, True]
    assert records[-1]["provenance"] == {"source": "forwarded"}
    assert shutdown_counts(proxy) == {"stale-etag-on-join": (4, 3)}


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
    assert counts["fgrl-budget"] == (8, expected.count("fgrl-budget"))
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
    assert shutdown_counts(proxy) == {"write-answered-503": (6, 1), "write-answer-dropped": (6, 1)}


# --- everything at once -----------------------------------------------------------------------

def test_lobby_under_pressure_fires_as_written(launch: Launcher) -> None:
    path = SHIPPED / "lobby-under-pressure.yaml"
    standin, proxy = start(launch, path)
    t = Title(proxy.url)
    session = lobby("pressure")
    created = t.send("PUT", session, body=me("6001"))
    assert created is not None
    etag = created.headers["etag"]
    hopper_started = 0.0
    hopper_took = 0.0
    for i in range(12):
        if i % 3 == 0:
            t.send("GET", session)
        elif i % 3 == 1:
            answer = t.send("PUT", session, body=me("6001"), headers=(("If-Match", etag),))
            if answer is not None and "etag" in answer.headers:
                etag = answer.headers["etag"]
        elif i == 2:
            hopper_started = time.monotonic()
            t.send("POST", HOPPER, body={"giveUpDuration": 60})
            hopper_took = time.monotonic() - hopper_started
        else:
            t.send("PUT", session, body={"properties": {"custom": {"i": i}}})
    t.close()

    records = read_records(proxy.record)  # type: ignore[arg-type]
    expected = predict(path, t.sent)
    assert rules_of(records) == expected
    assert expected.count("stale-etag-on-join") == 1 and expected.count("drop") == 1
    assert expected.count("lost-answer") == 1 and "outage" not in expected
    assert hopper_took >= 1.5
    check_conformant(records)
    for record, rule in zip(records, expected, strict=True):
        if rule == "stale-etag-on-join":
            assert record["classification"]["id"] == "412.if-match-session"
        if rule == "lost-answer":
            assert record["response"]["status"] == 503 and record["provenance"]["phase"] == \
                "response"
        if rule == "drop":
            assert record["response"] is None
    counts = shutdown_counts(proxy)
    for name in ("stale-etag-on-join", "fgrl", "lag", "lost-answer", "drop", "outage"):
        assert counts[name][1] == expected.count(name)
    assert counts["outage"] == (len(t.sent), 0)  # every request counts; none in its window


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
    assert shutdown_counts(proxy) == {"outage": (7, 2), "aftershock": (5, 1)}


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
    assert shutdown_counts(proxy) == {"slow-ticket-create": (1, 1), "slow-ticket-calls": (1, 1),
                                      "slow-hopper-stats": (1, 1)}


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
    assert shutdown_counts(proxy) == {"the-25th": (50, 1)}


# --- connection faults on the wire ------------------------------------------------------------

def raw_get(port: int, path: str, user: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-xbl-contract-version: 107\r\n"
                 f"Authorization: {auth(user)}\r\n\r\n".encode())
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    for _ in range(1000):
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the connection never closed")


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
    output = proxy.output()
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
