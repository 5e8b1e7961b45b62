"""Retry-After honoured and backoff, calibrated to libHttpClient: the Retry-After cache is
per API (method and resource template) and per user; session writes are never retried;
retries follow the 2-4 s, 4-8 s schedule, 10 s after a 500, and stop in a 20 s window."""

from __future__ import annotations

from typing import Any

from test_verdicts import LOBBY
from test_verdicts import SCID
from test_verdicts import judge
from test_verdicts import of
from test_verdicts import only
from test_verdicts import rec

from mpsdproxy.verdicts import Status

RA2 = (("Retry-After", "2"),)
RA5 = (("Retry-After", "5"),)
GAME = f"/serviceconfigs/{SCID}/sessiontemplates/GameSession/sessions/game-1"
LOBBY_2 = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-9"
ACTIVITY = {"type": "activity", "sessionRef": {"name": "lobby-1"}}
TRANSFER = {"type": "transfer", "sessionRef": {"name": "game-1"}}


def fails(found: list[Any], rule: str) -> list[Any]:
    return [v for v in of(found, rule) if v.status is Status.FAIL]


# ---------------------------------------------------------------- Retry-After, per API


def test_a_get_right_after_a_puts_503_is_another_api() -> None:
    found = judge([rec(1, 0, "PUT", status=503, response_headers=RA5), rec(2, 0.1)])
    v = only(found, "retry-after")
    assert (v.status, v.records) == (Status.PASS, (1,))
    assert "PUT session lobbysession" in v.reason


def test_a_put_and_a_handle_post_during_a_gets_wait_pass() -> None:
    found = judge([rec(1, 0, status=503, response_headers=RA5),
                   rec(2, 0.5, "PUT"), rec(3, 0.8, "POST", path="/handles", body=ACTIVITY),
                   rec(4, 5.5)])
    v = only(found, "retry-after")
    assert (v.status, v.records) == (Status.PASS, (1, 4))


def test_the_read_back_after_a_lost_write_passes() -> None:
    """lost-write-answer.yaml: the write's answer becomes a 503 with Retry-After 2; a
    correct title reads the session back to learn whether its write took effect."""
    found = judge([rec(1, 0, "PUT", status=503, response_headers=RA2), rec(2, 0.31)])
    assert not fails(found, "retry-after")
    assert not fails(found, "backoff")


def test_the_same_api_before_the_deadline_fails() -> None:
    """Another LobbySession is the same API: the library's cache is per API, not per URI."""
    found = judge([rec(1, 0, "PUT", status=503, response_headers=RA5),
                   rec(2, 1, "PUT", path=LOBBY_2)])
    v = only(found, "retry-after")
    assert (v.status, v.records) == (Status.FAIL, (1, 2))
    assert "the same API (PUT session lobbysession)" in v.reason


def test_another_template_is_another_api() -> None:
    found = judge([rec(1, 0, status=503, response_headers=RA5), rec(2, 1, path=GAME)])
    assert only(found, "retry-after").status is Status.PASS


def test_handle_posts_are_told_apart_by_their_type() -> None:
    found = judge([rec(1, 0, "POST", path="/handles", body=ACTIVITY, status=429,
                       response_headers=RA5),
                   rec(2, 1, "POST", path="/handles", body=TRANSFER),
                   rec(3, 2, "POST", path="/handles", body=ACTIVITY)])
    v = only(found, "retry-after")
    assert (v.status, v.records) == (Status.FAIL, (1, 3))


def test_no_rewrite_of_a_write_passes_and_the_wait_is_per_user() -> None:
    found = judge([rec(1, 0, "PUT", status=503, response_headers=RA5),
                   rec(2, 1, "PUT", user="bob"), rec(3, 30, user="bob")])
    v = only(found, "retry-after")
    assert (v.status, v.records) == (Status.PASS, (1,))


def test_resource_scope_judges_one_resource() -> None:
    found = judge([rec(1, 0, "PUT", status=503, response_headers=RA5),
                   rec(2, 1, "PUT", path=LOBBY_2), rec(3, 2, "PUT", path=LOBBY)],
                  retry_after_scope="resource")
    v = only(found, "retry-after")
    assert (v.status, v.records) == (Status.FAIL, (1, 3))


# ---------------------------------------------------------------- backoff, the library's schedule


def test_a_500_waits_at_least_ten_seconds() -> None:
    early = only(judge([rec(1, 0, status=500), rec(2, 5)]), "backoff")
    assert early.status is Status.FAIL
    assert "a 500 waits at least 10 s" in early.reason
    patient = only(judge([rec(1, 0, status=500), rec(2, 10.5)]), "backoff")
    assert patient.status is Status.PASS


def test_the_first_retry_waits_two_seconds_the_second_four() -> None:
    found = judge([rec(1, 0, status=502), rec(2, 2.5, status=504), rec(3, 5.0)])
    v = only(found, "backoff")
    assert v.status is Status.FAIL
    assert "retry 2 came 2490 ms after the 504 (record 2)" in v.reason


def test_a_retry_before_a_mid_chain_retry_after_is_the_other_rules() -> None:
    found = judge([rec(1, 0, status=503), rec(2, 2.5, status=503, response_headers=RA5),
                   rec(3, 4)])
    assert [v.records for v in fails(found, "retry-after")] == [(2, 3)]
    v = only(found, "backoff")
    assert v.status is Status.NOT_APPLICABLE
    assert "judged by Retry-After honoured" in v.reason


def test_the_same_request_after_the_window_is_a_new_call() -> None:
    found = judge([rec(1, 0, status=503), rec(2, 25, status=503), rec(3, 27.5)])
    verdicts = of(found, "backoff")
    assert [(v.status, v.records) for v in verdicts] == [
        (Status.PASS, (1,)), (Status.PASS, (2, 3))]


def test_a_session_write_resent_by_the_title_is_held_to_the_same_spacing() -> None:
    found = judge([rec(1, 0, "PUT", status=503), rec(2, 0.5, "PUT")])
    assert only(found, "backoff").status is Status.FAIL


def test_an_unanswered_request_starts_no_chain() -> None:
    found = judge([rec(1, 0, status=None), rec(2, 0.2)])
    assert only(found, "backoff").status is Status.NOT_APPLICABLE
