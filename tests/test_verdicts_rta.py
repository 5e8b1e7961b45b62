"""The RTA verdicts over scripted titles: for each rule a title that behaves as the client
library and one that does not, fed to the engine as a recording feeds it (exchanges and
websocket messages in order). Messages are written with `mpsdproxy.rta`'s encoders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.websocket import WebSocketMessage
from test_verdicts import LOBBY
from test_verdicts import OTHER
from test_verdicts import SCID
from test_verdicts import T0
from test_verdicts import ex
from test_verdicts import of
from test_verdicts import only
from test_verdicts import rec
from wsproto.frame_protocol import Opcode

from mpsdproxy import interchange
from mpsdproxy import recording
from mpsdproxy import resources
from mpsdproxy import rta
from mpsdproxy.addons import common
from mpsdproxy.addons import verdictlog
from mpsdproxy.recording.messages import WebsocketMessage
from mpsdproxy.recording.messages import from_record
from mpsdproxy.recording.messages import is_message
from mpsdproxy.verdicts import Engine
from mpsdproxy.verdicts import Status
from mpsdproxy.verdicts import Verdict

RTA = "https://rta.xboxlive.com"
URL = RTA + "/connect"
SOCKET = "127.0.0.1:50100"
AGAIN = "127.0.0.1:50101"
LOBBY_KEY = f"{SCID}~lobbysession~lobby-1"
OTHER_KEY = f"{SCID}~lobbysession~lobby-2"
CAPTURE = Path(__file__).resolve().parents[2] / "shared" / "captures" / "x49_mp_cs21.saz"


class Title:
    """A scripted title: its calls and its websocket's messages, numbered in order."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.seq = 0
        self.found: list[Verdict] = []

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def call(self, at: float, method: str = "GET", path: str = LOBBY, status: int = 200, *,
             number: int | None = None, took: float = 0.05, body: Any = None,
             user: str = "alice") -> int:
        """An MPSD call answered with a session at changeNumber `number` (None: no body)."""
        record = rec(self._next(), at, method, path, status, took=took, body=body, user=user)
        if number is not None:
            record["response"]["body"] = {"json": {"changeNumber": number, "members": {}}}
        self.found += self.engine.feed(ex(record))
        return self.seq

    def connect(self, at: float, socket: str = SOCKET, status: int | None = 101) -> int:
        """A `GET /connect` from `socket`: 101, or a failed attempt."""
        record = rec(self._next(), at, "GET", "/connect", status, host=RTA, client=socket,
                     headers=[("Upgrade", "websocket")], took=0.05)
        self.found += self.engine.feed(ex(record))
        return self.seq

    def frame(self, at: float, direction: str, text: str | bytes, socket: str = SOCKET,
              opcode: str = "text") -> int:
        payload = text.encode() if isinstance(text, str) else text
        message = WebsocketMessage(URL, direction, opcode, payload, T0 + at, socket,
                                   seq=self._next())
        self.found += self.engine.feed_message(message)
        return self.seq

    def subscribe(self, at: float, socket: str = SOCKET) -> int:
        self.frame(at, "client", rta.subscribe_message(1), socket)
        return self.frame(at + 0.05, "server", rta.subscribe_result_message(
            1, rta.Status.SUCCESS, 0, {"ConnectionId": "c0000000-0000-0000-0000-000000000001"}),
            socket)

    def tap(self, at: float, number: int, session: str = LOBBY_KEY) -> int:
        taps = [rta.Tap(session, number, "b-1", "s-1")]
        return self.frame(at, "server", rta.tap_message(0, taps, "n-1"))

    def close(self, at: float, direction: str = "server", socket: str = SOCKET) -> int:
        return self.frame(at, direction, b"\x03\xe8", socket, "close")

    def end(self) -> list[Verdict]:
        return self.found + self.engine.finish()


def listening(number: int = 1) -> Title:
    """A title that connected, subscribed, and joined lobby-1 (changeNumber `number`)."""
    title = Title()
    title.connect(0)
    title.subscribe(0.1)
    title.call(1, "PUT", number=number, body={"members": {"me": {}}})
    return title


# ---------------------------------------------------------------- tap-read


def test_a_newer_tap_followed_by_a_get_passes() -> None:
    title = listening()
    tap = title.tap(10, 2)
    get = title.call(10.2, number=2)
    v = only(title.end(), "tap-read")
    assert v.status is Status.PASS
    assert v.records == (tap, get) and v.gaps_ms == (200.0,)
    assert "changeNumber 2" in v.reason and "it had changeNumber 1" in v.reason


def test_a_newer_tap_never_read_fails_once_the_limit_passed() -> None:
    title = listening()
    tap = title.tap(10, 2)
    title.call(40, path=OTHER)  # time moves on: the read was due at 15 s
    v = only(title.end(), "tap-read")
    assert v.status is Status.FAIL
    assert v.records == (tap,)
    assert "did not read sessions/lobby-1 within 5 s" in v.reason


