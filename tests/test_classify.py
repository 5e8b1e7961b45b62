"""The classifier: every catalog entry, every anomaly, and totality over junk input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mpsdproxy import catalog
from mpsdproxy import faults
from mpsdproxy import fgrl
from mpsdproxy import model
from mpsdproxy.classify import NO_RESPONSE
from mpsdproxy.classify import NOT_MPSD
from mpsdproxy.classify import Classification
from mpsdproxy.classify import classify
from mpsdproxy.classify import is_mpsd

SCID = "6efc0200-fd0e-4f4b-8b5c-7e3d0f4a1b2c"
SESSION = f"/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/Lobby-1"
ME = f"{SESSION}/members/me"
ETAG = '"415f6d4dd34d78c5090c0e916bfaedc3"'
WHOLE = {
    "constants": {"system": {"version": 1, "maxMembersCount": 8}, "custom": {}},
    "properties": {"system": {"joinRestriction": "followed"}, "custom": {}},
    "members": {"0": {"constants": {"system": {"xuid": "2533274800000002", "index": 0}}}},
    "membersInfo": {"first": 0, "next": 1, "count": 1, "accepted": 1},
    "correlationId": "5c0ffee0-7e57-4000-8000-00000000c0de",
    "changeNumber": 2,
}
AUTH = {"Authorization": "XBL3.0 x=1234;token", "x-xbl-contract-version": "107"}

# entry id -> (method, path, request headers): the situation the row describes.
SITUATIONS: dict[str, tuple[str, str, dict[str, str]]] = {
    "200.ok": ("GET", SESSION, AUTH),
    "201.created": ("PUT", SESSION, AUTH),
    "202.accepted": ("POST", "/handles", AUTH),
    "204.get-session": ("GET", SESSION, AUTH),
    "204.get-element": ("GET", ME, AUTH),
    "204.put-session-deleted": ("PUT", SESSION, AUTH),
    "204.element-gone": ("DELETE", ME, AUTH),
    "304.not-modified": ("GET", SESSION, {**AUTH, "If-None-Match": ETAG}),
    "400.bad-request": ("PUT", SESSION, AUTH),
    "403.forbidden": ("PUT", SESSION, {}),
    "403.read-only": ("PUT", SESSION, AUTH),
    "404.not-found": ("GET", f"/serviceconfigs/{SCID}/hoppers/nope", AUTH),
    "405.method-not-allowed": ("POST", SESSION, AUTH),
    "409.conflict": ("PUT", SESSION, AUTH),
    "412.precondition-failed": ("PUT", SESSION, {**AUTH, "If-None-Match": "*"}),
    "412.if-match-session": ("PUT", SESSION, {**AUTH, "If-Match": '"stale"'}),
    "429.too-many-requests": ("GET", SESSION, AUTH),
    "503.service-unavailable": ("GET", SESSION, AUTH),
}


def test_situations_cover_the_catalog():
    assert sorted(SITUATIONS) == sorted(e.id for e in catalog.ENTRIES)
    assert len(SITUATIONS) == 18


HeaderSpec = dict[str, str] | list[tuple[str, str]]


def judge(method: str, path: str, req: HeaderSpec, status: int | None,
          resp: HeaderSpec | None = None, body: bytes | None = None) -> Classification:
    """Classify the exchange these parts make (no response when `status` is None)."""
    pairs = list(req.items()) if isinstance(req, dict) else req
    request = model.Request(method, f"https://sessiondirectory.xboxlive.com{path}", pairs)
    response = None
    if status is not None:
        fields = list(resp.items()) if isinstance(resp, dict) else list(resp or ())
        response = model.Response(status, "", fields, body or b"")
    return classify(model.Exchange(request, response))


THROTTLED = faults.encode_json(fgrl.message(fgrl.Decision(False, 5, 31, 30, 15)))


def built(entry_id: str) -> model.Response:
    entry = catalog.get(entry_id)
    return faults.build(entry, session=WHOLE if entry.returns_session else None, etag=ETAG)


@pytest.mark.parametrize("entry_id", list(SITUATIONS))
def test_every_entry_conformant_from_faults(entry_id):
    method, path, req = SITUATIONS[entry_id]
    reply = built(entry_id)
    result = classify(model.Exchange(model.Request(
        method, f"https://sessiondirectory.xboxlive.com{path}", list(req.items())), reply))
    assert result.id == entry_id
    assert result.anomalies == ()
    assert result.conformant
    assert result.meaning == catalog.get(entry_id).meaning


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


# Responses written out by hand (pretty JSON, lower-case names, dict headers), so the
# classifier is not only checked against the fault builder.
BY_HAND = [
    ("200.ok", "GET", SESSION, AUTH, 200,
     {"content-type": "application/json", "etag": ETAG,
      "cache-control": "max-age=0, must-revalidate"}, _json(WHOLE)),
    ("201.created", "PUT", SESSION, AUTH, 201,
     [("Content-Type", "Application/JSON; charset=utf-8"), ("ETag", ETAG)], _json(WHOLE)),
    ("204.get-session", "GET", SESSION, AUTH, 204, {}, b""),
    ("204.get-element", "get", ME, AUTH, 204, [("X-XblCorrelationId", "abc")], None),
    ("204.put-session-deleted", "PUT", SESSION, AUTH, 204, {}, b""),
    ("204.element-gone", "DELETE", f"{SESSION}/servers/host", AUTH, 204, {}, b""),
    ("204.element-gone", "PUT", f"{SESSION}/properties", AUTH, 204, {}, b""),
    ("304.not-modified", "GET", SESSION, {"if-none-match": ETAG}, 304, {"ETag": ETAG}, b""),
    ("403.forbidden", "GET", SESSION, {}, 403, {"Content-Type": "text/plain"},
     b"The requested service config cannot be accessed."),
    ("403.read-only", "PUT", SESSION, AUTH, 403, {"Content-Type": "application/json"},
     _json(WHOLE)),
    ("404.not-found", "GET", f"{SESSION}/members/7", AUTH, 404,
     {"Content-Type": "text/plain; charset=utf-8"}, b"The requested session wasn't found"),
    ("412.precondition-failed", "DELETE", SESSION, {"If-Match": "*"}, 412, {}, b""),
    ("412.if-match-session", "PUT", SESSION, {"If-Match": ETAG}, 412,
     {"Content-Type": "application/json", "ETag": '"415e7ae6"',
      "Cache-Control": "no-cache, no-store"}, _json(WHOLE)),
    # A 4xx that returns the session returns all of it, even for an element URI.
    ("412.if-match-session", "DELETE", ME, {"If-Match": ETAG}, 412,
     {"Content-Type": "application/json", "ETag": '"415e7ae6"'}, _json(WHOLE)),
    ("429.too-many-requests", "POST", f"/serviceconfigs/{SCID}/batch", AUTH, 429,
     {"Content-Type": "application/json", "Retry-After": "13"},
     b'{"version":1, "currentRequests":13, "maxRequests":10, "periodInSeconds":120, '
     b'"limitType":"Rate"}'),
    ("503.service-unavailable", "GET", SESSION, AUTH, 503,
     {"content-type": "text/plain", "retry-after": " 30 "}, b""),
]


@pytest.mark.parametrize("entry_id, method, url, req, status, resp, body", BY_HAND)
def test_conformant_by_hand(entry_id, method, url, req, status, resp, body):
    result = judge(method, url, req, status, resp, body)
    assert (result.id, result.anomalies) == (entry_id, ())


def anomaly_codes(result: Classification) -> list[str]:
    return [a.code for a in result.anomalies]


# (name, method, url, req headers, status, resp headers, body, expected id, anomaly codes)
ANOMALIES = [
    ("503 without Retry-After", "GET", SESSION, AUTH, 503,
     {"Content-Type": "text/plain"}, b"", "503.service-unavailable", ["missing-header"]),
    ("503 Retry-After as HTTP date", "GET", SESSION, AUTH, 503,
     {"Content-Type": "text/plain", "Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, b"",
     "503.service-unavailable", ["bad-retry-after"]),
    ("429 fractional Retry-After", "GET", SESSION, AUTH, 429,
     {"Content-Type": "application/json", "Retry-After": "1.5"},
     THROTTLED, "429.too-many-requests", ["bad-retry-after"]),
    ("429 negative Retry-After", "GET", SESSION, AUTH, 429,
     {"Content-Type": "application/json", "Retry-After": "-3"},
     THROTTLED, "429.too-many-requests", ["bad-retry-after"]),
    ("503 non-ASCII digits in Retry-After", "GET", SESSION, AUTH, 503,
     {"Content-Type": "text/plain", "Retry-After": "\u00b2"}, b"",
     "503.service-unavailable", ["bad-retry-after"]),
    ("412 with a session but no ETag", "PUT", SESSION, {"If-Match": ETAG}, 412,
     {"Content-Type": "application/json"}, _json(WHOLE), "412.if-match-session",
     ["missing-header"]),
    ("400 as text/html", "PUT", SESSION, AUTH, 400,
     {"Content-Type": "text/html"}, b"<p>bad</p>", "400.bad-request", ["content-type"]),
    ("409 without a content type", "PUT", SESSION, AUTH, 409, {}, b"conflict",
     "409.conflict", ["content-type"]),
    ("200 session as text/plain", "GET", SESSION, AUTH, 200,
     {"Content-Type": "text/plain", "ETag": ETAG}, _json(WHOLE), "200.ok", ["content-type"]),
    ("304 to a request without If-None-Match", "GET", SESSION, AUTH, 304, {}, b"",
     "304.not-modified", ["missing-precondition"]),
    ("412 to a request without a precondition", "PUT", SESSION, AUTH, 412, {}, b"",
     "412.precondition-failed", ["missing-precondition"]),
    ("412 partial session for an element", "PUT", ME, {"If-Match": ETAG}, 412,
     {"Content-Type": "application/json", "ETag": ETAG},
     b'{"members":{"me":{"properties":{}}}}', "412.if-match-session", ["partial-session"]),
    ("403 read-only partial session", "PUT", f"{SESSION}/properties", AUTH, 403,
     {"Content-Type": "application/json"}, b'{"properties":{"custom":{}}}',
     "403.read-only", ["partial-session"]),
    ("body on 204", "GET", SESSION, AUTH, 204, {}, b"{}", "204.get-session",
     ["unexpected-body"]),
    ("body on 503", "GET", SESSION, AUTH, 503, {"Content-Type": "text/plain",
                                                "Retry-After": "5"}, b"busy",
     "503.service-unavailable", ["unexpected-body"]),
    ("invalid JSON session", "GET", SESSION, AUTH, 200,
     {"Content-Type": "application/json", "ETag": ETAG}, b'{"changeNumber": 1,',
     "200.ok", ["bad-json"]),
    ("invalid JSON 412", "PUT", SESSION, {"If-Match": ETAG}, 412,
     {"Content-Type": "application/json", "ETag": ETAG}, b"\xff\xfe{",
     "412.if-match-session", ["bad-json"]),
]


@pytest.mark.parametrize(
    "method, url, req, status, resp, body, entry_id, codes",
    [case[1:] for case in ANOMALIES],
    ids=[case[0] for case in ANOMALIES],
)
def test_anomalies(method, url, req, status, resp, body, entry_id, codes):
    result = judge(method, url, req, status, resp, body)
    assert result.id == entry_id
    assert anomaly_codes(result) == codes
    assert not result.conformant
    assert all(a.message for a in result.anomalies)


def test_missing_header_names_the_header():
    result = judge("GET", SESSION, AUTH, 503, {"Content-Type": "text/plain"}, b"")
    assert result.anomalies[0].message == "503 must carry Retry-After"
    result = judge("PUT", SESSION, {"If-Match": ETAG}, 412,
                      {"Content-Type": "application/json"}, _json(WHOLE))
    assert result.anomalies[0].message == "412 must carry ETag"


def test_several_anomalies_at_once():
    result = judge("GET", SESSION, AUTH, 429, {"Content-Type": "text/html"}, b"slow down")
    assert result.id == "429.too-many-requests"
    assert anomaly_codes(result) == ["missing-header", "content-type"]


@pytest.mark.parametrize("status", [500, 418, 401, 302, 599, 100])
def test_unlisted_status(status):
    result = judge("GET", SESSION, AUTH, status, {"Content-Type": "text/plain"}, b"x")
    assert result.id is None
    assert anomaly_codes(result) == ["unlisted-status"]
    assert str(status) in result.meaning
    assert not result.conformant


def test_no_response():
    result = judge("GET", SESSION, AUTH, None)
    assert result.id is None
    assert anomaly_codes(result) == ["no-response"]


def test_to_dict_is_plain_json():
    result = judge("GET", SESSION, AUTH, 503, {"Content-Type": "text/plain"}, b"")
    data = result.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["id"] == "503.service-unavailable"
    assert data["meaning"] == catalog.get("503.service-unavailable").meaning
    assert data["anomalies"] == [
        {"code": "missing-header", "message": "503 must carry Retry-After"},
    ]


def test_first_header_value_wins_and_names_are_case_insensitive():
    headers = [("retry-after", "7"), ("Retry-After", "soon"), ("CONTENT-TYPE", "text/plain")]
    result = judge("GET", SESSION, AUTH, 503, headers, b"")
    assert result.conformant


TOKENS = st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}", fullmatch=True)
VALUES = st.one_of(
    st.text(max_size=20).filter(lambda t: not set(t) & {"\r", "\n", "\x00"}),
    st.sampled_from(["application/json", "text/plain", "*", ETAG, "5", "1.5", "Caf\udce9"]),
)
HEADER_NAMES = st.one_of(
    st.sampled_from(["Content-Type", "Retry-After", "ETag", "If-Match", "If-None-Match",
                     "content-type", "CONTENT-TYPE", "retry-after"]),
    TOKENS,
)
HEADERS = st.lists(st.tuples(HEADER_NAMES, VALUES), max_size=6)
STATUSES = st.one_of(st.none(), st.sampled_from(catalog.listed_statuses()),
                     st.integers(100, 599))
PATHS = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cc", "Zs", "Cs")), max_size=30)
    .map(lambda t: "/" + t),
    st.sampled_from([SESSION, ME, "/handles", f"{SESSION}/properties", "/caf\udce9"]),
)
BODIES = st.one_of(st.none(), st.binary(), st.builds(_json, st.just(WHOLE)),
                   st.sampled_from([b"{}", b"[]", b"null", b"[" * 5000, b"\xff\xfe{"]))


@settings(max_examples=300, deadline=None)
@given(st.one_of(TOKENS, st.sampled_from(["GET", "PUT", "POST", "DELETE"])), PATHS, HEADERS,
       STATUSES, HEADERS, BODIES)
def test_classify_never_raises(method, path, req, status, resp, body):
    """Whatever a valid exchange holds, it gets a Classification (never an error)."""
    result = judge(method, path, req, status, resp, body)
    assert isinstance(result, Classification)
    assert "classifier-error" not in anomaly_codes(result)
    json.dumps(result.to_dict())
    if result.id is not None:
        assert catalog.get(result.id).status == status


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["GET", "PUT", "POST", "DELETE"]), PATHS, HEADERS,
       st.sampled_from(catalog.listed_statuses()), HEADERS, BODIES)
def test_a_recorded_exchange_classifies_as_the_live_one(method, path, req, status, resp, body):
    """Classifying an exchange read back from its record gives the live classification."""
    from mpsdproxy import recording

    pairs = list(req)
    exchange = model.Exchange(
        model.Request(method, f"https://sessiondirectory.xboxlive.com{path}", pairs),
        model.Response(status, "", list(resp), body or b""))
    record = recording.to_record(exchange, recording.Redactor(enabled=False))
    assert classify(recording.to_exchange(record)) == classify(exchange)


def test_conformant_classifications_are_shared_but_their_dicts_are_not():
    reply = built("200.ok")
    method, path, req = SITUATIONS["200.ok"]
    request = model.Request(method, f"https://sessiondirectory.xboxlive.com{path}",
                            list(req.items()))
    first = classify(model.Exchange(request, reply))
    second = classify(model.Exchange(request, reply))
    assert first.conformant and first == second
    assert first.to_dict() is not second.to_dict()
    assert first.to_dict()["anomalies"] is not second.to_dict()["anomalies"]


# ---- scope: only MPSD traffic is judged by the table


def exchange_at(url: str, status: int | None, method: str = "GET",
                resp: list[tuple[str, str]] | None = None) -> model.Exchange:
    response = None if status is None else model.Response(status, "", resp or [], b"")
    return model.Exchange(model.Request(method, url, []), response)


@pytest.mark.parametrize("url", [
    f"https://sessiondirectory.xboxlive.com{SESSION}",
    "https://SessionDirectory.XboxLive.com:443/handles/query",
    "https://momatch.xboxlive.com/serviceconfigs/x/hoppers/h/tickets",
    "https://sessiondirectory.xboxlive.com/anything/the/table/does/not/name",
    f"http://127.0.0.1:8081{SESSION}",
    f"http://localhost{ME}",
    "http://127.0.0.1:9/handles",
])
def test_mpsd_hosts_and_mpsd_paths_are_mpsd(url):
    assert is_mpsd(exchange_at(url, 200))


@pytest.mark.parametrize("url", [
    "https://www.bing.com/",
    "https://rta.xboxlive.com/connect",
    "https://login.live.com/ppsecure/deviceaddcredential.srf",
    "http://127.0.0.1:8081/",
    "https://userpresence.xboxlive.com/users/me/devices/current/titles/current",
])
def test_other_hosts_and_paths_are_not_mpsd(url):
    assert not is_mpsd(exchange_at(url, 200))


def test_a_search_engine_post_gets_no_row_and_no_anomaly():
    """A bing.com `POST /` answered 204 was once counted as 204.get-session coverage."""
    result = classify(exchange_at("https://www.bing.com/", 204, "POST"))
    assert result is NOT_MPSD
    assert result.id is None and result.anomalies == ()
    assert result.meaning == "Not session-directory traffic: not judged by the status table."
    assert not result.conformant


def test_the_rta_websocket_handshake_is_not_an_unlisted_status():
    result = classify(exchange_at("https://rta.xboxlive.com/connect", 101, "GET",
                                  [("Upgrade", "websocket"), ("Connection", "Upgrade")]))
    assert result is NOT_MPSD
    assert "unlisted-status" not in anomaly_codes(result)


def test_another_host_without_a_response_is_not_mpsd_either():
    assert classify(exchange_at("https://vortex.data.microsoft.com/collect/v1", None)) \
        is NOT_MPSD


def test_mpsd_traffic_is_still_judged_on_a_local_host():
    """The stand-in answers on 127.0.0.1 with MPSD paths: the table applies."""
    unlisted = classify(exchange_at(f"http://127.0.0.1:8081{SESSION}", 418))
    assert anomaly_codes(unlisted) == ["unlisted-status"]
    assert classify(exchange_at(f"http://127.0.0.1:8081{SESSION}", None)) is NO_RESPONSE
    assert classify(exchange_at(f"https://sessiondirectory.xboxlive.com{SESSION}", None)) \
        is NO_RESPONSE


def test_not_mpsd_round_trips_through_a_record():
    from mpsdproxy import recording

    exchange = exchange_at("https://www.bing.com/", 204, "POST")
    record = recording.to_record(exchange, recording.Redactor(), classify(exchange))
    assert record["classification"] == NOT_MPSD.to_dict()
    assert classify(recording.to_exchange(record)) is NOT_MPSD
