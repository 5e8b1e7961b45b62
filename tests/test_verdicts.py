"""The verdict engine over hand-made recordings: for each rule a passing and a failing case,
with the evidence (record seq numbers and gaps in ms) it names."""

from __future__ import annotations

import dataclasses
import gc
import json
import random
import tracemalloc
from collections.abc import Iterable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpsdproxy import recording
from mpsdproxy import resources
from mpsdproxy import verdicts
from mpsdproxy.verdicts import Engine
from mpsdproxy.verdicts import Status
from mpsdproxy.verdicts import Verdict

T0 = 1_800_000_000.0
MPSD = "https://sessiondirectory.xboxlive.com"
SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
OTHER = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-2"
BATCH = f"/serviceconfigs/{SCID}/batch"


def rec(seq: int, at: float, method: str = "GET", path: str = LOBBY, status: int | None = 200,
        *, took: float = 0.01, user: str | None = "alice", client: str = "127.0.0.1:50000",
        headers: Iterable[tuple[str, str]] = (), response_headers: Iterable[tuple[str, str]] = (),
        body: Any = None, host: str = MPSD, source: str = "forwarded") -> dict[str, Any]:
    """One recording record (the outline of recording.py), `at` seconds after T0."""
    req_headers = [["Authorization", recording.redact_value(f"XBL3.0 x={user};tok")]] \
        if user else []
    req_headers += [[k, v] for k, v in headers]
    return {
        "seq": seq,
        "start": recording.timestamp(T0 + at),
        "end": recording.timestamp(T0 + at + took),
        "duration_ms": took * 1000,
        "client": client,
        "request": {"method": method, "url": host + path, "headers": req_headers,
                    "body": None if body is None else {"json": body}},
        "response": None if status is None else {
            "status": status, "reason": "", "body": None,
            "headers": [[k, v] for k, v in response_headers]},
        "error": None if status is not None else "connection reset",
        "resource": resources.parse(path).to_dict(),
        "classification": None,
        "provenance": {"source": source},
    }


def judge(records: Iterable[dict[str, Any]], limits: verdicts.Limits | None = None,
          **settings: Any) -> list[Verdict]:
    engine = Engine(limits, settings=verdicts.RuleSettings(**settings) if settings else None)
    out: list[Verdict] = []
    for r in records:
        out.extend(engine.feed(r))
    return out + engine.finish()


def of(found: list[Verdict], rule: str) -> list[Verdict]:
    return [v for v in found if v.rule == rule]


def only(found: list[Verdict], rule: str) -> Verdict:
    matching = of(found, rule)
    assert len(matching) == 1, matching
    return matching[0]


RA5 = (("Retry-After", "5"),)


# ---------------------------------------------------------------- Retry-After honoured


def test_retry_after_broken_fails_with_the_gap() -> None:
    found = judge([rec(1, 0, status=503, response_headers=RA5), rec(2, 1.01)])
    v = only(found, "retry-after")
    assert v.status is Status.FAIL
    assert v.records == (1, 2)
    assert v.gaps_ms == (1000.0,)
    assert "4000 ms too early" in v.reason and "Retry-After 5 s" in v.reason


def test_retry_after_honoured_passes_with_the_gap() -> None:
    found = judge([rec(1, 0, status=429, response_headers=RA5), rec(2, 5.51)])
    v = only(found, "retry-after")
    assert v.status is Status.PASS
    assert (v.records, v.gaps_ms) == ((1, 2), (5500.0,))


def test_retry_after_quiet_client_passes_when_time_moves_on() -> None:
    found = judge([rec(1, 0, status=503, response_headers=RA5),
                   rec(2, 30, user="bob")])  # someone else's request moves the clock
    v = only(found, "retry-after")
    assert v.status is Status.PASS
    assert v.records == (1,)
    assert "quiet for the whole 5 s" in v.reason


def test_retry_after_ignores_other_users_and_requests_already_in_flight() -> None:
    found = judge([
        rec(1, 0, status=503, response_headers=RA5),
        rec(2, -0.005, took=0.2),  # sent before the 503 arrived, recorded after it
        rec(3, 1, user="bob"),
    ])
    assert only(found, "retry-after").status is Status.PASS