def test_a_tap_no_newer_than_the_copy_asks_for_nothing() -> None:
    title = listening(3)
    title.tap(10, 3)
    title.tap(11, 2)
    v = only(title.end(), "tap-read")
    assert v.status is Status.PASS  # the summary: nothing was owed
    assert "2 no newer than its copy" in v.reason


def test_a_write_in_flight_that_answers_the_tapped_change_needs_no_get() -> None:
    title = listening()
    title.tap(10, 2)
    write = title.call(9.9, "PUT", number=2, took=0.6)  # sent before the tap, answered after
    v = only(title.end(), "tap-read")
    assert v.status is Status.PASS and v.records[-1] == write
    assert "write in flight" in v.reason


def test_a_write_in_flight_with_an_older_answer_still_owes_the_get() -> None:
    title = listening()
    title.tap(10, 3)
    title.call(9.9, "PUT", number=2, took=0.6)
    title.call(40, path=OTHER)
    v = only(title.end(), "tap-read")
    assert v.status is Status.FAIL and "after the write in flight" in v.reason


def test_a_tap_for_a_session_the_title_never_had_is_not_judged() -> None:
    title = listening()
    title.tap(10, 5, OTHER_KEY)
    assert only(title.end(), "tap-read").status is Status.NOT_APPLICABLE


def test_the_recording_ending_before_the_read_was_due_is_not_applicable() -> None:
    title = listening()
    title.tap(10, 2)
    v = only(title.end(), "tap-read")
    assert v.status is Status.NOT_APPLICABLE and "recording ended" in v.reason


# ---------------------------------------------------------------- rta-reconnect


def test_a_drop_followed_by_reconnects_on_the_schedule_passes() -> None:
    title = listening()
    drop = title.close(20)
    title.connect(20.1, AGAIN, status=503)  # attempt 1: at once; fails
    title.connect(21.2, AGAIN)  # attempt 2: 1 s after the failure
    sub = title.frame(21.3, "client", rta.subscribe_message(1), AGAIN)
    v = only(title.end(), "rta-reconnect")
    assert v.status is Status.PASS
    assert v.records[0] == drop and v.records[-1] == sub
    assert "after 1 failed attempt" in v.reason


def test_a_reconnect_sooner_than_the_schedule_fails() -> None:
    title = listening()
    title.close(20)
    title.connect(20.1, AGAIN, status=503)
    title.connect(20.4, AGAIN, status=503)  # 0.25 s after the failure: the library waits 1 s
    v = only(title.end(), "rta-reconnect")
    assert v.status is Status.FAIL
    assert "attempt 2" in v.reason and "waits 1 s" in v.reason


def test_a_title_that_never_reconnects_fails() -> None:
    title = listening()
    drop = title.close(20)
    title.call(60, path=OTHER)
    v = only(title.end(), "rta-reconnect")
    assert v.status is Status.FAIL and v.records == (drop,)
    assert "did not reconnect" in v.reason


def test_a_reconnect_without_subscribing_again_fails() -> None:
    title = listening()
    title.close(20)
    title.connect(20.1, AGAIN)
    title.call(60, path=OTHER)
    v = only(title.end(), "rta-reconnect")
    assert v.status is Status.FAIL and "did not subscribe again" in v.reason


def test_a_close_the_title_sent_asks_for_no_reconnect() -> None:
    title = listening()
    title.close(20, "client")
    title.close(20.01, "server")  # the service's answering close is no drop
    title.call(60, path=OTHER)
    assert only(title.end(), "rta-reconnect").status is Status.NOT_APPLICABLE


# ---------------------------------------------------------------- rta-resync


def followed_two() -> Title:
    title = listening()
    title.call(2, "PUT", OTHER, number=7, body={"members": {"me": {}}})
    return title


def test_a_resync_followed_by_reading_every_session_passes() -> None:
    title = followed_two()
    resync = title.frame(30, "server", rta.resync_message())
    first = title.call(30.1, number=4)
    second = title.call(30.2, path=OTHER, number=7)
    v = only(title.end(), "rta-resync")
    assert v.status is Status.PASS
    assert v.records == (resync, first, second)
    assert "sessions/lobby-1" in v.reason and "sessions/lobby-2" in v.reason


def test_a_resync_with_a_session_left_unread_fails_naming_it() -> None:
    title = followed_two()
    title.frame(30, "server", rta.resync_message())
    title.call(30.1, number=4)
    title.call(60, "GET", "/handles/query", number=None)
    v = only(title.end(), "rta-resync")
    assert v.status is Status.FAIL
    assert "did not re-read sessions/lobby-2" in v.reason
    assert "it did re-read sessions/lobby-1" in v.reason


