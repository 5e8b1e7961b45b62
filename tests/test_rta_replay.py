"""The RTA side of a replay: a recording's server messages grouped by websocket, released
in order as the exchanges before them are served, and the loopback server that speaks
them (real sockets)."""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from mpsdproxy import classify
from mpsdproxy import faults
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import replay
from mpsdproxy import rta
from mpsdproxy.recording import messages
from mpsdproxy.replay.rta import Hangup
from mpsdproxy.replay.rta import RtaReplay
from mpsdproxy.replay.rtaserver import FEED_HEADER
from mpsdproxy.replay.rtaserver import Server

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = (f"https://sessiondirectory.xboxlive.com/serviceconfigs/{SCID}"
         "/sessionTemplates/LobbySession/sessions/lobby-9")
KEY = f"{SCID}~lobbysession~lobby-9"
RTA_URL = "https://rta.xboxlive.com/connect"
CLIENT = "127.0.0.1:50412"
WAIT = 5.0


def _exchange(method: str, url: str, status: int, answer: Any = None,
              headers: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    body = faults.encode_json(answer) if answer is not None else b""
    response = model.Response(status, "Whatever", [
        ("Content-Type", "application/json; charset=utf-8")] if answer is not None else [],
        body)
    request = model.Request(method, url, headers or [], b'{"x": 1}' if method == "PUT" else b"")
    done = model.Exchange(request, response, None, start=1_795_599_464.0,
                          end=1_795_599_464.01, client=CLIENT)
    return recording.to_record(done, recording.Redactor(), classify.classify(done))


def _document(change: int) -> dict[str, Any]:
    return {"constants": {"system": {"maxMembersCount": 8}, "custom": {}},
            "properties": {"system": {}, "custom": {}}, "members": {}, "changeNumber": change}


def _frame(direction: str, payload: str | bytes, opcode: str = "text") -> dict[str, Any]:
    data = payload.encode() if isinstance(payload, str) else payload
    return messages.to_record(messages.WebsocketMessage(RTA_URL, direction, opcode, data,
                                                        client=CLIENT))


def _tap(change: int) -> str:
    return rta.tap_message(0, [rta.Tap(KEY, change, "branch-1", "sub-1", "t")], f"ncid-{change}")


HANDSHAKE = [("Upgrade", "websocket"), ("Sec-WebSocket-Protocol", rta.SUBPROTOCOL)]


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    """A title's RTA websocket as the recorder writes it: the tap for changeNumber 1
    arrives before the answer of the write that made it (the service taps first)."""
    records = [
        _exchange("GET", RTA_URL, 101, headers=HANDSHAKE),                   # entry 0
        _frame("client", rta.subscribe_message(1)),
        _frame("server", rta.subscribe_result_message(1, 0, 0, {"ConnectionId": "conn-a"})),
        _frame("server", _tap(1)),
        _exchange("PUT", LOBBY, 201, _document(1)),                          # entry 1
        _exchange("PUT", LOBBY + "?again=1", 200, _document(2)),             # entry 2
        _frame("server", _tap(2)),
        _frame("server", rta.resync_message()),
        _frame("server", struct.pack("!H", 1001) + b"bye", opcode="close"),
    ]
    path = tmp_path / "rta.jsonl"
    with recording.Writer(path) as writer:
        for record in records:
            writer.write(record)
    return path


@pytest.fixture
def rta_replay(recorded: Path) -> Iterator[RtaReplay]:
    index = replay.Index.load([recorded])
    try:
        yield RtaReplay(index)
    finally:
        index.close()


def test_the_index_groups_server_messages_by_websocket(recorded: Path) -> None:
    index = replay.Index.load([recorded])
    try:
        assert len(index) == 3  # the handshake and the two writes; messages are no exchanges
        assert list(index.rta_streams) == [0]
        stream = index.rta_streams[0]
        assert [after for after, _ in stream] == [0, 0, 2, 2, 2]
        assert [r["direction"] for _, r in stream] == ["server"] * 5
        assert index.changes[(KEY, 1)] == 1 and index.changes[(KEY, 2)] == 2
    finally:
        index.close()


def test_a_subscribe_is_answered_by_its_sequence_and_taps_wait_for_their_writes(
        rta_replay: RtaReplay) -> None:
    assert rta_replay.is_handshake(0) and not rta_replay.is_handshake(1)
    feed = rta_replay.feed(0)
    assert feed.due() == []  # the tap waits for the subscribe and for its write
    answered = feed.receive(rta.subscribe_message(1))
    assert [rta.decode(f, from_client=False).connection_id for f in answered] == ["conn-a"]
    rta_replay.served(1)  # the write that made changeNumber 1
    assert [rta.decode(f, from_client=False).taps[0].change_number
            for f in feed.due()] == [1]
    assert feed.due() == []
    rta_replay.served(2)
    tap, resync, close = feed.due()
    assert rta.decode(tap, from_client=False).taps[0].change_number == 2
    assert rta.decode(resync, from_client=False).type is rta.Type.RESYNC
    assert close == Hangup(1001, "bye")
    assert feed.remaining() == 0 and feed.due() == []


def test_a_tap_recorded_after_a_write_is_not_sent_before_it(rta_replay: RtaReplay) -> None:
    feed = rta_replay.feed(0)
    feed.receive(rta.subscribe_message(1))
    rta_replay.served(2)  # the second write, but not the first
    assert feed.due() == []  # the first tap (and so all after it) still waits


def test_a_subscribe_the_recording_never_answered_gets_service_unavailable(
        rta_replay: RtaReplay) -> None:
    feed = rta_replay.feed(0)
    (answer,) = feed.receive(rta.subscribe_message(7))
    decoded = rta.decode(answer, from_client=False)
    assert (decoded.sequence, decoded.status) == (7, rta.Status.SERVICE_UNAVAILABLE)
    feed.receive(rta.subscribe_message(1))
    (again,) = feed.receive(rta.subscribe_message(1))  # its one result was given already
    assert rta.decode(again, from_client=False).status == rta.Status.SERVICE_UNAVAILABLE


def test_a_repeated_handshake_gets_the_results_only(rta_replay: RtaReplay) -> None:
    rta_replay.served(1)
    rta_replay.served(2)
    feed = rta_replay.feed(0, repeat=True)
    answered = feed.receive(rta.subscribe_message(1))
    assert [rta.decode(f, from_client=False).type for f in answered] == [rta.Type.SUBSCRIBE]
    assert feed.due() == []


# -- the loopback server, over real sockets -------------------------------------------------


@pytest.fixture
def server() -> Iterator[tuple[Server, asyncio.AbstractEventLoop, int]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    found = Server()
    port = asyncio.run_coroutine_threadsafe(found.start(), loop).result(WAIT)
    try:
        yield found, loop, port
    finally:
        loop.call_soon_threadsafe(found.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()


def test_the_server_speaks_a_feed_on_the_socket_its_token_names(
        server: tuple[Server, asyncio.AbstractEventLoop, int], rta_replay: RtaReplay) -> None:
    found, loop, port = server
    token = found.expect(rta_replay.feed(0))
    with connect(f"ws://127.0.0.1:{port}/connect", subprotocols=[rta.SUBPROTOCOL],
                 additional_headers={FEED_HEADER: token}, proxy=None,
                 open_timeout=WAIT, close_timeout=2) as ws:
        assert ws.subprotocol == rta.SUBPROTOCOL
        ws.send(rta.subscribe_message(1))
        answer = rta.decode(ws.recv(timeout=WAIT), from_client=False)
        assert answer.connection_id == "conn-a"

        def served(entry: int) -> None:
            rta_replay.served(entry)
            found.nudge()

        loop.call_soon_threadsafe(served, 1)
        tap = rta.decode(ws.recv(timeout=WAIT), from_client=False)
        assert tap.taps[0].change_number == 1
        assert found.open_sockets() == 1


def test_the_server_answers_a_recorded_websocket_with_the_older_subprotocol(
        server: tuple[Server, asyncio.AbstractEventLoop, int], rta_replay: RtaReplay) -> None:
    found, _, port = server
    token = found.expect(rta_replay.feed(0))
    with connect(f"ws://127.0.0.1:{port}/connect", subprotocols=["rta.xboxlive.com"],
                 additional_headers={FEED_HEADER: token}, proxy=None,
                 open_timeout=WAIT, close_timeout=2) as ws:
        assert ws.subprotocol == "rta.xboxlive.com"
        ws.send(rta.subscribe_message(1))
        assert rta.decode(ws.recv(timeout=WAIT), from_client=False).connection_id == "conn-a"


def test_the_server_refuses_a_handshake_without_a_known_token(
        server: tuple[Server, asyncio.AbstractEventLoop, int]) -> None:
    _, _, port = server
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{port}/connect", subprotocols=[rta.SUBPROTOCOL],
                additional_headers={FEED_HEADER: "999"}, proxy=None, open_timeout=WAIT)