def test_retry_after_without_authorization_keys_on_the_address_not_the_port() -> None:
    found = judge([rec(1, 0, status=503, response_headers=RA5, user=None,
                       client="10.0.0.7:50001"),
                   rec(2, 2, user=None, client="10.0.0.7:50002")])  # a new connection
    v = only(found, "retry-after")
    assert v.status is Status.FAIL
    assert v.client == "10.0.0.7"


@pytest.mark.parametrize("scope,expected", [("client", Status.FAIL), ("resource", Status.PASS)])
def test_retry_after_scope(scope: str, expected: Status) -> None:
    found = judge([rec(1, 0, status=503, response_headers=RA5), rec(2, 1, path=OTHER)],
                  retry_after_scope=scope)
    assert only(found, "retry-after").status is expected


def test_retry_after_counts_only_the_same_host() -> None:
    found = judge([rec(1, 0, status=503, response_headers=RA5),
                   rec(2, 1, host="https://momatch.xboxlive.com",
                       path=f"/serviceconfigs/{SCID}/hoppers/quick")])
    assert only(found, "retry-after").status is Status.PASS


# ---------------------------------------------------------------- backoff without Retry-After


def test_backoff_tight_retry_fails() -> None:
    found = judge([rec(1, 0, status=503), rec(2, 0.2)])
    v = only(found, "backoff")
    assert v.status is Status.FAIL
    assert (v.records, v.gaps_ms) == ((1, 2), (190.0,))
    assert "tight retry" in v.reason


def test_backoff_that_shrinks_fails() -> None:
    found = judge([rec(1, 0, status=503), rec(2, 2.01, status=503), rec(3, 3.52)])
    v = only(found, "backoff")
    assert v.status is Status.FAIL
    assert v.records == (1, 2, 3)
    assert v.gaps_ms == (2000.0, 1500.0)
    assert "shrank from 2000 ms to 1500 ms" in v.reason


def test_backoff_without_end_fails_on_the_retry_over_the_bound() -> None:
    records, at = [rec(1, 0, status=429)], 0.0
    for seq in range(2, 9):
        at += 1.01 * 2 ** (seq - 1)
        records.append(rec(seq, at, status=429))
    v = only(judge(records), "backoff")
    assert v.status is Status.FAIL
    assert "6 retries of one request (at most 5" in v.reason
    assert v.records == (1, 2, 3, 4, 5, 6, 7)


def test_backoff_that_grows_passes_with_its_waits() -> None:
    found = judge([rec(1, 0, status=503), rec(2, 2.01, status=503), rec(3, 6.02)])
    v = only(found, "backoff")
    assert v.status is Status.PASS
    assert (v.records, v.gaps_ms) == ((1, 2, 3), (2000.0, 4000.0))
    assert "2 retries" in v.reason and "then got 200" in v.reason


def test_backoff_no_retry_passes() -> None:
    v = only(judge([rec(1, 0, "PUT", status=503), rec(2, 500, path=OTHER)]), "backoff")
    assert v.status is Status.PASS
    assert v.records == (1,)
    assert "did not retry" in v.reason


def test_backoff_leaves_retry_after_answers_to_the_other_rule() -> None:
    found = judge([rec(1, 0, status=503, response_headers=RA5), rec(2, 0.2)])
    assert only(found, "backoff").status is Status.NOT_APPLICABLE


# ---------------------------------------------------------------- 412 handled

STALE = (("If-Match", '"e1"'),)
PUT_412 = {"status": 412, "headers": STALE, "response_headers": (("ETag", '"e2"'),)}


def test_412_stale_etag_resent_fails() -> None:
    found = judge([rec(1, 0, "PUT", **PUT_412), rec(2, 0.5, "PUT", headers=STALE)])
    v = only(found, "412-handled")
    assert v.status is Status.FAIL
    assert (v.records, v.gaps_ms) == ((1, 2), (490.0,))
    assert 'resent the stale ETag "e1"' in v.reason


