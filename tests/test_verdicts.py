"""The verdict engine over hand-made recordings: for each rule a passing and a failing case,
with the evidence (record seq numbers and gaps in ms) it names. Records are turned into
exchanges by the recording codec, as the report reads them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from mpsdproxy import model
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
LIBRARY_AGENT = "XboxServicesAPI/2016.08.20160822.0 c"


def rec(seq: int, at: float, method: str = "GET", path: str = LOBBY, status: int | None = 200,
        *, took: float = 0.01, user: str | None = "alice", client: str = "127.0.0.1:50000",
        headers: Iterable[tuple[str, str]] = (), response_headers: Iterable[tuple[str, str]] = (),
        body: Any = None, host: str = MPSD, source: str = "forwarded") -> dict[str, Any]:
    """One recording record (the outline of recording.py), `at` seconds after T0."""
    req_headers = [["Authorization", recording.redact_value(f"XBL3.0 x={user};tok")]] \
        if user else []
    req_headers += [[k, v] for k, v in headers]
    if not any(k.lower() == "user-agent" for k, _ in req_headers):
        req_headers.append(["User-Agent", LIBRARY_AGENT])  # a call the client library made
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


def ex(record: dict[str, Any]) -> model.Exchange:
    return recording.to_exchange(record)


def judge(records: Iterable[dict[str, Any]], limits: verdicts.Limits | None = None,
          **settings: Any) -> list[Verdict]:
    engine = Engine(limits, settings=verdicts.RuleSettings(**settings) if settings else None)
    out: list[Verdict] = []
    for r in records:
        out.extend(engine.feed(ex(r)))
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
    assert "the library waits at least 2000 ms" in v.reason


def test_backoff_that_shrinks_below_the_schedule_fails() -> None:
    found = judge([rec(1, 0, status=503), rec(2, 2.01, status=503), rec(3, 3.52)])
    v = only(found, "backoff")
    assert v.status is Status.FAIL
    assert v.records == (1, 2, 3)
    assert v.gaps_ms == (2000.0, 1500.0)
    assert "retry 2 came 1500 ms after the 503 (record 2)" in v.reason
    assert "at least 4000 ms" in v.reason


def test_backoff_retrying_after_the_window_gives_up_fails() -> None:
    """2 s, 4 s and 8 s waits fit the 20 s window; at 14 s, 5.97 s are left: no 4th retry."""
    records = [rec(n, at, status=429) for n, at in enumerate((0, 2.01, 6.02, 14.03), start=1)]
    v = only(judge([*records, rec(5, 15.5)]), "backoff")
    assert v.status is Status.FAIL
    assert v.records == (1, 2, 3, 4, 5)
    assert "retry 4 came after the library gives up: 6.0 s of its 20 s window" in v.reason


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


def test_412_update_existing_write_passes() -> None:
    found = judge([rec(1, 0, "PUT", **PUT_412),
                   rec(2, 0.5, "PUT", headers=(("If-Match", "*"),))])
    v = only(found, "412-handled")
    assert v.status is Status.PASS
    assert "If-Match: * (update existing)" in v.reason


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


def test_bodiless_412_without_a_later_write_passes() -> None:
    v = only(judge([rec(1, 0, "PUT", status=412, headers=STALE)]), "412-handled")
    assert (v.status, v.records) == (Status.PASS, (1,))


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
    # The analyzer's statistics are over the whole trace: the run of calls in 2000 ms above
    # its threshold is flagged once, with the calls of that run.
    assert v.records == (29, 30, 31, 32, 33, 34, 35, 36, 37, 38)
    assert "burst of 10 calls" in v.reason


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
    # Looked at (the analyzer counts them), never flagged (RepeatedCallsRule.cs skips them).
    v = only(found, "repeated-calls")
    assert v.status is Status.PASS and "looked at 2 requests" in v.reason


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


# ---------------------------------------------------------------- what an exchange says


def test_retry_after_is_whole_seconds_counted_from_the_answer() -> None:
    """Retry-After " 7 " is 7 s from the end of the exchange that carried it."""
    found = judge([rec(1, 2, status=503, took=0.25, response_headers=(("Retry-After", " 7 "),)),
                   rec(2, 8.25)])
    v = only(found, "retry-after")
    assert v.status is Status.FAIL
    assert v.gaps_ms == (6000.0,)
    assert "Retry-After 7 s" in v.reason and "1000 ms too early" in v.reason
    fractional = judge([rec(1, 0, status=503, response_headers=(("Retry-After", "1.5"),)),
                        rec(2, 0.5)])
    assert only(fractional, "retry-after").status is Status.NOT_APPLICABLE


def test_times_a_recording_lacks_are_filled_from_the_others() -> None:
    """An end before the start counts as the start; no start is the end."""
    answer = rec(1, 2, status=503, response_headers=RA5)
    answer["end"] = recording.timestamp(T0)
    found = judge([answer, rec(2, 6.5)])
    assert only(found, "retry-after").gaps_ms == (4500.0,)
    answer = rec(1, 2, status=503, response_headers=RA5)
    answer["start"] = None
    found = judge([answer, rec(2, 6.5)])
    assert only(found, "retry-after").gaps_ms == (4490.0,)


def test_the_first_of_repeated_etags_is_the_one_returned() -> None:
    found = judge([rec(1, 0, "PUT", status=412, headers=STALE,
                       response_headers=(("etag", '"e2"'), ("ETag", '"e3"'))),
                   rec(2, 0.5, "PUT", headers=(("If-Match", '"e2"'),))])
    v = only(found, "412-handled")
    assert v.status is Status.PASS
    assert '("e2")' in v.reason


def test_verdicts_name_the_client_by_its_redacted_token() -> None:
    """A live exchange carries the token in clear: no verdict ever shows it."""
    clear = "XBL3.0 x=alice;secret-token"
    records = [rec(1, 0, status=503, response_headers=RA5, user=None,
                   headers=(("Authorization", clear),)),
               rec(2, 1, user=None, headers=(("Authorization", clear),))]
    v = only(judge(records), "retry-after")
    assert v.client and "alice" not in v.client
    assert "secret" not in json.dumps(v.to_dict())


def test_verdict_round_trips_and_reads_as_one_line() -> None:
    v = only(judge([rec(1, 0, status=503, response_headers=RA5), rec(2, 1.01)]), "retry-after")
    back = Verdict.from_dict(json.loads(json.dumps(v.to_dict())))
    assert back == dataclasses.replace(v, time=back.time)
    assert back.time == pytest.approx(T0 + 1.01, abs=1e-6)
    line = str(v)
    assert line.startswith("FAIL Retry-After honoured: ")
    assert line.endswith("[records 1, 2; gaps 1000 ms]")
    assert "\n" not in line
