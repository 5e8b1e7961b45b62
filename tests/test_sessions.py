"""SessionTracker: which answers store, keep or forget a session, and the memory bounds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mpsdproxy import faults
from mpsdproxy import model
from mpsdproxy import sessions
from mpsdproxy.sessions import SessionTracker
from mpsdproxy.sessions import Update

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
KEY = f"{SCID}~lobbysession~lobby-1"
JSON = [("Content-Type", "application/json; charset=utf-8")]


def doc(change: int = 1, **extra: Any) -> dict[str, Any]:
    return {"constants": {"system": {"maxMembersCount": 8}}, "properties": {"system": {}},
            "members": {"0": {"constants": {"system": {"xuid": "1001"}}}},
            "changeNumber": change, **extra}


def body(value: Any) -> bytes:
    return faults.encode_json(value)


def observe(tracker: SessionTracker, method: str, path: str, status: int, headers: Any,
            payload: bytes | None, request_body: bytes | None = None) -> Update:
    """What the tracker makes of one exchange with the service (headers as str or bytes
    pairs or a mapping)."""
    if isinstance(headers, dict):
        headers = list(headers.items())
    pairs = list(headers or [])
    fields = (model.Headers.from_raw(pairs) if pairs and isinstance(pairs[0][0], bytes)
              else model.Headers(pairs))
    url = path if "://" in path else f"https://sessiondirectory.xboxlive.com{path}"
    exchange = model.Exchange(model.Request(method, url, body=request_body),
                              model.Response(status, "", fields, payload))
    return tracker.observe(exchange)


def etag(n: int) -> list[tuple[str, str]]:
    return [*JSON, ("ETag", f'"etag-{n}"')]


def tracked(change: int = 1) -> SessionTracker:
    tracker = SessionTracker()
    assert observe(tracker, "PUT", LOBBY, 201, etag(change), body(doc(change))) is Update.STORED
    return tracker


# --- what stores a session ---------------------------------------------------------------

@pytest.mark.parametrize(("method", "status"), [
    ("PUT", 201),  # 201.created
    ("PUT", 200),  # 200.ok after a write
    ("GET", 200),  # 200.ok on a read
    ("PUT", 412),  # 412.if-match-session: the current session and ETag
    ("PUT", 403),  # 403.read-only: readable but not writable, the session comes back
])
def test_rows_that_return_the_session_store_it_with_its_etag(method: str, status: int) -> None:
    tracker = SessionTracker()
    assert observe(tracker, method, LOBBY, status, etag(7), body(doc(7))) is Update.STORED
    session = tracker.get(KEY)
    assert session is not None
    assert session.etag == '"etag-7"'
    assert session.document() == doc(7)
    assert session.path == LOBBY


def test_the_body_is_kept_byte_for_byte() -> None:
    raw = b'{"changeNumber": 3, "constants": {}, "properties": {}, "members": {}}'
    tracker = SessionTracker()
    observe(tracker, "GET", LOBBY, 200, etag(3), raw)
    assert tracker.get(KEY).body == raw  # type: ignore[union-attr]


def test_a_later_answer_replaces_the_earlier_one() -> None:
    tracker = tracked(1)
    observe(tracker, "PUT", LOBBY, 412, etag(2), body(doc(2)))
    assert tracker.get(KEY).etag == '"etag-2"'  # type: ignore[union-attr]
    assert tracker.get(KEY).document()["changeNumber"] == 2  # type: ignore[union-attr]
    assert len(tracker) == 1


def test_keys_ignore_case_as_the_service_does() -> None:
    tracker = SessionTracker()
    path = f"/serviceConfigs/{SCID.upper()}/sessionTemplates/LobbySession/sessions/Lobby-1"
    observe(tracker, "PUT", path, 201, etag(1), body(doc()))
    assert KEY in tracker
    assert tracker.get(KEY.upper()) is not None


def test_a_full_url_and_bytes_headers_are_understood() -> None:
    tracker = SessionTracker()
    headers = [(b"content-type", b"application/json"), (b"etag", b'"b-1"')]
    observe(tracker, "GET", f"https://sessiondirectory.xboxlive.com{LOBBY}?x=1", 200, headers,
                    body(doc()))
    assert tracker.get(KEY).etag == '"b-1"'  # type: ignore[union-attr]


def test_a_session_read_by_handle_is_stored_under_its_content_location() -> None:
    tracker = SessionTracker()
    headers = [*etag(4), ("Content-Location", LOBBY)]
    assert observe(tracker, "GET", "/handles/abc/session", 200, headers,
                           body(doc(4))) is Update.STORED
    assert tracker.get(KEY).etag == '"etag-4"'  # type: ignore[union-attr]


@pytest.mark.parametrize("payload", [
    b"",
    b"not json",
    b'{"constants": {}, "properties": {}}',  # no changeNumber: a fragment
    b'["constants", "properties", "changeNumber"]',
    b'{"id": "handle-1", "sessionRef": {}}',  # a handle, which 201 also returns
])
def test_bodies_that_are_not_a_whole_session_are_not_stored(payload: bytes) -> None:
    tracker = SessionTracker()
    assert observe(tracker, "PUT", LOBBY, 201, etag(1), payload) is Update.NONE
    assert len(tracker) == 0


@pytest.mark.parametrize("status", [400, 403, 404, 409, 429, 503, 202])
def test_answers_without_a_session_change_nothing(status: int) -> None:
    tracker = tracked(1)
    assert observe(tracker, "PUT", LOBBY, status, [("Content-Type", "text/plain")],
                           b"nope") is Update.NONE
    assert tracker.get(KEY).etag == '"etag-1"'  # type: ignore[union-attr]


def test_resources_without_a_session_are_ignored() -> None:
    tracker = SessionTracker()
    hopper = f"/serviceconfigs/{SCID}/hoppers/QuickMatch"
    assert observe(tracker, "POST", hopper, 200, etag(1), body(doc())) is Update.NONE
    assert len(tracker) == 0


# --- what forgets it ---------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", LOBBY),  # 204.get-session
    ("PUT", LOBBY),  # 204.put-session-deleted
    ("DELETE", f"{LOBBY}/members/me"),  # 204.element-gone
    ("PUT", f"{LOBBY}/members/me"),  # 204.element-gone
])
def test_204_rows_that_mean_the_session_is_gone_forget_it(method: str, path: str) -> None:
    tracker = tracked()
    assert observe(tracker, method, path, 204, [], b"") is Update.FORGOTTEN
    assert tracker.get(KEY) is None


def test_204_on_a_missing_element_keeps_the_session() -> None:
    tracker = tracked()
    assert observe(tracker, "GET", f"{LOBBY}/members/7", 204, [], b"") is Update.NONE
    assert tracker.get(KEY) is not None


def test_an_element_answer_with_a_new_etag_makes_the_document_stale() -> None:
    tracker = tracked(1)
    member = {"constants": {"system": {"xuid": "1002"}}}
    assert observe(tracker, "PUT", f"{LOBBY}/members/me", 201, etag(2),
                           body(member)) is Update.FORGOTTEN
    assert tracker.get(KEY) is None


def test_an_element_read_with_the_same_etag_keeps_the_document() -> None:
    tracker = tracked(1)
    assert observe(tracker, "GET", f"{LOBBY}/properties", 200, etag(1),
                           body({"system": {}})) is Update.NONE
    assert tracker.get(KEY) is not None


def test_a_304_with_the_same_etag_keeps_it() -> None:
    tracker = tracked(1)
    assert observe(tracker, "GET", LOBBY, 304, [("ETag", '"etag-1"')], b"") is Update.NONE
    assert tracker.get(KEY) is not None


def test_creating_a_handle_for_the_session_forgets_it() -> None:
    """The service bumps the session's ETag when a handle names it."""
    tracker = tracked()
    request = json.dumps({"version": 1, "type": "activity", "sessionRef": {
        "scid": SCID, "templateName": "LobbySession", "name": "LOBBY-1"}}).encode()
    assert observe(tracker, "POST", "/handles", 201, JSON, body({"id": "h"}),
                           request) is Update.FORGOTTEN
    assert tracker.get(KEY) is None