def test_412_returned_etag_used_passes() -> None:
    found = judge([rec(1, 0, "PUT", **PUT_412),
                   rec(2, 0.5, "PUT", headers=(("If-Match", '"e2"'),))])
    v = only(found, "412-handled")
    assert v.status is Status.PASS
    assert v.records == (1, 2)
    assert "used the ETag the 412 returned" in v.reason


def test_412_fresh_get_then_write_passes_with_the_get_as_evidence() -> None:
    found = judge([rec(1, 0, "PUT", **PUT_412),
                   rec(2, 0.2, response_headers=(("ETag", '"e3"'),)),
                   rec(3, 0.5, "PUT", headers=(("If-Match", '"e3"'),))])
    v = only(found, "412-handled")
    assert v.status is Status.PASS
    assert v.records == (1, 2, 3)


def test_412_blind_write_without_rereading_fails() -> None:
    found = judge([rec(1, 0, "PUT", **PUT_412),
                   rec(2, 0.5, "PUT", headers=(("If-Match", "*"),))])
    v = only(found, "412-handled")
    assert v.status is Status.FAIL
    assert "wrote with If-Match * " in v.reason


@pytest.mark.parametrize("first,then,expected", [
    ((("If-Match", "*"),), (("If-Match", "*"),), Status.FAIL),
    ((("If-None-Match", "*"),), (("If-None-Match", "*"),), Status.FAIL),
    ((("If-None-Match", "*"),), (), Status.PASS),
])
def test_412_without_an_etag_fails_only_when_the_precondition_is_resent(
        first: tuple[tuple[str, str], ...], then: tuple[tuple[str, str], ...],
        expected: Status) -> None:
    found = judge([rec(1, 0, "PUT", status=412, headers=first),
                   rec(2, 0.5, "PUT", headers=then)])
    v = only(found, "412-handled")
    assert (v.status, v.records) == (expected, (1, 2))


def test_412_on_an_element_is_judged_against_writes_to_its_session() -> None:
    found = judge([rec(1, 0, "PUT", path=LOBBY + "/properties", **PUT_412),
                   rec(2, 0.1, "PUT", path=OTHER, headers=STALE),  # another session
                   rec(3, 0.5, "PUT", headers=STALE)])
    v = only(found, "412-handled")
    assert (v.status, v.records) == (Status.FAIL, (1, 3))


def test_412_without_a_later_write_is_not_applicable() -> None:
    v = only(judge([rec(1, 0, "PUT", **PUT_412)]), "412-handled")
    assert v.status is Status.NOT_APPLICABLE
    assert v.records == (1,)


# ---------------------------------------------------------------- 409 not blindly retried

CONSTANTS = {"constants": {"system": {"maxMembersCount": 8}}}


def test_409_resent_unchanged_fails() -> None:
    found = judge([rec(1, 0, "PUT", status=409, body=CONSTANTS),
                   rec(2, 3, "PUT", status=409, body=CONSTANTS)])
    v = [v for v in of(found, "409-not-retried") if v.status is Status.FAIL]
    assert len(v) == 1
    assert (v[0].records, v[0].gaps_ms) == ((1, 2), (2990.0,))


def test_409_changed_request_passes() -> None:
    found = judge([rec(1, 0, "PUT", status=409, body=CONSTANTS),
                   rec(2, 3, "PUT", body={"properties": {}})])
    v = only(found, "409-not-retried")
    assert (v.status, v.records) == (Status.PASS, (1, 2))


def test_409_not_resent_passes() -> None:
    v = only(judge([rec(1, 0, "PUT", status=409, body=CONSTANTS), rec(2, 1)]),
             "409-not-retried")
    assert (v.status, v.records) == (Status.PASS, (1,))


# ---------------------------------------------------------------- polling a missing session


def test_polling_a_missing_session_fails_above_the_rate() -> None:
    found = judge([rec(n, 2 * (n - 1), status=204) for n in range(1, 6)])
    v = only(found, "missing-session-polling")
    assert v.status is Status.FAIL
    assert v.records == (1, 2, 3, 4)
    assert v.gaps_ms == (2000.0, 2000.0, 2000.0)


