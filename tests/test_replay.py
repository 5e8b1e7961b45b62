"""Server replay domain: option parsing, match keys, the offset index, consumption, near misses."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from mpsdproxy import classify
from mpsdproxy import faults
from mpsdproxy import recording
from mpsdproxy import replay
from mpsdproxy import resources

HOST = "https://sessiondirectory.xboxlive.com"
SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"{HOST}/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
AUTH = ("Authorization", "XBL3.0 x=alice;token")


def session_doc(change: int, mode: str = "ctf") -> dict[str, Any]:
    return {"constants": {"system": {"maxMembersCount": 8}, "custom": {}},
            "properties": {"system": {}, "custom": {"mode": mode}},
            "members": {}, "changeNumber": change}


def exchange(method: str, url: str, status: int | None, *, body: Any = None,
             headers: list[tuple[str, str]] | None = None, answer: Any = None,
             answer_headers: list[tuple[str, str]] | None = None,
             duration_ms: float | None = 12.5) -> dict[str, Any]:
    """A record as the recorder writes it (seq is stamped by the Writer)."""
    raw = body if isinstance(body, bytes) else (faults.encode_json(body) if body is not None
                                                 else b"")
    out = answer if isinstance(answer, bytes) else (faults.encode_json(answer)
                                                     if answer is not None else b"")
    req_headers = [AUTH, *(headers or [])]
    resp_headers = list(answer_headers or [])
    if answer is not None and not any(k.lower() == "content-type" for k, _ in resp_headers):
        resp_headers.insert(0, ("Content-Type", "application/json; charset=utf-8"))
    response = None
    if status is not None:
        response = {"status": status, "reason": "Whatever",
                    "headers": recording.Redactor().headers(resp_headers),
                    "body": recording.encode_body(out)}
    verdict = classify.classify(method, url, req_headers, status, resp_headers, out)
    return {
        "start": "2026-11-25T09:37:44.123456Z", "end": "2026-11-25T09:37:44.135956Z",
        "duration_ms": duration_ms, "client": "127.0.0.1:50412",
        "request": {"method": method, "url": url,
                    "headers": recording.Redactor().headers(req_headers),
                    "body": recording.encode_body(raw)},
        "response": response,
        "error": None if status is not None else "connection reset",
        "resource": resources.parse(url).to_dict(),
        "classification": verdict.to_dict(),
        "provenance": {"source": "forwarded"},
    }


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    with recording.Writer(path) as writer:
        for r in records:
            writer.write(r)
    return path


def live(method: str, url: str, body: Any = None,
         headers: list[tuple[str, str]] | None = None) -> replay.Request:
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None
                                                 else b"")
    return replay.Request(method, url, tuple([AUTH, *(headers or [])]), raw)


def key(request: replay.Request, options: replay.MatchOptions | None = None,
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


def _variant(**changes: Any) -> replay.Request:
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
def test_match_key_ignores(why: str, request_: replay.Request) -> None:
    assert key(request_) == key(_variant())
    assert key(request_).digest() == key(_variant()).digest()


@pytest.mark.parametrize("why,request_", DIFFERENT, ids=[w for w, _ in DIFFERENT])
def test_match_key_tells_apart(why: str, request_: replay.Request) -> None:
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
    recorded = replay.Request("GET", LOBBY, (("x-title-secret",
                                              recording.redact_value("s3cret")),))
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


# -- answers ---------------------------------------------------------------------------------


def test_reply_from_record_keeps_bytes_and_etag_drops_hop_by_hop() -> None:
    text = '{"a": 1,\n "b": [1, 2]}'  # not compact: kept as text, must come back byte for byte
    record = exchange("GET", LOBBY, 200, answer=text.encode(), answer_headers=[
        ("Content-Type", "application/json"), ("ETag", '"W/odd, but verbatim"'),
        ("Connection", "keep-alive, X-Hop"), ("Keep-Alive", "timeout=5"), ("X-Hop", "1"),
        ("Transfer-Encoding", "chunked"), ("Content-Length", "999"), ("X-Xbl-Debug", "a"),
        ("X-Xbl-Debug", "b"),
    ])
    reply = replay.reply_from_record(record)
    assert reply is not None
    assert reply.body == text.encode()
    assert reply.headers == [
        ("Content-Type", "application/json"), ("ETag", '"W/odd, but verbatim"'),
        ("X-Xbl-Debug", "a"), ("X-Xbl-Debug", "b"), ("Content-Length", str(len(text))),
    ]


@pytest.mark.parametrize("status", [204, 304])
def test_reply_without_body_has_no_content_length(status: int) -> None:
    record = exchange("GET", LOBBY, status, answer_headers=[("Content-Length", "0")])
    reply = replay.reply_from_record(record)
    assert reply is not None and reply.header("Content-Length") is None


def test_reply_of_an_exchange_without_response_is_none() -> None:
    assert replay.reply_from_record(exchange("GET", LOBBY, None)) is None


def test_binary_body_round_trips(tmp_path: Path) -> None:
    blob = bytes(range(256))
    path = write(tmp_path / "r.jsonl", [exchange("GET", LOBBY, 200, answer=blob)])
    player = replay.Player(replay.Index.load([path]))
    decision = player.decide(live("GET", LOBBY))
    assert isinstance(decision, replay.Serve)
    reply = player.answer(decision.entry)
    assert reply is not None and reply.body == blob


# -- index and consumption -------------------------------------------------------------------


@pytest.fixture
def polls(tmp_path: Path) -> Path:
    """Three identical GETs with three different answers, around other traffic."""
    return write(tmp_path / "polls.jsonl", [
        exchange("PUT", LOBBY, 201, body=BASE_BODY, answer=session_doc(1),
                 answer_headers=[("ETag", '"e1"')]),
        exchange("GET", LOBBY, 200, answer=session_doc(1), answer_headers=[("ETag", '"e1"')]),
        exchange("GET", LOBBY, 200, answer=session_doc(2), answer_headers=[("ETag", '"e2"')]),
        exchange("PUT", LOBBY, 200, body={"properties": {"custom": {"mode": "tdm"}}},
                 headers=[("If-Match", '"e2"')], answer=session_doc(3, "tdm"),
                 answer_headers=[("ETag", '"e3"')]),
        exchange("GET", LOBBY, 200, answer=session_doc(3, "tdm"),
                 answer_headers=[("ETag", '"e3"')]),
    ])


def _served(player: replay.Player, request: replay.Request) -> int:
    decision = player.decide(request)
    assert isinstance(decision, replay.Serve), decision
    return decision.seq


def test_identical_requests_get_recorded_answers_in_order(polls: Path) -> None:
    player = replay.Player(replay.Index.load([polls]))
    get = live("GET", LOBBY)
    assert [_served(player, get) for _ in range(3)] == [2, 3, 5]
    assert _served(player, live("PUT", LOBBY, BASE_BODY)) == 1
    assert player.remaining() == 1


def test_answers_are_the_recorded_ones(polls: Path) -> None:
    player = replay.Player(replay.Index.load([polls]))
    decision = player.decide(live("GET", LOBBY))
    assert isinstance(decision, replay.Serve)
    assert (decision.seq, decision.file) == (2, str(polls))
    reply = player.answer(decision.entry)
    assert reply == faults.Reply(200, "Whatever", [
        ("Content-Type", "application/json; charset=utf-8"), ("ETag", '"e1"'),
        ("Content-Length", str(len(faults.encode_json(session_doc(1))))),
    ], faults.encode_json(session_doc(1)))


def test_exhausted_repeat_last(polls: Path) -> None:
    player = replay.Player(replay.Index.load([polls]), exhausted="repeat-last")
    get = live("GET", LOBBY)
    for _ in range(3):
        player.decide(get)
    assert player.decide(get) == replay.Serve(4, 5, str(polls), repeat=True)
    assert player.decide(get) == replay.Serve(4, 5, str(polls), repeat=True)


@pytest.mark.parametrize("policy", ["error", "forward"])
def test_exhausted_error_and_forward(polls: Path, policy: str) -> None:
    player = replay.Player(replay.Index.load([polls]), exhausted=policy)
    get = live("GET", LOBBY)
    for _ in range(3):
        player.decide(get)
    decision = player.decide(get)
    assert decision == replay.Pass(policy, "exhausted", (
        f"all 3 recorded answers to GET {LOBBY} were served (the last is #5, {polls}:5); "
        f"mpsd_replay_exhausted={policy}"))


@pytest.mark.parametrize("policy", replay.UNMATCHED_CHOICES)
def test_unmatched_policy_holds_after_the_recording_is_used_up(polls: Path, policy: str) -> None:
    player = replay.Player(replay.Index.load([polls]), unmatched=policy)
    for request in [live("GET", LOBBY)] * 3 + [
        live("PUT", LOBBY, BASE_BODY),
        live("PUT", LOBBY, {"properties": {"custom": {"mode": "tdm"}}}, [("If-Match", '"e2"')]),
    ]:
        assert isinstance(player.decide(request), replay.Serve)
    assert player.remaining() == 0
    decision = player.decide(live("DELETE", LOBBY + "/members/me"))
    assert isinstance(decision, replay.Pass)
    assert (decision.action, decision.reason) == (policy, "unmatched")


@pytest.mark.parametrize("etag,served", [
    ('"e1"', True),  # handed out by a replayed answer (the recorded write carried "e2")
    ('"from-the-stand-in"', True),  # handed out by the stand-in for an unmatched request
    ('"never-seen"', False),  # the replay never handed it out
])
def test_precondition_with_a_replay_etag_matches(polls: Path, etag: str, served: bool) -> None:
    player = replay.Player(replay.Index.load([polls]))
    decision = player.decide(live("GET", LOBBY))
    assert isinstance(decision, replay.Serve)
    player.answer(decision.entry)  # the title now holds "e1"
    player.learned.add('"from-the-stand-in"')  # as Player.emulate does
    body = {"properties": {"custom": {"mode": "tdm"}}}
    decision = player.decide(live("PUT", LOBBY, body, [("If-Match", etag)]))
    if served:
        assert isinstance(decision, replay.Serve) and decision.seq == 4
    else:
        assert isinstance(decision, replay.Pass)
        assert 'If-Match ("never-seen", an ETag the replay never handed out here, an ETag ' \
               'of the replay recorded)' in decision.message


def test_answers_served_again_are_not_read_again(polls: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """repeat-last serves one entry over and over: its line is read and decoded once,
    and each serve still counts (ETag learnt, session seen) as the first did."""
    player = replay.Player(replay.Index.load([polls]))
    reads: list[int] = []
    read = player.index._read_line
    monkeypatch.setattr(player.index, "_read_line",
                        lambda entry: reads.append(entry) or read(entry))
    get = live("GET", LOBBY)
    served = [player.decide(get) for _ in range(6)]
    assert [d.seq for d in served if isinstance(d, replay.Serve)] == [2, 3, 5, 5, 5, 5]
    first = player.answer(served[2].entry)
    player.learned.clear()
    player._seen.clear()
    again = player.answer(served[3].entry)
    assert again == first and again is not None and again.header("ETag") == '"e3"'
    assert player.learned == {'"e3"'}  # learnt again from the kept answer
    assert player._seen  # and the session document counts as seen again
    assert reads == [4]


def test_kept_answers_stay_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay, "ANSWER_CACHE_ENTRIES", 3)
    monkeypatch.setattr(replay, "ANSWER_CACHE_BYTES", 10_000)
    path = write(tmp_path / "r.jsonl", [
        exchange("GET", f"{LOBBY}-{i}", 200, answer={"pad": "x" * (3000 if i < 4 else 20_000)})
        for i in range(6)
    ])
    player = replay.Player(replay.Index.load([path]))
    kept = player._answers
    for i in range(4):
        decision = player.decide(live("GET", f"{LOBBY}-{i}"))
        assert isinstance(decision, replay.Serve)
        player.answer(decision.entry)
        assert len(kept) <= 3 and kept.bytes <= 10_000
    assert list(kept) == [1, 2, 3]  # the least recently served went first
    player.answer(1)
    assert list(kept) == [2, 3, 1]
    decision = player.decide(live("GET", f"{LOBBY}-4"))  # larger than the whole budget
    assert isinstance(decision, replay.Serve)
    reply = player.answer(decision.entry)
    assert reply is not None and len(reply.body) > 20_000  # served, never kept
    assert list(kept) == [2, 3, 1]
    assert kept.bytes == 3 * len(faults.encode_json({"pad": "x" * 3000}))


def test_recent_keeps_within_entries_and_bytes() -> None:
    recent: replay.Recent[str] = replay.Recent(entries=3, budget=100)
    for entry in range(3):
        recent.put(entry, f"v{entry}", 30)
    assert recent.get(0) == "v0"  # 0 is now the most recent
    recent.put(3, "v3", 30)  # over 3 entries and 100 bytes: 1 goes
    assert list(recent) == [2, 0, 3] and recent.bytes == 90
    recent.put(2, "v2 again", 60)  # replaces, and 0 goes to fit
    assert list(recent) == [3, 2] and recent.bytes == 90
    recent.put(4, "huge", 101)  # never kept, keeps the rest
    assert recent.get(4) is None and list(recent) == [3, 2]
    recent.clear()
    assert len(recent) == 0 and recent.bytes == 0


@pytest.mark.parametrize("body", [
    {"json": {"b": 1, "a": [1.5, None, True, "é ☃ 😀", {"x": {}}]}},
    {"json": float("nan")},
    {"json": "text"},
    {"text": "not json"},
    {"base64": "AAEC/w=="},
    None,
])
def test_recorded_body_bytes_are_what_decode_body_gives(body: Any) -> None:
    reply = replay.reply_from_response({"status": 200, "body": body})
    assert reply is not None and reply.body == recording.decode_body(body)


def test_match_key_takes_the_first_of_repeated_headers() -> None:
    options = replay.MatchOptions(use_headers=("X-Title",))
    request_ = live("GET", LOBBY, headers=[("x-title", "a"), ("X-TITLE", "b"),
                                           ("if-match", '"e1"'), ("If-Match", '"e2"')])
    found = replay.match_key(request_, options, etags=set())
    assert found.headers == (("x-title", recording.redact_value("a")),)
    assert found.conditions == (("If-Match", '"e1"'),)


def test_several_files_chain_in_order(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [exchange("GET", LOBBY, 200, answer=session_doc(1))])
    b = write(tmp_path / "b.jsonl", [exchange("GET", LOBBY, 200, answer=session_doc(2))])
    player = replay.Player(replay.Index.load([a, b]))
    first, second = player.decide(live("GET", LOBBY)), player.decide(live("GET", LOBBY))
    assert isinstance(first, replay.Serve) and isinstance(second, replay.Serve)
    assert (first.file, second.file) == (str(a), str(b))


def test_rebind_keeps_what_was_served(polls: Path) -> None:
    player = replay.Player(replay.Index.load([polls]))
    get = live("GET", LOBBY)
    assert _served(player, get) == 2
    player.rebind(replay.Index.load([polls], replay.MatchOptions(ignore_host=True)))
    other_host = live("GET", LOBBY.replace(HOST, "http://127.0.0.1:8081"))
    assert [_served(player, other_host) for _ in range(2)] == [3, 5]


def test_rebind_refuses_other_files(polls: Path, tmp_path: Path) -> None:
    player = replay.Player(replay.Index.load([polls]))
    other = write(tmp_path / "o.jsonl", [exchange("GET", LOBBY, 200)])
    with pytest.raises(ValueError, match="has 1 exchanges, not 5"):
        player.rebind(replay.Index.load([other]))
    assert len(player.index) == 5  # unchanged


def test_unreadable_lines_are_reported_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "r.jsonl", [exchange("GET", LOBBY, 200)])
    with open(path, "ab") as f:
        f.write(b"{not json}\n")
        f.write(b'{"seq": 9}\n')
        f.write(b"\n")
        f.write(b'{"seq": 10, "requ')  # what a killed writer leaves
    index = replay.Index.load([path])
    assert len(index) == 1
    assert [(i.line, i.truncated) for i in index.issues] == [(2, False), (3, False), (5, True)]
    assert str(index.issues[1]) == f"{path}:3: missing 'request' with 'method' and 'url'"


def test_read_notices_a_rewritten_file(polls: Path) -> None:
    index = replay.Index.load([polls])
    polls.write_text(polls.read_text().replace('"seq":2', '"seq":22'))
    with pytest.raises(recording.RecordError, match=r"polls.jsonl:2: no longer holds record #2"):
        index.read(1)


def test_response_parses_only_what_it_can_tell_apart(tmp_path: Path) -> None:
    """Index.response is read(entry)["response"], whatever else names "response"."""
    records = [
        exchange("GET", LOBBY, 200, answer={"v": "é 😀"}, answer_headers=[("ETag", '"e1"')]),
        exchange("PUT", LOBBY, 200, body={"response": {"status": 1}}, answer={"v": 2}),
        exchange("GET", LOBBY, None),
        exchange("GET", LOBBY, 200, answer={"response": "x"}),
        exchange("GET", LOBBY + '?q="response":', 200, answer=b"plain"),
    ]
    path = write(tmp_path / "r.jsonl", records)
    no_response = {k: v for k, v in records[1].items() if k != "response"}
    spaced = {**records[0], "seq": 7}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"seq": 6, **no_response}) + "\n")  # only the body names it
        f.write(json.dumps(spaced) + "\n")  # not compact: ", " and ": "
    index = replay.Index.load([path])
    assert len(index) == 7 and not index.issues
    for entry in range(len(index)):
        assert index.response(entry) == index.read(entry).get("response"), entry
    assert index.response(5) is None and index.response(6)["status"] == 200


def test_offsets_survive_multibyte_text(tmp_path: Path) -> None:
    path = write(tmp_path / "r.jsonl", [
        exchange("PUT", LOBBY, 200, body={"name": "Zoë ☃ 😀"}, answer={"v": "é" * 50}),
        exchange("GET", LOBBY, 200, answer={"v": "last"}),
    ])
    player = replay.Player(replay.Index.load([path]))
    decision = player.decide(live("GET", LOBBY))
    assert isinstance(decision, replay.Serve)
    reply = player.answer(decision.entry)
    assert reply is not None and reply.body == b'{"v":"last"}'


# -- near misses -----------------------------------------------------------------------------


@pytest.mark.parametrize("request_,expected", [
    (live("PUT", LOBBY, {"properties": {"custom": {"mode": "ffa"}}}, [("If-Match", '"e2"')]),
     "differs in: body (properties.custom.mode: \"ffa\" here, \"tdm\" recorded)"),
    (live("PUT", LOBBY, {"properties": {"custom": {"mode": "tdm"}, "x": 1}},
          [("If-Match", '"e2"')]),
     "differs in: body (properties.x only here)"),
    (live("GET", LOBBY + "?take=3"), "differs in: query (take only here)"),
    (live("DELETE", LOBBY), "differs in: method (DELETE here, GET recorded)"),
    (live("PUT", LOBBY, {"properties": {"custom": {"mode": "tdm"}}}),
     "differs in: If-Match (none here, an ETag of the replay recorded)"),
])
def test_near_miss_names_the_closest_request_and_the_difference(
        polls: Path, request_: replay.Request, expected: str) -> None:
    player = replay.Player(replay.Index.load([polls]))
    decision = player.decide(request_)
    assert isinstance(decision, replay.Pass)
    assert decision.message.endswith(expected), decision.message


def test_near_miss_full_text(polls: Path) -> None:
    player = replay.Player(replay.Index.load([polls]), unmatched="error")
    request = live("PUT", LOBBY, {"properties": {"custom": {"mode": "ffa"}}},
                   [("If-Match", '"e2"')])
    decision = player.decide(request)
    assert decision == replay.Pass("error", "unmatched", (
        f"no recorded answer for PUT {LOBBY} (mpsd_replay_unmatched=error); closest recorded "
        f"request is #4 ({polls}:4) PUT {LOBBY}, which differs in: body "
        '(properties.custom.mode: "ffa" here, "tdm" recorded)'))


def test_near_miss_says_already_served(polls: Path) -> None:
    player = replay.Player(replay.Index.load([polls]))
    body = {"properties": {"custom": {"mode": "tdm"}}}
    assert _served(player, live("PUT", LOBBY, body, [("If-Match", '"e2"')])) == 4
    decision = player.decide(live("PUT", LOBBY, {**body, "x": 1}, [("If-Match", '"e2"')]))
    assert isinstance(decision, replay.Pass)
    assert f"#4 ({polls}:4, already served)" in decision.message


def test_near_miss_on_an_unrecorded_path_looks_at_siblings(polls: Path) -> None:
    player = replay.Player(replay.Index.load([polls]))
    decision = player.decide(live("GET", LOBBY.replace("lobby-1", "lobby-9")))
    assert isinstance(decision, replay.Pass)
    assert "#2" in decision.message
    assert "path (/serviceconfigs" in decision.message and "lobby-9 here" in decision.message


def test_empty_recording_misses_everything(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    player = replay.Player(replay.Index.load([path]), unmatched="forward")
    assert player.decide(live("GET", LOBBY)) == replay.Pass(
        "forward", "unmatched",
        f"no recorded answer for GET {LOBBY} (mpsd_replay_unmatched=forward); "
        "the recording holds no requests")


def test_error_reply_is_not_an_mpsd_answer() -> None:
    reply = replay.error_reply(replay.Pass("error", "unmatched", "no recorded answer"))
    assert (reply.status, reply.reason) == (502, "Bad Gateway")
    assert reply.body == b"mpsdproxy replay: no recorded answer\n"
    assert reply.header("X-Mpsdproxy-Replay") == "unmatched"
    assert reply.header("Content-Length") == str(len(reply.body))


# -- the stand-in takes over ------------------------------------------------------------------


class StandIn:
    """Keeps what it was seeded with and answers every request with 200 and a new ETag."""

    def __init__(self) -> None:
        self.seeds: list[tuple[str, dict[str, Any], str | None]] = []
        self.handled: list[tuple[str, str, bytes]] = []

    def seed(self, path: str, document: dict[str, Any], etag: str | None) -> None:
        self.seeds.append((path, document, etag))

    def handle(self, method: str, target: str, headers: list[tuple[str, str]],
               body: bytes) -> faults.Reply:
        self.handled.append((method, target, body))
        return faults.Reply(200, "OK", [("ETag", f'"s{len(self.handled)}"')], b"{}")


def test_emulate_seeds_what_the_title_has_seen(polls: Path) -> None:
    player = replay.Player(replay.Index.load([polls]), unmatched="emulate")
    stand_in = StandIn()
    path = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
    # nothing served yet: the recording's last document of the session
    reply = player.emulate(live("GET", LOBBY + "/members/me?x=1"), stand_in)
    assert stand_in.seeds == [(path, session_doc(3, "tdm"), '"e3"')]
    assert stand_in.handled == [("GET", f"{path}/members/me?x=1", b"")]
    assert player.known_etag(reply.header("ETag") or "")
    # the replay served changeNumber 1: the stand-in goes back to it
    decision = player.decide(live("GET", LOBBY))
    assert isinstance(decision, replay.Serve)
    player.answer(decision.entry)
    player.emulate(live("DELETE", LOBBY), stand_in)
    assert stand_in.seeds[-1] == (path, session_doc(1), '"e1"')
    # nothing new served: no new seed
    player.emulate(live("DELETE", LOBBY), stand_in)
    assert len(stand_in.seeds) == 2


# -- load ------------------------------------------------------------------------------------


def test_index_of_20000_exchanges_stays_small(tmp_path: Path) -> None:
    """The index holds offsets, not records: its memory is a small fraction of the file."""
    path = tmp_path / "big.jsonl"
    template = json.dumps(exchange(
        "PUT", LOBBY, 200, body={"properties": {"custom": {"mode": "MODE"}}},
        answer=session_doc(1, "MODE"),
        answer_headers=[("ETag", '"ETAG"'), ("X-Xbl-Debug", "x" * 400)]),
        separators=(",", ":"))
    with open(path, "w", encoding="utf-8") as f:
        for i in range(20_000):
            line = template.replace("lobby-1", f"lobby-{i % 500}").replace("MODE", f"m{i}")
            f.write(line.replace("ETAG", f"etag-{i}").replace('{"start"', f'{{"seq":{i + 1},'
                                                              '"start"', 1) + "\n")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        index = replay.Index.load([path])
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(index) == 20_000 and not index.issues
    assert len(index.sessions) == 500
    # mitmproxy's own server replay holds ~8 KB per flow (PERF.md); the index ~0.2 KB
    assert used / len(index) < 256, used / len(index)
    assert used < size / 8, (used, size)
    player = replay.Player(index)
    request = live("PUT", LOBBY.replace("lobby-1", "lobby-123"),
                   {"properties": {"custom": {"mode": "m19623"}}})
    decision = player.decide(request)
    assert isinstance(decision, replay.Serve) and decision.seq == 19624
    reply = player.answer(decision.entry)
    assert reply is not None and reply.header("ETag") == '"etag-19623"'
    assert json.loads(reply.body)["properties"]["custom"]["mode"] == "m19623"
    index.close()