def test_a_session_the_title_left_is_not_owed_a_reread() -> None:
    title = followed_two()
    title.call(3, "PUT", OTHER, number=8, body={"members": {"me": None}})
    title.frame(30, "server", rta.resync_message())
    title.call(30.1, number=4)
    assert only(title.end(), "rta-resync").status is Status.PASS


# ---------------------------------------------------------------- polling, with the reason


def polled(title: Title) -> Verdict:
    for n in range(6):
        title.call(100 + 2 * n, number=1)
    return only(title.end(), "polling")


def test_polling_while_subscribed_says_the_taps_would_tell() -> None:
    v = polled(listening())
    assert v.status is Status.WARN
    assert "RTA subscription open (record 3)" in v.reason and "read on a tap" in v.reason


def test_polling_without_ever_subscribing_says_to_subscribe() -> None:
    v = polled(Title())
    assert "never subscribed to RTA" in v.reason and rta.CONNECTIONS_URI in v.reason


def test_polling_after_the_websocket_closed_says_to_reconnect() -> None:
    title = listening()
    title.close(20, "client")
    assert "websocket closed (record 5)" in polled(title).reason


# ---------------------------------------------------------------- the engine and the live log


def test_messages_of_other_websockets_and_the_rules_summaries() -> None:
    engine = Engine()
    engine.feed_message(WebsocketMessage("wss://chat.example/ws", "server", "text", b"[4]",
                                         T0, SOCKET))
    assert engine.messages == 1 and engine.rta_messages == 0
    found = engine.finish()
    for rule in ("tap-read", "rta-reconnect", "rta-resync"):
        assert only(found, rule).status is Status.NOT_APPLICABLE
    with pytest.raises(RuntimeError, match="finished"):
        engine.feed_message(WebsocketMessage(URL, "server", "text", b"[4]", T0, SOCKET))


def websocket_flow(*frames: tuple[bool, str]) -> Any:
    """A marked RTA websocket flow (handshake answered 101) holding `frames`."""
    f = tflow.twebsocketflow(messages=False)
    f.request.host, f.request.path = "rta.xboxlive.com", "/connect"
    f.request.headers["authorization"] = "XBL3.0 x=alice;t"
    f.request.timestamp_start, f.response.timestamp_end = T0, T0 + 0.05
    f.metadata[common.KEY] = {"resource": resources.parse("/connect").to_dict(),
                              "provenance": dict(common.FORWARDED)}
    assert f.websocket is not None
    for i, (from_client, text) in enumerate(frames):
        f.websocket.messages.append(
            WebSocketMessage(Opcode.TEXT, from_client, text.encode(), T0 + 0.1 + i / 100))
    return f


def test_the_live_log_feeds_websocket_messages_and_skips_dropped_ones() -> None:
    log = verdictlog.VerdictLog()
    with taddons.context(log):
        f = websocket_flow()
        log.response(f)
        assert f.websocket is not None
        for from_client, text in ((True, rta.subscribe_message(1)),
                                  (False, rta.resync_message())):
            f.websocket.messages.append(WebSocketMessage(
                Opcode.TEXT, from_client, text.encode(), T0 + 0.1))
            log.websocket_message(f)
        f.websocket.messages.append(WebSocketMessage(
            Opcode.TEXT, False, rta.resync_message().encode(), T0 + 0.2))
        f.websocket.messages[-1].drop()
        log.websocket_message(f)  # dropped: the title never got it
        f.websocket.close_code, f.websocket.timestamp_end = 1006, T0 + 1
        log.websocket_end(f)  # the connection's end, as a close
        assert log.engine is not None
        assert (log.engine.messages, log.engine.rta_messages) == (3, 3)


# ---------------------------------------------------------------- the public capture


@pytest.mark.skipif(not CAPTURE.exists(), reason="the public capture is not beside the clone")
def test_the_public_capture_judges_its_taps(tmp_path: Path) -> None:
    """Its changeNumber-2 tap comes while the title writes the lobby: the 412's session
    carries changeNumber 2, so the title has the change without a GET."""
    imported = os.fspath(tmp_path / "capture.jsonl")
    interchange.import_file(os.fspath(CAPTURE), imported)
    engine = Engine()
    found: list[Verdict] = []
    for record in recording.read(imported, messages=True):
        if is_message(record):
            found += engine.feed_message(from_record(record))
        else:
            found += engine.feed(recording.to_exchange(record))
    found += engine.finish()
    taps = of(found, "tap-read")
    assert [v.status for v in taps] == [Status.PASS]
    assert "changeNumber 2" in taps[0].reason and "412" in taps[0].reason
    # The message with the newer tap, and the one with two taps the title already had.
    assert engine.looked_at("tap-read").records == "7, 20"