def test_asking_for_a_missing_session_slowly_passes() -> None:
    found = judge([rec(n, 11 * (n - 1), status=204) for n in range(1, 5)] + [rec(5, 50)])
    v = only(found, "missing-session-polling")
    assert v.status is Status.PASS
    assert v.records == (1, 4)
    assert "then the session was found" in v.reason


def test_missing_session_rate_is_configurable() -> None:
    found = judge([rec(n, 11 * (n - 1), status=204) for n in range(1, 5)],
                  missing_session_window_s=60)
    assert only(found, "missing-session-polling").status is Status.FAIL


# ---------------------------------------------------------------- call-rate budgets


def test_burst_budget_warns_before_the_service_would_throttle() -> None:
    found = judge([rec(n, 0.4 * (n - 1)) for n in range(1, 32)])
    v = only(found, "rate-budget")
    assert v.status is Status.WARN
    assert v.records == (1, 31)
    assert v.gaps_ms == (12000.0,)
    assert "over the burst limit" in v.reason and "30 per 15 s" in v.reason


def test_budget_within_limits_passes_with_the_peak() -> None:
    found = judge([rec(n, 0.4 * (n - 1)) for n in range(1, 31)])
    v = only(found, "rate-budget")
    assert v.status is Status.PASS
    assert "sessiondirectory peak 30/30 per 15 s" in v.reason


def test_budget_is_per_user() -> None:
    records = [rec(n, 0.2 * n, user="alice" if n % 2 else "bob") for n in range(1, 41)]
    assert only(judge(records), "rate-budget").status is Status.PASS


def test_matchmaking_has_its_own_budget() -> None:
    hopper = f"/serviceconfigs/{SCID}/hoppers/quick"
    found = judge([rec(n, n, "POST", path=hopper, host="https://momatch.xboxlive.com")
                   for n in range(1, 12)])
    v = only(found, "rate-budget")
    assert v.status is Status.WARN
    assert "to matchmaking" in v.reason and "10 per 15 s" in v.reason