def test_a_handle_for_another_session_or_a_failed_one_keeps_it() -> None:
    tracker = tracked()
    other = json.dumps({"sessionRef": {"scid": SCID, "templateName": "LobbySession",
                                       "name": "lobby-2"}}).encode()
    mine = json.dumps({"sessionRef": {"scid": SCID, "templateName": "LobbySession",
                                      "name": "lobby-1"}}).encode()
    assert observe(tracker, "POST", "/handles", 201, JSON, b"{}", other) is Update.NONE
    assert observe(tracker, "POST", "/handles", 400, JSON, b"{}", mine) is Update.NONE
    assert observe(tracker, "POST", "/handles", 201, JSON, b"{}", b"junk") is Update.NONE
    assert tracker.get(KEY) is not None


def test_forget_and_clear() -> None:
    tracker = tracked()
    assert tracker.forget(KEY.upper()) is True
    assert tracker.forget(KEY) is False
    tracker = tracked()
    tracker.clear()
    assert len(tracker) == 0 and tracker.size == 0


# --- bounds ------------------------------------------------------------------------------

def path_of(i: int) -> str:
    return f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/s{i}"


def key_of(i: int) -> str:
    return f"{SCID}~lobbysession~s{i}"


def test_the_least_recently_used_session_is_forgotten_first() -> None:
    tracker = SessionTracker(max_sessions=3)
    for i in range(3):
        observe(tracker, "GET", path_of(i), 200, etag(i), body(doc(i)))
    assert tracker.get(key_of(0)) is not None  # s0 is now the most recently used
    observe(tracker, "GET", path_of(3), 200, etag(3), body(doc(3)))
    assert len(tracker) == 3
    assert tracker.get(key_of(1)) is None
    assert all(tracker.get(key_of(i)) is not None for i in (0, 2, 3))


