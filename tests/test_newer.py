"""A forced 412's newer session, and how the proxy stays true to it until the session changes."""

from __future__ import annotations

import json
from typing import Any

from mpsdproxy import classify
from mpsdproxy import faults
from mpsdproxy import model
from mpsdproxy.newer import NewerSessions
from mpsdproxy.sessions import SessionTracker

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
OTHER = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-2"
KEY = f"{SCID}~lobbysession~lobby-1"
URL = "https://sessiondirectory.xboxlive.com"
JSON = [("Content-Type", "application/json; charset=utf-8")]


def doc(change: int) -> dict[str, Any]:
    return {"constants": {"system": {"maxMembersCount": 8}}, "properties": {"system": {}},
            "members": {}, "changeNumber": change}


def answer(status: int, change: int | None, etag: str) -> model.Response:
    body = faults.encode_json(doc(change)) if change is not None else b""
    return model.Response(status, "", [*JSON, ("ETag", etag)], body)


def put(if_match: str, path: str = LOBBY) -> model.Request:
    return model.Request("PUT", URL + path, [("If-Match", if_match)], b'{"members":{}}')


def seen(change: int = 3, etag: str = '"e3"') -> tuple[SessionTracker, NewerSessions]:
    """A tracker that saw the session at `change` (and once at 5, from another client)."""
    tracker = SessionTracker()
    tracker.observe(model.Exchange(model.Request("GET", URL + LOBBY), answer(200, 5, '"e5"')))
    tracker.observe(model.Exchange(model.Request("GET", URL + LOBBY), answer(200, change, etag)))
    return tracker, NewerSessions(tracker)


def test_the_newer_session_is_one_change_above_the_newest_seen_with_a_fresh_etag() -> None:
    tracker, newer = seen()
    made = newer.make(KEY, "stale-etag")
    assert made is not None and made.etag not in ('"e3"', '"e5"')
    assert made.document()["changeNumber"] == 6  # above 5, seen from another client
    assert tracker.get(KEY) == made
    again = newer.make(KEY, "stale-etag")
    assert again is not None and again.document()["changeNumber"] == 7
    assert again.etag != made.etag


def test_nothing_is_made_without_a_document_and_etag() -> None:
    assert NewerSessions(SessionTracker()).make(KEY, "r") is None


def test_a_write_with_the_newer_etag_goes_out_with_the_services_etag() -> None:
    _, newer = seen()
    made = newer.make(KEY, "stale-etag")
    assert made is not None
    out = newer.outgoing(put(made.etag))
    assert out.answer is None and out.request is not None
    assert out.request.headers.get("If-Match") == '"e3"'
    # Only the precondition changes: method, URL, Authorization and body are signed.
    assert (out.request.method, out.request.url, out.request.body) == (
        "PUT", URL + LOBBY, b'{"members":{}}')


def test_a_write_with_a_superseded_etag_gets_412_again_with_the_newer_session() -> None:
    _, newer = seen()
    first = newer.make(KEY, "stale-etag")
    second = newer.make(KEY, "stale-etag")
    assert first is not None and second is not None
    for stale in ('"e3"', first.etag):
        out = newer.outgoing(put(stale))
        assert out.request is None and out.answer is not None
        assert out.answer.status == 412
        assert out.answer.headers.get("ETag") == second.etag
        assert json.loads(out.answer.body)["changeNumber"] == 7
        verdict = classify.classify(model.Exchange(put(stale), out.answer))
        assert verdict.id == "412.if-match-session" and verdict.anomalies == ()


def test_other_sessions_and_star_writes_are_left_alone() -> None:
    _, newer = seen()
    newer.make(KEY, "stale-etag")
    assert newer.outgoing(put('"e3"', OTHER)).request is None
    assert newer.outgoing(put('"e3"', OTHER)).answer is None
    star = newer.outgoing(put("*"))
    assert star.request is None and star.answer is None


def test_a_read_of_the_same_version_shows_the_newer_etag_and_document() -> None:
    tracker, newer = seen()
    made = newer.make(KEY, "stale-etag")
    assert made is not None
    shown = newer.incoming(model.Exchange(model.Request("GET", URL + LOBBY),
                                          answer(200, 3, '"e3"')))
    assert shown is not None and shown.headers.get("ETag") == made.etag
    assert json.loads(shown.body)["changeNumber"] == 6
    assert shown.headers.get("Content-Length") in (None, str(len(shown.body)))


def test_a_real_change_ends_the_newer_version() -> None:
    tracker, newer = seen()
    made = newer.make(KEY, "stale-etag")
    assert made is not None
    # The mapped write succeeded: the service answers with an ETag of its own.
    real = model.Exchange(put('"e3"'), answer(200, 4, '"e4"'))
    assert newer.incoming(real) is None
    assert len(newer) == 0
    assert newer.outgoing(put('"e3"')).answer is None
