"""RTA messages in recordings: the decoded `"rta"` field of a websocket record, and `rta_of`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mpsdproxy import recording
from mpsdproxy import rta
from mpsdproxy.recording import messages as ws

RTA = "wss://rta.xboxlive.com/connect"
STANDIN = "ws://127.0.0.1:8123/connect"
SCID = "00000000-0000-4000-8000-00000000abcd"
LOBBY = f"{SCID}~LobbySession~Lobby-1"
CONNECTION = "00000000-0000-4000-8000-0000000c0001"


def record(url: str, direction: str, text: str | bytes, opcode: str = "text",
           redactor: Any = None) -> dict[str, Any]:
    payload = text.encode() if isinstance(text, str) else text
    message = ws.WebsocketMessage(url, direction, opcode, payload, start=1_800_000_000.5,
                                  client="10.0.0.5:50412")
    return {"seq": 7, **ws.to_record(message, redactor)}


def tap(number: int | None) -> rta.Tap:
    return rta.Tap(LOBBY, number, "branch-1", "sub-1", "2027-01-15T08:00:00Z")


@pytest.mark.parametrize(("direction", "text", "expected"), [
    ("client", rta.subscribe_message(1),
     {"type": "subscribe", "sequence": 1, "uri": rta.CONNECTIONS_URI}),
    ("server", rta.subscribe_result_message(1, 0, 3, {"ConnectionId": CONNECTION}),
     {"type": "subscribe", "sequence": 1, "status": 0, "subscription_id": 3,
      "connection_id": CONNECTION}),
    ("server", rta.subscribe_result_message(2, rta.Status.THROTTLED, 4),
     {"type": "subscribe", "sequence": 2, "status": 1001, "subscription_id": 4}),
    ("client", rta.unsubscribe_message(5, 3),
     {"type": "unsubscribe", "sequence": 5, "subscription_id": 3}),
    ("server", rta.unsubscribe_result_message(5, 0),
     {"type": "unsubscribe", "sequence": 5, "status": 0}),
    ("server", rta.resync_message(), {"type": "resync"}),
    ("server", rta.tap_message(3, [tap(2), tap(None)], "ncid-1"),
     {"type": "event", "subscription_id": 3,
      "taps": [{"session": LOBBY.lower(), "changeNumber": 2, "branch": "branch-1"},
               {"session": LOBBY.lower(), "changeNumber": None, "branch": "branch-1"}]}),
])
def test_each_rta_message_is_recorded_decoded(direction: str, text: str,
                                              expected: dict[str, Any]) -> None:
    made = record(RTA, direction, text)
    assert made["rta"] == expected
    assert made["payload"] == {"text": text}  # the frame itself stays as it came
    assert ws.check_message(made) is None
    back = ws.rta_of(json.loads(json.dumps(made)))
    decoded = rta.decode(text, from_client=direction == "client")
    assert _fields(back) == _fields(decoded)
    assert back is not None and decoded is not None
    assert back.connection_id == decoded.connection_id
    assert [(t.session, t.change_number) for t in back.taps] == [
        (t.session, t.change_number) for t in decoded.taps]


def _fields(message: rta.Message | None) -> dict[str, Any]:
    assert message is not None
    return {"type": message.type, "sequence": message.sequence, "uri": message.uri,
            "status": message.status, "subscription_id": message.subscription_id}


def test_rta_of_gives_back_what_readers_need() -> None:
    result = ws.rta_of(record(RTA, "server", rta.subscribe_result_message(
        1, 0, 0, {"ConnectionId": CONNECTION})))
    assert result is not None and result.connection_id == CONNECTION
    event = ws.rta_of(record(RTA, "server", rta.tap_message(0, [tap(4)], "ncid-2")))
    assert event is not None and event.type is rta.Type.EVENT
    assert [(t.session, t.change_number, t.branch) for t in event.taps] == [
        (LOBBY.lower(), 4, "branch-1")]


def test_a_record_without_the_field_is_decoded_from_its_payload() -> None:
    old = record(RTA, "server", rta.tap_message(0, [tap(9)], "ncid-3"))
    del old["rta"]  # as a recording made before the field existed holds it
    event = ws.rta_of(old)
    assert event is not None and [t.change_number for t in event.taps] == [9]
    assert event.taps[0].session == LOBBY.lower()


def test_the_stand_in_connect_path_counts_as_rta_and_other_frames_do_not() -> None:
    assert record(STANDIN, "client", rta.subscribe_message(1))["rta"]["type"] == "subscribe"
    chat = record("wss://chat.example.test/socket", "client", rta.subscribe_message(1))
    assert "rta" not in chat and ws.rta_of(chat) is None
    binary = record(RTA, "server", b"\x00\x01", opcode="binary")
    assert "rta" not in binary and ws.rta_of(binary) is None
    not_rta = record(RTA, "server", '{"hello": "world"}')
    assert "rta" not in not_rta and ws.rta_of(not_rta) is None
    assert ws.rta_of({"seq": 1, "request": {"method": "GET", "url": RTA}}) is None


def test_nul_padding_after_the_json_is_tolerated() -> None:
    padded = record(RTA, "client", rta.subscribe_message(0, "https://example.test/x") + "\0\0\0")
    assert padded["rta"] == {"type": "subscribe", "sequence": 0,
                             "uri": "https://example.test/x"}


def test_a_recording_holds_the_field_and_reads_it_back(tmp_path: Path) -> None:
    path = tmp_path / "rta.jsonl"
    frames = [("client", rta.subscribe_message(1)),
              ("server", rta.subscribe_result_message(1, 0, 0, {"ConnectionId": CONNECTION})),
              ("server", rta.tap_message(0, [tap(2)], "ncid-4")),
              ("server", rta.resync_message())]
    with recording.Writer(path) as w:
        for direction, text in frames:
            w.write(ws.to_record(ws.WebsocketMessage(RTA, direction, "text", text.encode()),
                                 recording.Redactor()))
    read = list(recording.read(path, strict=True, messages=True))
    kinds = [ws.rta_of(r).type for r in read]  # type: ignore[union-attr]
    assert kinds == [rta.Type.SUBSCRIBE, rta.Type.SUBSCRIBE, rta.Type.EVENT, rta.Type.RESYNC]
    assert [r["rta"].get("taps") for r in read][2] == [
        {"session": LOBBY.lower(), "changeNumber": 2, "branch": "branch-1"}]


@pytest.mark.parametrize("taps", [True, 3, "taps", {"session": LOBBY}])
def test_an_rta_field_whose_taps_are_no_list_reads_as_no_taps(taps: object) -> None:
    event = record(RTA, "server", rta.tap_message(0, [tap(4)], "ncid-2"))
    event["rta"]["taps"] = taps
    read = ws.rta_of(event)
    assert read is not None and read.type is rta.Type.EVENT and read.taps == ()
