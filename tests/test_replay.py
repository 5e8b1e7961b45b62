"""Server replay domain: option parsing, match keys, the offset index, consumption, near misses,
the hand-over to the stand-in, and records refused at load."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from mpsdproxy import classify
from mpsdproxy import faults
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import replay

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
    resp_headers = list(answer_headers or [])
    if answer is not None and not any(k.lower() == "content-type" for k, _ in resp_headers):
        resp_headers.insert(0, ("Content-Type", "application/json; charset=utf-8"))
    request = model.Request(method, url, [AUTH, *(headers or [])], raw)
    response = model.Response(status, "Whatever", resp_headers, out) if status else None
    start = 1_795_599_464.123456
    end = start + duration_ms / 1000 if duration_ms is not None else None
    done = model.Exchange(request, response, None if response else "connection reset",
                          start=start, end=end, client="127.0.0.1:50412")
    return recording.to_record(done, recording.Redactor(), classify.classify(done))


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    with recording.Writer(path) as writer:
        for r in records:
            writer.write(r)
    return path


def live(method: str, url: str, body: Any = None,
         headers: list[tuple[str, str]] | None = None) -> model.Request:
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None
                                                 else b"")
    return model.Request(method, url, [AUTH, *(headers or [])], raw)


BASE_BODY = {"members": {"me": {"constants": {"system": {"xuid": "1001"}},
                                "properties": {"system": {"active": True,
                                                          "connection": "conn-a"}}}},
             "properties": {"custom": {"mode": "ctf"}}}


# -- answers ---------------------------------------------------------------------------------


def test_reply_from_record_keeps_bytes_and_etag_drops_hop_by_hop() -> None:
    text = '{"a": 1,\n "b": [1, 2]}'  # not compact: kept as text, must come back byte for byte
    record = exchange("GET", LOBBY, 200, answer=text.encode(), answer_headers=[
        ("Content-Type", "application/json"), ("ETag", '"W/odd, but verbatim"'),
        ("Connection", "keep-alive, X-Hop"), ("Keep-Alive", "timeout=5"), ("X-Hop", "1"),
        ("Transfer-Encoding", "chunked"), ("Content-Length", "999"), ("X-Xbl-Debug", "a"),
        ("X-Xbl-Debug", "b"),
    ])
    reply = replay.response_of(record["response"])
    assert reply is not None
    assert reply.body == text.encode()
    assert list(reply.headers) == [
        ("Content-Type", "application/json"), ("ETag", '"W/odd, but verbatim"'),
        ("X-Xbl-Debug", "a"), ("X-Xbl-Debug", "b"), ("Content-Length", str(len(text))),
    ]


@pytest.mark.parametrize("status", [204, 304])
def test_reply_without_body_has_no_content_length(status: int) -> None:
    record = exchange("GET", LOBBY, status, answer_headers=[("Content-Length", "0")])
    reply = replay.response_of(record["response"])
    assert reply is not None and reply.header("Content-Length") is None


def test_reply_of_an_exchange_without_response_is_none() -> None:
    assert replay.response_of(exchange("GET", LOBBY, None)["response"]) is None


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


def _served(player: replay.Player, request: model.Request) -> int:
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
    assert reply == model.Response(200, "Whatever", [
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
        f"all 3 recorded answers to GET {LOBBY} were served (the last is #5, {polls}:6); "
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
    player.learn('"from-the-stand-in"')  # as the replayer does once the stand-in answered
    body = {"properties": {"custom": {"mode": "tdm"}}}
    decision = player.decide(live("PUT", LOBBY, body, [("If-Match", etag)]))
    if served:
        assert isinstance(decision, replay.Serve) and decision.seq == 4
    else:
        assert isinstance(decision, replay.Pass)
        assert 'If-Match ("never-seen", an ETag the replay never handed out here, an ETag ' \
               'of the replay recorded)' in decision.message


def test_answers_served_again_are_kept_and_still_count(polls: Path) -> None:
    """repeat-last serves one entry over and over: its decoded answer is kept (the same
    immutable Response), and each serve still counts (ETag learnt, session seen) as the
    first did."""
    player = replay.Player(replay.Index.load([polls]))
    get = live("GET", LOBBY)
    served = [player.decide(get) for _ in range(6)]
    assert [d.seq for d in served if isinstance(d, replay.Serve)] == [2, 3, 5, 5, 5, 5]
    first = player.answer(served[2].entry)
    assert player.handoff()[0].document == session_doc(3, "tdm")  # the title saw #5
    player.answer(served[0].entry)  # ... then #2 again
    assert player.handoff()[0].document == session_doc(1)
    again = player.answer(served[3].entry)  # ... then #5 again
    assert again is first and again is not None and again.header("ETag") == '"e3"'
    assert player.known_etag('"e3"')
    (seed,) = player.handoff()  # the kept answer's document counts as seen again
    assert (seed.document, seed.etag) == (session_doc(3, "tdm"), '"e3"')


def test_kept_answers_stay_bounded(tmp_path: Path) -> None:
    path = write(tmp_path / "r.jsonl", [
        exchange("GET", f"{LOBBY}-{i}", 200, answer={"pad": "x" * (3000 if i < 4 else 20_000)})
        for i in range(6)
    ])
    player = replay.Player(replay.Index.load([path]), cache_entries=3, cache_bytes=10_000)
    entries = []
    for i in range(5):
        decision = player.decide(live("GET", f"{LOBBY}-{i}"))
        assert isinstance(decision, replay.Serve)
        entries.append(decision.entry)
    answers = [player.answer(entry) for entry in entries]
    assert answers[4] is not None and len(answers[4].body) > 20_000  # served, never kept
    assert player.answer(entries[4]) is not answers[4]
    assert [player.answer(e) is a for e, a in zip(entries[1:4], answers[1:4], strict=True)] \
        == [True, True, True]  # the three last kept
    again = player.answer(entries[0])  # the least recently served went first
    assert again is not answers[0] and again == answers[0]


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
    reply = replay.response_of({"status": 200, "body": body})
    assert reply is not None and reply.body == recording.decode_body(body)


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
    assert [(i.line, i.truncated) for i in index.issues] == [(3, False), (4, False), (6, True)]
    assert str(index.issues[1]) == f"{path}:4: missing 'request' with 'method' and 'url'"


def test_read_notices_a_rewritten_file(polls: Path) -> None:
    index = replay.Index.load([polls])
    polls.write_text(polls.read_text().replace('"seq":2', '"seq":22'))
    with pytest.raises(recording.RecordError, match=r"polls.jsonl:3: no longer holds record #2"):
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
        polls: Path, request_: model.Request, expected: str) -> None:
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
        f"request is #4 ({polls}:5) PUT {LOBBY}, which differs in: body "
        '(properties.custom.mode: "ffa" here, "tdm" recorded)'))


def test_near_miss_says_already_served(polls: Path) -> None:
    player = replay.Player(replay.Index.load([polls]))
    body = {"properties": {"custom": {"mode": "tdm"}}}
    assert _served(player, live("PUT", LOBBY, body, [("If-Match", '"e2"')])) == 4
    decision = player.decide(live("PUT", LOBBY, {**body, "x": 1}, [("If-Match", '"e2"')]))
    assert isinstance(decision, replay.Pass)
    assert f"#4 ({polls}:5, already served)" in decision.message


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
    reply = replay.error_response(replay.Pass("error", "unmatched", "no recorded answer"))
    assert (reply.status, reply.reason) == (502, "Bad Gateway")
    assert reply.body == b"mpsdproxy replay: no recorded answer\n"
    assert reply.header("X-Mpsdproxy-Replay") == "unmatched"
    assert reply.header("Content-Length") == str(len(reply.body))


# -- the hand-over to the stand-in -----------------------------------------------------------


def test_handoff_seeds_what_the_title_has_seen(polls: Path) -> None:
    player = replay.Player(replay.Index.load([polls]), unmatched="emulate")
    path = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
    # nothing served yet: the recording's last document of the session
    assert player.handoff() == [replay.Seed(path, session_doc(3, "tdm"), '"e3"')]
    assert player.handoff() == []  # handed over already
    # the replay served changeNumber 1: the stand-in goes back to it
    decision = player.decide(live("GET", LOBBY))
    assert isinstance(decision, replay.Serve)
    player.answer(decision.entry)
    assert player.handoff() == [replay.Seed(path, session_doc(1), '"e1"')]
    assert player.handoff() == []
    player.forget_handoffs()  # a fresh stand-in: everything again
    assert player.handoff() == [replay.Seed(path, session_doc(1), '"e1"')]


def test_handoff_mark_is_plain_data(polls: Path) -> None:
    player = replay.Player(replay.Index.load([polls]), unmatched="emulate")
    decision = player.decide(live("DELETE", LOBBY))
    assert isinstance(decision, replay.Pass)
    mark = replay.handoff_mark(decision, player.handoff())
    assert mark["reason"] == "unmatched" and mark["note"] == decision.message
    assert json.loads(json.dumps(mark)) == mark
    (seed,) = mark["seeds"]
    assert seed[2] == '"e3"'


# -- records no wire could carry --------------------------------------------------------------


@pytest.mark.parametrize("change,problem", [
    (lambda r: r["response"]["headers"].append(["X-A", "a\r\nSet-Cookie: x=1"]), "CR, LF"),
    (lambda r: r["response"].update(status=0), "status should be an integer in 100-599"),
    (lambda r: r["response"].update(status=99999), "not 99999"),
    (lambda r: r["response"].update(reason="OK\r\n\r\n<html>"), "reason holds CR, LF"),
    (lambda r: r["request"]["headers"].append(["X-B", "b\nc"]), "CR, LF"),
])
def test_records_no_wire_could_carry_are_issues(tmp_path: Path, change: Any,
                                                problem: str) -> None:
    good = exchange("GET", LOBBY, 200, answer=session_doc(1))
    bad = exchange("GET", LOBBY + "/members/me", 200, answer={"a": 1})
    change(bad)
    path = write(tmp_path / "bad.jsonl", [good, bad])
    index = replay.Index.load([path])
    assert len(index) == 1
    (issue,) = index.issues
    assert (issue.line, issue.truncated) == (3, False)  # after the header line and #1
    assert str(issue).startswith(f"{path}:3: ") and problem in str(issue), str(issue)


def test_header_line_of_a_newer_format_is_an_issue(tmp_path: Path) -> None:
    path = tmp_path / "new.jsonl"
    path.write_text('{"format": "mpsdproxy-recording", "version": 99}\n')
    (issue,) = replay.Index.load([path]).issues
    assert str(issue) == f"{path}:1: recording format version 99: this mpsdproxy reads " \
                         "versions up to 2"


def test_a_too_deep_body_still_matches(tmp_path: Path) -> None:
    """A body nested deeper than a walk can go is compared as its bytes."""
    deep = b"[" * 5000 + b"]" * 5000
    path = write(tmp_path / "r.jsonl", [exchange("PUT", LOBBY, 200, body=deep, answer={"v": 1})])
    player = replay.Player(replay.Index.load([path]))
    decision = player.decide(live("PUT", LOBBY, deep))
    assert isinstance(decision, replay.Serve) and decision.seq == 1


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
