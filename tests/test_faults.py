"""The fault builder: every row of the table as a response that classifies as that row."""

from __future__ import annotations

import json

import pytest

from mpsdproxy import catalog
from mpsdproxy import faults
from mpsdproxy import fgrl
from mpsdproxy import model
from mpsdproxy.classify import classify

SESSION = "/serviceconfigs/6efc0200-fd0e-4f4b-8b5c-7e3d0f4a1b2c/sessiontemplates/t/sessions/s"
ETAG = '"a5cce857"'
WHOLE = {"constants": {"system": {}, "custom": {}}, "properties": {"system": {}, "custom": {}},
         "members": {}, "changeNumber": 3, "correlationId": "c0ffee"}

# entry id -> (method, path, request headers) of the situation the row describes.
REQUESTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "204.get-element": ("GET", f"{SESSION}/members/me", {}),
    "204.put-session-deleted": ("PUT", SESSION, {}),
    "204.element-gone": ("DELETE", f"{SESSION}/servers/host", {}),
    "304.not-modified": ("GET", SESSION, {"If-None-Match": ETAG}),
    "412.precondition-failed": ("PUT", SESSION, {"If-None-Match": "*"}),
    "412.if-match-session": ("DELETE", SESSION, {"If-Match": '"old"'}),
    "201.created": ("PUT", SESSION, {}),
    "403.read-only": ("PUT", SESSION, {}),
    "405.method-not-allowed": ("POST", SESSION, {}),
}


def situation(entry: catalog.Entry) -> tuple[str, str, dict[str, str]]:
    return REQUESTS.get(entry.id, ("GET", SESSION, {}))


@pytest.mark.parametrize("entry", catalog.ENTRIES, ids=lambda e: e.id)
def test_every_entry_builds_a_conformant_reply(entry):
    reply = faults.build(entry, session=WHOLE if entry.returns_session else None, etag=ETAG)
    assert (reply.status, reply.reason) == (entry.status, entry.reason)
    method, path, req = situation(entry)
    request = model.Request(method, f"https://sessiondirectory.xboxlive.com{path}",
                            list(req.items()))
    result = classify(model.Exchange(request, reply))
    assert (result.id, result.anomalies) == (entry.id, ())


@pytest.mark.parametrize("entry", catalog.ENTRIES, ids=lambda e: e.id)
def test_reply_follows_the_row(entry):
    reply = faults.build(entry.id, session=WHOLE if entry.returns_session else None, etag=ETAG)
    content_type = reply.header("Content-Type")
    if entry.content_type is None:
        assert content_type is None
    else:
        assert content_type == entry.content_type  # as the service sends it: no charset
    for name in entry.required_headers:
        assert reply.header(name) is not None, name
    if entry.body is catalog.BodyKind.NONE:
        assert reply.body == b""
    if entry.returns_session:
        assert json.loads(reply.body) == WHOLE
        assert reply.header("ETag") == ETAG


@pytest.mark.parametrize("entry_id", [e.id for e in catalog.ENTRIES if e.returns_session])
def test_session_rows_need_a_session(entry_id):
    with pytest.raises(ValueError, match=f"{entry_id} returns the whole session, but none"):
        faults.build(entry_id, etag=ETAG)


def test_412_with_session_needs_an_etag():
    with pytest.raises(ValueError, match="412.if-match-session must carry the session's ETag"):
        faults.build("412.if-match-session", session=WHOLE)


def test_unknown_entry():
    with pytest.raises(catalog.UnknownEntryError, match="Valid entries are"):
        faults.build("418.teapot")


@pytest.mark.parametrize("entry_id", ["503.service-unavailable", "429.too-many-requests"])
@pytest.mark.parametrize(
    "retry_after, expected",
    [(None, str(faults.DEFAULT_RETRY_AFTER)), (30, "30"), (1, "1"), (0, "0"), (2.0, "2")],
)
def test_retry_after(entry_id, retry_after, expected):
    reply = faults.build(entry_id, retry_after=retry_after)
    assert reply.header("Retry-After") == expected
    assert [k for k, _ in reply.headers].count("Retry-After") == 1


@pytest.mark.parametrize("retry_after", [0.4, 2.5, 59.9])
def test_retry_after_is_whole_seconds(retry_after):
    value = faults.build("503.service-unavailable", retry_after=retry_after).header("Retry-After")
    assert value is not None and value.isascii() and value.isdigit()
    assert abs(int(value) - retry_after) < 1


def test_retry_after_only_where_the_row_requires_it():
    assert faults.build("404.not-found", retry_after=10).header("Retry-After") is None


def test_default_429_body_is_the_fgrl_message():
    reply = faults.build("429.too-many-requests")
    body = json.loads(reply.body)
    assert set(body) == {
        "version", "currentRequests", "maxRequests", "periodInSeconds", "limitType",
    }
    refused = fgrl.Decision(False, faults.DEFAULT_RETRY_AFTER, body["currentRequests"],
                            body["maxRequests"], body["periodInSeconds"])
    assert body == fgrl.message(refused)
    assert body["currentRequests"] > body["maxRequests"]


@pytest.mark.parametrize("message, body", [("nope", b"nope"), (b"\x00raw", b"\x00raw")])
def test_message_override(message, body):
    assert faults.build("400.bad-request", message=message).body == body


def test_default_message_is_the_meaning():
    entry = catalog.get("409.conflict")
    assert faults.build(entry).body == entry.meaning.encode()


def test_4xx_session_reply_is_not_cached():
    reply = faults.build("412.if-match-session", session=WHOLE, etag=ETAG)
    assert reply.header("Cache-Control") == "no-cache, no-store"
    assert [k for k, _ in reply.headers].count("ETag") == 1
    assert faults.build("200.ok", session=WHOLE, etag=ETAG).header("Cache-Control") is None


def test_extra_headers_come_last():
    reply = faults.build("503.service-unavailable",
                         extra_headers=[("X-XblCorrelationId", "abc"), ("Date", "x")])
    assert list(reply.headers[-2:]) == [("X-XblCorrelationId", "abc"), ("Date", "x")]


def test_reply_is_a_model_response():
    reply = faults.build("412.if-match-session", session=WHOLE, etag=ETAG)
    assert isinstance(reply, model.Response)
    assert reply.headers.first("etag") == reply.headers.first("ETAG") == ETAG
    assert reply.header("missing") is None


def test_encode_json_is_compact_and_keeps_unicode():
    assert faults.encode_json({"a": [1, 2], "n": "Zoë"}) == '{"a":[1,2],"n":"Zoë"}'.encode()


def test_reply_is_frozen():
    reply = faults.build("202.accepted")
    with pytest.raises(AttributeError):
        reply.status = 200  # type: ignore[misc]


def test_negative_retry_after_is_refused():
    with pytest.raises(ValueError, match="retry_after should be whole seconds >= 0, not -1"):
        faults.build("429.too-many-requests", retry_after=-1)