def test_certification_line_fails(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text("version: 1\nservices:\n  sessiondirectory:\n"
                    "    sustained: {calls: 5, seconds: 300}\n    certification_factor: 2\n")
    found = judge([rec(n, 10 * n) for n in range(1, 12)], verdicts.load_limits(str(path)))
    by_status = {v.status: v for v in of(found, "rate-budget")}
    assert by_status[Status.WARN].records == (1, 6)
    assert by_status[Status.FAIL].records == (1, 10)
    assert "certification line (10 per 300 s)" in by_status[Status.FAIL].reason


# ---------------------------------------------------------------- Trace Analyzer rules


def steady(count: int, *, start: int = 1) -> list[dict[str, Any]]:
    """Calls to ever new sessions with gaps of 0.8 s and 1.2 s in turn (mean 1 s, sd 0.2 s)."""
    out, at = [], 0.0
    for n in range(start, start + count):
        out.append(rec(n, at, path=f"{LOBBY}-{n}"))
        at += 0.8 if n % 2 else 1.2
    return out


def test_burst_well_above_the_usual_rate_warns() -> None:
    calm = steady(30)
    at = recording.parse_timestamp(calm[-1]["start"]) - T0
    burst = [rec(31 + n, at + 0.5 + 0.1 * n, path=f"{OTHER}-{n}") for n in range(12)]
    v = only(judge(calm + burst), "burst")
    assert v.status is Status.WARN
    # The running statistics take in the burst as it goes (the analyzer's are over the
    # whole trace), so it is flagged part-way, once, with the calls of its window.
    assert v.records == (29, 30, 31, 32, 33, 34, 35, 36, 37)
    assert v.gaps_ms == (1900.0,)
    assert "burst of 9 calls" in v.reason and "usual rate allows 8" in v.reason


def test_steady_calls_are_no_burst() -> None:
    v = only(judge(steady(60)), "burst")
    assert v.status is Status.PASS


def test_repeated_identical_call_warns_with_the_gap() -> None:
    found = judge([rec(1, 0, "POST", path=BATCH, body={"xuids": ["1", "2"]}),
                   rec(2, 1.5, "POST", path=BATCH, body={"xuids": ["1", "2"]})])
    v = only(found, "repeated-calls")
    assert (v.status, v.records, v.gaps_ms) == (Status.WARN, (1, 2), (1500.0,))


def test_repeats_with_another_body_or_far_apart_pass() -> None:
    found = judge([rec(1, 0, "POST", path=BATCH, body={"xuids": ["1", "2"]}),
                   rec(2, 1, "POST", path=BATCH, body={"xuids": ["3", "4"]}),
                   rec(3, 7, "POST", path=BATCH, body={"xuids": ["3", "4"]})])
    assert only(found, "repeated-calls").status is Status.PASS


def test_social_manager_calls_are_not_repeats() -> None:
    ua = (("User-Agent", "XboxServicesAPI/2016.08 SocialManager"),)
    found = judge([rec(1, 0, headers=ua), rec(2, 1, headers=ua)])
    assert only(found, "repeated-calls").status is Status.NOT_APPLICABLE


def test_evenly_spaced_polling_warns() -> None:
    found = judge([rec(n, 2.0 * n + 0.005 * (n % 2)) for n in range(1, 6)])
    v = only(found, "polling")
    assert v.status is Status.WARN
    assert v.records == (1, 2, 3, 4, 5)
    assert v.gaps_ms == (1995.0, 2005.0, 1995.0, 2005.0)


def test_irregular_repeats_are_not_polling() -> None:
    found = judge([rec(n, at) for n, at in enumerate([0, 2, 5, 6, 10, 13], start=1)])
    assert only(found, "polling").status is Status.PASS


def test_consecutive_429s_warn() -> None:
    found = judge([rec(1, 0, status=429), rec(2, 10, status=429), rec(3, 20)])
    v = only(found, "consecutive-429")
    assert (v.status, v.records, v.gaps_ms) == (Status.WARN, (1, 2), (10000.0,))


def test_a_429_followed_by_success_passes() -> None:
    found = judge([rec(1, 0, status=429), rec(2, 10), rec(3, 20, status=429)])
    assert only(found, "consecutive-429").status is Status.PASS


def test_small_batch_warns() -> None:
    found = judge([rec(1, 0, "POST", path=BATCH, body={"xuids": ["1"]})])
    v = only(found, "small-batch")
    assert (v.status, v.records) == (Status.WARN, (1,))


def test_handles_query_counts_owner_xuids() -> None:
    found = judge([rec(1, 0, "POST", path="/handles/query?include=relatedInfo",
                       body={"type": "activity", "owners": {"xuids": ["1", "2", "3"]}})])
    assert only(found, "small-batch").status is Status.PASS


def test_batch_calls_close_together_warn() -> None:
    found = judge([rec(1, 0, "POST", path=BATCH, body={"xuids": ["1", "2"]}),
                   rec(2, 1.2, "POST", path=BATCH, body={"xuids": ["3", "4"]}),
                   rec(3, 9, "POST", path=BATCH, body={"xuids": ["5", "6"]})])
    v = only(found, "batch-frequency")
    assert (v.status, v.records, v.gaps_ms) == (Status.WARN, (1, 2), (1200.0,))
    assert "4 users in all" in v.reason


def test_batch_calls_far_apart_pass() -> None:
    found = judge([rec(1, 0, "POST", path=BATCH, body={"xuids": ["1", "2"]}),
                   rec(2, 3, "POST", path=BATCH, body={"xuids": ["3", "4"]})])
    assert only(found, "batch-frequency").status is Status.PASS


# ---------------------------------------------------------------- the engine itself


def test_every_rule_reports_once_on_an_empty_recording() -> None:
    found = judge([])
    assert [v.rule for v in found] == [r.id for r in verdicts.RULES]
    assert {v.status for v in found} == {Status.NOT_APPLICABLE}


def test_feed_returns_what_each_record_decides() -> None:
    engine = Engine()
    assert engine.feed(rec(1, 0, status=503, response_headers=RA5)) == []
    decided = engine.feed(rec(2, 1))
    assert [(v.rule, v.status) for v in decided] == [
        ("retry-after", Status.FAIL), ("repeated-calls", Status.WARN)]
    assert engine.counts[("retry-after", Status.FAIL)] == 1
    engine.finish()
    assert engine.finish() == []
    with pytest.raises(RuntimeError, match="finished"):
        engine.feed(rec(3, 2))


def test_a_waiting_verdict_is_decided_after_the_reorder_grace() -> None:
    engine = Engine()
    engine.feed(rec(1, 0, status=503, response_headers=RA5))
    assert engine.advance(T0 + 6) == []  # deadline passed, grace not yet
    decided = engine.advance(T0 + 5.01 + 10.2)
    assert [(v.rule, v.status, v.records) for v in decided] == [
        ("retry-after", Status.PASS, (1,))]


def test_damaged_records_do_not_stop_the_engine() -> None:
    engine = Engine()
    engine.feed({"seq": 1, "request": {"method": "GET", "url": "not a url"}})
    engine.feed({"seq": 2, "request": {}, "start": "yesterday", "response": {"status": "x"}})
    assert len(engine.finish()) == len(verdicts.RULES)


def mixed(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """Every kind of trigger, mixed at random: faults with and without Retry-After, 412s,
    409s, missing sessions, batches, SocialManager calls, errors; times out of order now
    and then."""
    rng = random.Random(seed)
    at = 0.0
    for seq in range(1, count + 1):
        at += rng.choice((0.0, 0.05, 0.3, 1.0, 2.5, 6.0, -0.2))
        method, path, body = rng.choice((
            ("GET", LOBBY, None), ("GET", OTHER, None), ("PUT", LOBBY, {"n": rng.randrange(3)}),
            ("POST", BATCH, {"xuids": ["1"] * rng.randrange(4)}),
            ("POST", "/handles/query", {"owners": {"xuids": ["1", "2"]}}), ("GET", "/x", None)))
        status = rng.choice((200, 200, 200, 204, 409, 412, 429, 503, None))
        response_headers = [("ETag", f'"e{rng.randrange(3)}"')]
        if status in (429, 503) and rng.random() < 0.5:
            response_headers.append(("Retry-After", rng.choice(("1", "3", " 2 "))))
        headers = [("If-Match", f'"e{rng.randrange(3)}"')] if method == "PUT" else []
        if rng.random() < 0.1:
            headers.append(("User-Agent", "XboxServicesAPI SocialManager"))
        yield rec(seq, at, method, path, status, user=rng.choice(("alice", "bob", None)),
                  headers=headers, response_headers=response_headers, body=body)


@pytest.mark.parametrize("seed", range(4))
def test_rules_left_out_of_an_exchange_would_have_decided_nothing(seed: int) -> None:
    """The engine feeds the fault-handling and batch rules only what wakes them (their
    statuses, batch calls, or anything while they hold state): feeding them everything
    decides exactly the same."""
    lean, full = Engine(max_keys=8), Engine(max_keys=8)
    full._always = full._feeds  # every rule sees every exchange
    for record in mixed(3000, seed):
        assert lean.feed(record) == full.feed(record)
    assert lean.finish() == full.finish()
    assert lean.counts == full.counts
    assert {s for (_, s) in lean.counts} >= {Status.PASS, Status.WARN, Status.FAIL}
    assert not lean._busy or all(len(k) for k in lean._busy)


def test_feed_numbers_a_record_by_the_seq_it_is_given() -> None:
    engine = Engine()
    first = rec(1, 0, status=503, response_headers=RA5)
    del first["seq"]
    engine.feed(first, seq=41)
    decided = engine.feed(rec(2, 1), seq=42)
    assert only(decided, "retry-after").records == (41, 42)


def test_an_exchange_reads_what_few_rules_need_when_asked() -> None:
    limits = verdicts.default_limits()
    record = rec(1, 2, status=503, took=0.25,
                 response_headers=(("etag", '"e1"'), ("Retry-After", " 7 "), ("ETag", '"e2"')))
    ex = verdicts.to_exchange(record, limits)
    assert (ex.start, ex.end) == (pytest.approx(T0 + 2), pytest.approx(T0 + 2.25))
    assert (ex.retry_after, ex.etag, ex.status) == (7, '"e1"', 503)
    assert ex.request == (ex.client, "GET", LOBBY.lower())
    # An end before the start, or none, is the start plus the duration.
    record["end"] = recording.timestamp(T0)
    assert verdicts.to_exchange(record, limits).end == pytest.approx(T0 + 2.25)
    # No readable start: the end stands for it.
    record.update(start="yesterday", end=recording.timestamp(T0 + 3))
    ex = verdicts.to_exchange(record, limits)
    assert ex.start == ex.end == pytest.approx(T0 + 3)
    record["response"] = None
    ex = verdicts.to_exchange(record, limits)
    assert (ex.status, ex.retry_after, ex.etag) == (None, None, None)


def test_header_pairs_that_are_not_pairs_are_skipped() -> None:
    pairs: list[Any] = [["x"], "ab", {"ETag": 1, "other": 2}, ["ETag", '"a"', "extra"], [5, "x"],
                        ("RETRY-AFTER", 3), ["ETag", '"b"'], ["etag", '"c"']]
    assert verdicts._headers(pairs, verdicts.RESPONSE_HEADERS) == {
        "retry-after": "3", "etag": '"b"'}
    assert verdicts._headers([["Retry-After", "1"], [["unhashable"], "x"]],
                             verdicts.RESPONSE_HEADERS) == {"retry-after": "1"}
    assert verdicts._headers("not a list", verdicts.RESPONSE_HEADERS) == {}


def test_verdict_round_trips_and_reads_as_one_line() -> None:
    v = only(judge([rec(1, 0, status=503, response_headers=RA5), rec(2, 1.01)]), "retry-after")
    back = Verdict.from_dict(json.loads(json.dumps(v.to_dict())))
    assert back == dataclasses.replace(v, time=back.time)
    assert back.time == pytest.approx(T0 + 1.01, abs=1e-6)
    line = str(v)
    assert line.startswith("FAIL Retry-After honoured: ")
    assert line.endswith("[records 1, 2; gaps 1000 ms]")
    assert "\n" not in line


# ---------------------------------------------------------------- limits files


def test_default_limits_are_the_documented_budgets() -> None:
    limits = verdicts.default_limits()
    mpsd = limits.service_for("sessiondirectory.xboxlive.com", "session")
    assert (mpsd.burst.calls, mpsd.burst.seconds) == (30, 15)
    assert (mpsd.sustained.calls, mpsd.sustained.seconds, mpsd.certification) == (300, 300, 3000)
    smart = limits.service_for("smartmatch.xboxlive.com", "hopper")
    assert (smart.name, smart.burst.calls, smart.sustained.calls) == ("matchmaking", 10, 100)
    assert limits.service_for("127.0.0.1", "ticket").name == "matchmaking"
    assert limits.service_for("127.0.0.1", "session").name == "sessiondirectory"


def test_a_limits_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text("version: 1\nservices:\n  sessiondirectory:\n    burst: {calls: 20}\n"
                    "rules:\n  retry_after_scope: resource\n")
    limits = verdicts.load_limits(str(path))
    mpsd = limits.service("sessiondirectory")
    assert (mpsd.burst.calls, mpsd.burst.seconds, mpsd.sustained.calls) == (20, 15, 300)
    assert limits.rules.retry_after_scope == "resource"
    assert limits.rules.repeat_interval_ms == 5000


@pytest.mark.parametrize("text,message", [
    ("version: 2\n", r"limits.yaml:1: version: should be 1, not 2"),
    ("services: {}\n", r"missing 'version: 1'"),
    ("version: 1\nservices:\n  sessiondirectory:\n    burst: {calls: -3}\n",
     r"limits.yaml:4: services.sessiondirectory.burst.calls: should be at least 1, not -3"),
    ("version: 1\nrules:\n  retry_after_scope: host\n",
     r"limits.yaml:3: rules.retry_after_scope: should be one of client, resource, not 'host'"),
    ("version: 1\nrules:\n  polling_tolerence: 0.1\n",
     r"limits.yaml:3: rules.polling_tolerence: unknown key. Valid keys are: retry_after_scope"),
    ("version: 1\nservices:\n  x: {kinds: [lobby], burst: {calls: 1, seconds: 1}, "
     "sustained: {calls: 1, seconds: 1}}\n", r"'lobby' is not a resource kind"),
    ("version: 1\nservices: [\n", r"limits.yaml:3: "),
])
def test_bad_limits_files_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        verdicts.load_limits(str(path))


def test_parse_limits_needs_both_windows() -> None:
    with pytest.raises(ValueError, match="services.x: should have sustained"):
        verdicts.parse_limits({"version": 1, "services": {"x": {"burst": {
            "calls": 1, "seconds": 1}}}})


# ---------------------------------------------------------------- bounded memory


def stamp(at: float, _seconds: dict[int, str] = {}) -> str:  # noqa: B006 - a cache
    """`recording.timestamp(at)`, cheaply: the whole seconds are formatted once."""
    whole = int(at)
    prefix = _seconds.get(whole)
    if prefix is None:
        _seconds.clear()
        prefix = _seconds[whole] = recording.timestamp(whole)[:-8]
    return f"{prefix}.{round((at - whole) * 1e6):06d}Z"


def test_stamp_is_the_recording_format() -> None:
    for at in (T0, T0 + 0.25, T0 + 1234.567891):
        assert stamp(at) == recording.timestamp(at)


def synthetic(count: int) -> Iterator[dict[str, Any]]:
    """Many users, sessions and calls, with every kind of trigger mixed in."""
    base = {"client": "10.1.2.3:4000", "classification": None,
            "provenance": {"source": "forwarded"}, "error": None}
    for seq in range(1, count + 1):
        at = T0 + seq * 0.25
        status = (503 if seq % 101 == 0 else 429 if seq % 103 == 0 else 412 if seq % 107 == 0
                  else 409 if seq % 109 == 0 else 204 if seq % 7 == 0 else 200)
        session = f"s{seq % 997}"
        path = f"/serviceconfigs/{SCID}/sessiontemplates/t/sessions/{session}"
        yield {
            **base,
            "seq": seq,
            "start": stamp(at),
            "end": stamp(at + 0.01),
            "request": {"method": "PUT" if seq % 3 == 0 else "GET", "url": MPSD + path,
                        "headers": [["Authorization", f"redacted:{seq % 53:012x}"],
                                    ["If-Match", f'"{seq % 5}"']],
                        "body": {"json": {"n": seq % 11}} if seq % 3 == 0 else None},
            "response": {"status": status, "reason": "", "body": None,
                         "headers": [["Retry-After", "1"]] if seq % 2 and status == 503 else
                         [["ETag", f'"{seq}"']]},
            "resource": {"kind": "session", "scid": SCID, "template": "t", "name": session,
                         "element": None},
        }


def test_memory_stays_flat_over_200000_records() -> None:
    """State is windows and capped per-key last state: after the windows fill, feeding more
    records leaves the traced memory where it was. Only the tail is traced (tracing every
    allocation is slow); the untraced head fills every window and cap first."""
    engine = Engine(max_keys=500)
    records = synthetic(200_000)
    decided = 0
    for _ in range(192_000):
        decided += len(engine.feed(next(records)))
    gc.collect()
    tracemalloc.start()
    try:
        samples: list[int] = []
        for n in range(8_000):
            decided += len(engine.feed(next(records)))
            if n >= 2_000 and n % 200 == 0:  # the first 2,000 turn the state over
                samples.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert next(records, None) is None
    assert decided > 1000  # the records did trigger verdicts all along
    # Averages over 3,000 records each: heaps and dicts breathe, but they do not grow.
    half = len(samples) // 2
    earlier, later = sum(samples[:half]) / half, sum(samples[half:]) / half
    assert later - earlier < 32 * 1024, (earlier, later)
    assert all(len(keyed) <= 500 for rule in engine.rules for keyed in vars(rule).values()
               if isinstance(keyed, verdicts._Keyed))
