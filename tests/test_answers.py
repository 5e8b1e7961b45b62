"""answers: what a fired rule makes the title hear, as plain model values (no mitmproxy)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mpsdproxy import answers
from mpsdproxy import catalog
from mpsdproxy import classify
from mpsdproxy import faults
from mpsdproxy import fgrl
from mpsdproxy import model
from mpsdproxy.scenario import Fault
from mpsdproxy.scenario import Phase
from mpsdproxy.sessions import TrackedSession

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
HOPPER = f"/serviceconfigs/{SCID}/hoppers/QuickMatch"
KEY = f"{SCID}~lobbysession~lobby-1"


def doc(change: int = 1) -> dict[str, Any]:
    return {"constants": {"system": {}}, "properties": {"system": {}}, "changeNumber": change}


def request(method: str = "GET", path: str = LOBBY,
            headers: tuple[tuple[str, str], ...] = ()) -> model.Request:
    return model.Request(method, f"https://sessiondirectory.xboxlive.com{path}", headers)


def tracked(etag: str | None = '"e2"') -> TrackedSession:
    return TrackedSession(KEY, LOBBY, faults.encode_json(doc(2)), etag)


def conformant(req: model.Request, response: model.Response, entry_id: str) -> None:
    verdict = classify.classify(model.Exchange(req, response))
    assert verdict.id == entry_id and verdict.anomalies == (), verdict


def test_a_412_to_if_match_carries_the_tracked_session_and_etag() -> None:
    req = request("PUT", headers=(("If-Match", '"e1"'),))
    got = answers.answer(req, Fault(status=412), tracked())
    assert got.row.id == "412.if-match-session"
    assert got.response is not None
    assert json.loads(got.response.body) == doc(2)
    assert got.response.headers.get("ETag") == '"e2"'
    assert got.response.headers.get("Content-Location") is None
    for name in ("Date", "X-XblCorrelationId", "X-Content-Type-Options"):
        assert name in got.response.headers
    conformant(req, got.response, "412.if-match-session")


def test_a_200_by_handle_says_where_the_session_lives_and_one_by_path_does_not() -> None:
    by_handle = request(path="/handles/0b1e2f3a-0000-4000-8000-0000000000aa/session")
    got = answers.answer(by_handle, Fault(status=200), tracked())
    assert got.response is not None
    assert got.response.headers.get("Content-Location") == LOBBY
    direct = answers.answer(request(), Fault(status=200), tracked())
    assert direct.response is not None
    assert direct.response.headers.get("Content-Location") is None  # as the service


@pytest.mark.parametrize(("session", "why"), [
    (None, "the proxy has not seen the session"),
    (tracked(etag=None), "it was seen without an ETag"),
])
def test_without_the_session_a_412_gives_no_answer_and_says_why(
        session: TrackedSession | None, why: str) -> None:
    # Never the bodiless 412 instead: MultiplayerManager's lobby client takes its
    # empty-body failure branch on one (multiplayer_lobby_client.cpp ~L1208).
    req = request("PUT", headers=(("If-Match", '"e1"'),))
    got = answers.answer(req, Fault(status=412), session)
    assert got.row.id == "412.if-match-session"
    assert got.response is None and got.missing == why


def test_only_a_412_to_a_stale_etag_means_someone_else_wrote() -> None:
    assert answers.someone_else_wrote(catalog.get("412.if-match-session"), Fault(status=412))
    assert not answers.someone_else_wrote(catalog.get("412.if-match-session"),
                                          Fault(status=412, body=b"{}"))
    assert not answers.someone_else_wrote(catalog.get("412.precondition-failed"),
                                          Fault(status=412))
    assert not answers.someone_else_wrote(catalog.get("403.read-only"), Fault(status=403))


def test_a_200_without_a_session_gives_no_answer_and_says_why() -> None:
    got = answers.answer(request("POST", HOPPER), Fault(status=200), None)
    assert got.response is None and got.missing == "it names no session"


def test_a_throttle_answers_with_the_decisions_numbers() -> None:
    decision = fgrl.Decision(False, 13, 3, 2, 15)
    got = answers.answer(request(), Fault(throttle=fgrl.Budget(2, 100)), None,
                         throttle=decision)
    assert got.response is not None and got.response.status == 429
    assert json.loads(got.response.body) == fgrl.message(decision)
    assert got.response.headers.get("Retry-After") == "13"
    conformant(request(), got.response, "429.too-many-requests")


def test_the_rules_overrides_go_on_top() -> None:
    fault = Fault(status=503, retry_after=7, body=b"down", content_type="text/html",
                  headers=(("X-Extra", "1"), ("X-Content-Type-Options", None)))
    got = answers.answer(request(), fault, None)
    assert got.response is not None
    headers = got.response.headers
    assert got.response.body == b"down"
    assert headers.get("Retry-After") == "7" and headers.get("X-Extra") == "1"
    assert headers.get("Content-Type") == "text/html"
    assert "X-Content-Type-Options" not in headers


def test_edit_changes_the_real_answer_and_sends_a_new_body_as_written() -> None:
    real = model.Response(200, "OK", [("Content-Type", "application/json"),
                                      ("Content-Encoding", "gzip"), ("ETag", '"e"')],
                          faults.encode_json(doc()))
    edited = answers.edit(real, Fault(body=b"{}", retry_after=9, headers=(("ETag", None),)))
    assert edited.body == b"{}" and edited.status == 200
    assert "Content-Encoding" not in edited.headers and "ETag" not in edited.headers
    assert edited.headers.get("Retry-After") == "9"
    kept = answers.edit(real, Fault(content_type="text/plain"))
    assert kept.body == real.body and kept.headers.get("Content-Encoding") == "gzip"
    assert kept.headers.get("Content-Type") == "text/plain"


@pytest.mark.parametrize(("fault", "phase", "kind"), [
    (Fault(drop=True), Phase.REQUEST, "drop"),
    (Fault(throttle=fgrl.Budget(1, 1)), Phase.REQUEST, "throttle"),
    (Fault(status=503), Phase.REQUEST, "status"),
    (Fault(truncate=True), Phase.RESPONSE, "truncate"),
    (Fault(headers=(("X", "1"),)), Phase.RESPONSE, "edit"),
    (Fault(headers=(("X", "1"),)), Phase.REQUEST, "delay"),
])
def test_kind_names_what_the_fault_does(fault: Fault, phase: Phase, kind: str) -> None:
    assert answers.kind(fault, phase) == kind


def test_service_headers_date_the_answer() -> None:
    headers = dict(answers.service_headers(now=0))
    assert headers["Date"] == "Thu, 01 Jan 1970 00:00:00 GMT"
