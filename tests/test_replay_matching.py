"""Replay matching: option parsing, match keys, ignored body keys, preconditions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import replay

HOST = "https://sessiondirectory.xboxlive.com"
SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"{HOST}/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
AUTH = ("Authorization", "XBL3.0 x=alice;token")


def live(method: str, url: str, body: Any = None,
         headers: list[tuple[str, str]] | None = None) -> model.Request:
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None
                                                 else b"")
    return model.Request(method, url, [AUTH, *(headers or [])], raw)


def key(request: model.Request, options: replay.MatchOptions | None = None,
        etags: set[str] | None = None) -> replay.MatchKey:
    return replay.match_key(request, options or replay.MatchOptions(), etags)


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text,parts", [
    ("correlationId", ("correlationId",)),
    (" members.*.properties.system.connection ", ("members", "*", "properties", "system",
                                                  "connection")),
    ("a.b", ("a", "b")),
])
def test_parse_key_pattern(text: str, parts: tuple[str, ...]) -> None:
    assert replay.parse_key_pattern(text).parts == parts


@pytest.mark.parametrize("text,error", [
    ("", "not empty"),
    ("a..b", "empty segment"),
    (".a", "empty segment"),
    ("*", "lone"),
])
def test_parse_key_pattern_errors(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        replay.parse_key_pattern(text)


@pytest.mark.parametrize("text,error", [
    ("Authorization", "Authorization is redacted in every recording and is never matched on"),
    ("signature", "redacted"),
    ("", "should be a header name"),
    ("X Y", "should be a header name"),
])
def test_parse_header_name_errors(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        replay.parse_header_name(text)


def test_parse_header_name() -> None:
    assert replay.parse_header_name(" X-Xbl-Contract-Version ") == "x-xbl-contract-version"


# -- match keys ------------------------------------------------------------------------------

BASE_BODY = {"members": {"me": {"constants": {"system": {"xuid": "1001"}},
                                "properties": {"system": {"active": True,
                                                          "connection": "conn-a"}}}},
             "properties": {"custom": {"mode": "ctf"}}}


def _variant(**changes: Any) -> model.Request:
    method = changes.get("method", "PUT")
    url = changes.get("url", LOBBY + "?take=10&keyword=x")
    body = changes.get("body", BASE_BODY)
    headers = changes.get("headers", [])
    return live(method, url, body, headers)


SAME = [
    ("path case", _variant(url=LOBBY.replace("sessiontemplates/LobbySession",
                                             "sessionTemplates/lobbysession")
                           + "?take=10&keyword=x")),
    ("host case", _variant(url=LOBBY.replace("sessiondirectory", "SessionDirectory")
                           + "?take=10&keyword=x")),
    ("default port spelled out", _variant(url=LOBBY.replace(".com/", ".com:443/")
                                          + "?take=10&keyword=x")),
    ("query order", _variant(url=LOBBY + "?keyword=x&take=10")),
    ("nonce parameter", _variant(url=LOBBY + "?take=10&keyword=x&_=171234&nonce=9")),
    ("JSON key order and whitespace",
     _variant(body=json.dumps({"properties": {"custom": {"mode": "ctf"}},
                               "members": BASE_BODY["members"]}, indent=2).encode())),
    ("correlation id in the body",
     _variant(body={**BASE_BODY, "correlationId": "c0ffee"})),
    ("per-run RTA connection id",
     _variant(body={**BASE_BODY, "members": {"me": {
         "constants": {"system": {"xuid": "1001"}},
         "properties": {"system": {"active": True, "connection": "conn-b"}}}}})),
    ("another token", _variant(headers=[("Authorization", "XBL3.0 x=alice;other")])),
    ("a signature", _variant(headers=[("Signature", "AAAAAQ==")])),
    ("a date and a correlation header",
     _variant(headers=[("Date", "Tue, 01 Dec 2026 10:00:00 GMT"),
                       ("X-XblCorrelationId", "abc")])),
]

DIFFERENT = [
    ("method", _variant(method="POST")),
    ("path", _variant(url=LOBBY + "2?take=10&keyword=x")),
    ("host", _variant(url=LOBBY.replace("sessiondirectory", "momatch") + "?take=10&keyword=x")),
    ("port", _variant(url=LOBBY.replace(".com/", ".com:8443/") + "?take=10&keyword=x")),
    ("query value", _variant(url=LOBBY + "?take=11&keyword=x")),
    ("query parameter missing", _variant(url=LOBBY + "?take=10")),
    ("body value", _variant(body={**BASE_BODY, "properties": {"custom": {"mode": "tdm"}}})),
    ("body key", _variant(body={**BASE_BODY, "servers": {}})),
    ("no body", _variant(body=None)),
    ("a precondition", _variant(headers=[("If-Match", "*")])),
]


@pytest.mark.parametrize("why,request_", SAME, ids=[w for w, _ in SAME])
def test_match_key_ignores(why: str, request_: model.Request) -> None:
    assert key(request_) == key(_variant())
    assert key(request_).digest() == key(_variant()).digest()


@pytest.mark.parametrize("why,request_", DIFFERENT, ids=[w for w, _ in DIFFERENT])
def test_match_key_tells_apart(why: str, request_: model.Request) -> None:
    assert key(request_).digest() != key(_variant()).digest()


def test_ignore_host_ignores_host_and_port() -> None:
    options = replay.MatchOptions(ignore_host=True)
    other = _variant(url="http://127.0.0.1:8081" + LOBBY[len(HOST):] + "?take=10&keyword=x")
    assert key(other, options) == key(_variant(), options)


def test_use_headers_match_values_never_print_them() -> None:
    options = replay.MatchOptions(use_headers=("x-xbl-contract-version",))
    a = _variant(headers=[("x-xbl-contract-version", "107")])
    b = _variant(headers=[("X-Xbl-Contract-Version", "107")])
    c = _variant(headers=[("x-xbl-contract-version", "105")])
    assert key(a, options) == key(b, options)
    assert key(a, options) != key(c, options)
    assert "107" not in repr(key(a, options).headers)  # compared as redaction hashes


def test_use_headers_compares_against_redacted_recording() -> None:
    options = replay.MatchOptions(use_headers=("x-title-secret",))
    recorded = model.Request("GET", LOBBY, [("x-title-secret",
                                             recording.redact_value("s3cret"))])
    assert key(live("GET", LOBBY, headers=[("x-title-secret", "s3cret")]), options) == \
        key(recorded, options)


@pytest.mark.parametrize("live_value,recorded_value,same", [
    ('"e2"', '"e1"', True),  # an ETag the replay handed out stands for the recorded one
    ('"e1"', '"e1"', True),
    ('"stale-from-elsewhere"', '"e1"', False),  # never handed out by the replay
    ("*", '"e1"', False),
    ("*", "*", True),
    ('"e1"', "*", False),
])
def test_preconditions_treat_replay_etags_as_recorded(live_value: str, recorded_value: str,
                                                      same: bool) -> None:
    known = {'"e1"', '"e2"'}
    here = key(live("PUT", LOBBY, {}, [("If-Match", live_value)]), etags=known)
    there = key(live("PUT", LOBBY, {}, [("If-Match", recorded_value)]))
    assert (here == there) is same


@pytest.mark.parametrize("pattern,document,expected", [
    ("correlationId", {"a": {"correlationId": 1, "b": 2}, "correlationId": 3}, {"a": {"b": 2}}),
    ("a.b", {"a": {"b": 1, "c": 2}, "b": 3}, {"a": {"c": 2}, "b": 3}),
    ("a.*.id", {"a": {"x": {"id": 1, "k": 2}, "y": {"id": 3}}, "id": 4},
     {"a": {"x": {"k": 2}, "y": {}}, "id": 4}),
    ("a.*.id", {"a": [{"id": 1, "k": 2}]}, {"a": [{"k": 2}]}),
    ("owners.xuids.*", {"owners": {"xuids": ["1", "2"], "n": 2}}, {"owners": {"xuids": [],
                                                                           "n": 2}}),
    ("a.1", {"a": ["x", "y", "z"]}, {"a": ["x", "z"]}),
    ("a.x.id", {"a": {"x": {"id": 1}, "": {"id": 2}}, "": 3}, {"a": {"x": {}, "": {"id": 2}},
                                                             "": 3}),
])
def test_ignore_payload_patterns(pattern: str, document: Any, expected: Any) -> None:
    options = replay.MatchOptions(ignore_payload=(replay.parse_key_pattern(pattern),))
    before = json.dumps(document)
    assert options.strip(document) == expected
    assert json.dumps(document) == before  # the parsed body itself is left alone
    assert options.strip.canonical(document) == json.dumps(expected, sort_keys=True,
                                                           separators=(",", ":"))


def test_wildcard_and_literal_branches_combine() -> None:
    patterns = tuple(replay.parse_key_pattern(p) for p in ("m.*.a", "m.me.b", "m.me"))
    options = replay.MatchOptions(ignore_payload=patterns)
    assert options.strip({"m": {"me": 1, "you": {"a": 1, "b": 2}}}) == {"m": {"you": {"b": 2}}}
    patterns = tuple(replay.parse_key_pattern(p) for p in ("m.*.a", "m.me.b"))
    options = replay.MatchOptions(ignore_payload=patterns)
    assert options.strip({"m": {"me": {"a": 1, "b": 2, "c": 3}}}) == {"m": {"me": {"c": 3}}}


def test_match_key_takes_the_first_of_repeated_headers() -> None:
    options = replay.MatchOptions(use_headers=("X-Title",))
    request_ = live("GET", LOBBY, headers=[("x-title", "a"), ("X-TITLE", "b"),
                                           ("if-match", '"e1"'), ("If-Match", '"e2"')])
    found = replay.match_key(request_, options, etags=set())
    assert found.headers == (("x-title", recording.redact_value("a")),)
    assert found.conditions == (("If-Match", '"e1"'),)


def test_recorded_requests_key_as_their_requests() -> None:
    """The index keys a record's request half straight from the record: the same key
    `match_key` gives for the Request it stands for, whatever the body kept as."""
    options = replay.MatchOptions()
    for body in [BASE_BODY, b'{"a": 1,\n "b": 2}', b"\xff\x00", b"", b"[" * 3000]:
        request = _variant(body=body, headers=[("If-Match", '"e1"')])
        part = {"method": request.method, "url": request.url,
                "headers": request.headers.pairs(), "body": recording.encode_body(request.body)}
        assert replay.recorded(part, options).key == key(request), body