def test_the_same_document_again_is_stored_again_without_a_second_look() -> None:
    """A title polling an unchanged session: the document stays, its session becomes the
    most recently used, as if stored anew."""
    tracker = SessionTracker(max_sessions=3)
    for i in range(3):
        observe(tracker, "GET", path_of(i), 200, etag(i), body(doc(i)))
    kept = tracker.get(key_of(1))
    observe(tracker, "GET", path_of(2), 200, etag(2), body(doc(2)))
    assert observe(tracker, "GET", path_of(0), 200, etag(0), body(doc(0))) is Update.STORED
    observe(tracker, "GET", path_of(3), 200, etag(3), body(doc(3)))
    assert tracker.get(key_of(1)) is None  # s0 was refreshed, so s1 was the oldest
    assert tracker.get(key_of(0)).body == body(doc(0))  # type: ignore[union-attr]
    assert kept is not None and len(tracker) == 3


@pytest.mark.parametrize(("stored", "etag_now", "path_now"), [
    (b"junk", '"etag-1"', LOBBY),  # remembered, never found whole: still looked at
    (None, '"etag-2"', LOBBY),  # same bytes, another ETag
    (None, '"etag-1"', LOBBY.replace("LobbySession", "lobbysession")),  # another spelling
])
def test_the_same_bytes_are_looked_at_again_unless_all_else_is_the_same(
        stored: bytes | None, etag_now: str, path_now: str) -> None:
    raw = stored if stored is not None else body(doc())
    tracker = SessionTracker()
    if stored is not None:
        tracker.remember(KEY, LOBBY, raw, '"etag-1"')
    else:
        observe(tracker, "GET", LOBBY, 200, etag(1), raw)
    got = observe(tracker, "GET", path_now, 200, [("ETag", etag_now)], raw)
    assert got is (Update.NONE if stored is not None else Update.STORED)
    session = tracker.get(KEY)
    assert session is not None and (session.etag, session.path) == (etag_now, path_now)


@pytest.mark.parametrize("headers", [
    [("etag", '"1"'), ("ETag", '"2"'), ("Content-Location", LOBBY)],
    [(b"ETAG", b'"1"'), (b"etag", b'"2"'), (b"content-location", LOBBY.encode())],
    {"Etag": '"1"', "content-location": LOBBY},
])
def test_the_first_etag_and_content_location_are_the_ones(headers: Any) -> None:
    tracker = SessionTracker()
    assert observe(tracker, "GET", "/handles/abc/session", 200, headers,
                           body(doc())) is Update.STORED
    assert tracker.get(KEY).etag == '"1"'  # type: ignore[union-attr]


def test_memory_stays_flat_however_many_sessions_pass() -> None:
    tracker = SessionTracker()
    for i in range(sessions.DEFAULT_MAX_SESSIONS + 2_000):
        tracker.remember(key_of(i), path_of(i), b'{"changeNumber":1}', None)
    assert len(tracker) == sessions.DEFAULT_MAX_SESSIONS
    assert tracker.get(key_of(0)) is None
    assert tracker.get(key_of(sessions.DEFAULT_MAX_SESSIONS + 1_999)) is not None


def test_the_byte_budget_evicts_too_and_counts_exactly() -> None:
    tracker = SessionTracker(max_bytes=100)
    for i in range(5):
        tracker.remember(key_of(i), path_of(i), b"x" * 40, None)
    assert len(tracker) == 2 and tracker.size == 80
    tracker.remember(key_of(4), path_of(4), b"y" * 10, None)  # replaces, does not add
    assert tracker.size == 50
    assert tracker.remember(key_of(9), path_of(9), b"z" * 101, None) is False
    assert tracker.get(key_of(9)) is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_sessions": 0}, "max_sessions should be at least 1, not 0"),
    ({"max_bytes": -1}, "max_bytes should be at least 1, not -1"),
])
def test_bounds_are_validated(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionTracker(**kwargs)


@pytest.mark.parametrize("payload", [None, b"junk", b"[" * 100_000, b'{"sessionRef": 1}'])
def test_odd_bodies_never_raise(payload: bytes | None) -> None:
    tracker = SessionTracker()
    for method, path, status in [("GET", LOBBY, 200), ("PUT", LOBBY, 204),
                                 ("POST", "/handles", 201), ("GET", "/::not-a-path::", 200)]:
        assert observe(tracker, method, path, status, etag(1), payload, payload) is Update.NONE


def test_an_exchange_without_an_answer_changes_nothing() -> None:
    tracker = tracked()
    request = model.Request("GET", f"https://sessiondirectory.xboxlive.com{LOBBY}")
    assert tracker.observe(model.Exchange(request, error="killed")) is Update.NONE
    assert tracker.get(KEY) is not None


def test_the_rows_that_mean_gone_come_from_the_catalog() -> None:
    assert sessions.GONE_ENTRIES == {"204.get-session", "204.put-session-deleted",
                                     "204.element-gone"}


def test_whole_session() -> None:
    assert sessions.whole_session(body(doc())) == doc()
    assert sessions.whole_session(b"  " + body(doc())) == doc()
    assert sessions.whole_session(b'{"changeNumber": 1}') is None
    assert sessions.whole_session(b"[" * 100_000) is None
    assert sessions.whole_session(None) is None
