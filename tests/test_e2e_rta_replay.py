"""End to end: a recorded two-console RTA session replayed to fresh consoles.

First `mpsdproxy run` records two consoles in front of `mpsdproxy emulate`: each
opens the RTA websocket, subscribes, joins the lobby with its ConnectionId, and
one writes; the stand-in taps both. Then the stand-in is stopped and
`mpsdproxy run --replay REC --unmatched error` answers two fresh consoles that
repeat the same requests: each gets, over its own websocket, the ConnectionId and
the taps (changeNumbers) it got when recorded, in the same order. Real sockets on
loopback, bounded waits, our own ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from conftest import Launcher
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from mpsdproxy import recording
from mpsdproxy import rta
from mpsdproxy.recording import messages

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
NAME = "party-rta-replay"
LOBBY = f"/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/{NAME}"
KEY = f"{SCID}~lobbysession~{NAME}"
WAIT = 10.0


class Console:
    """One console through the proxy: its RTA websocket and its HTTP client."""

    def __init__(self, port: int, user: str, xuid: str, stack: ExitStack) -> None:
        self.xuid = xuid
        auth = f"XBL3.0 x={user};token-of-{user}"
        self.http = stack.enter_context(httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=WAIT, headers={
                "x-xbl-contract-version": "107", "Authorization": auth,
                "Content-Type": "application/json; charset=utf-8"}))
        self.ws = stack.enter_context(connect(
            f"ws://127.0.0.1:{port}/connect", subprotocols=[rta.SUBPROTOCOL],
            additional_headers={"Authorization": auth}, proxy=None, compression=None,
            open_timeout=WAIT, close_timeout=2))
        self.connection_id = ""
        self.taps: list[int] = []

    def subscribe(self) -> None:
        self.ws.send(rta.subscribe_message(1))
        answer = self.next_message(lambda m: m.type is rta.Type.SUBSCRIBE)
        assert answer.status == rta.Status.SUCCESS and answer.connection_id, answer
        self.connection_id = answer.connection_id

    def join(self) -> int:
        return self.write({"members": {"me": {
            "constants": {"system": {"xuid": self.xuid, "initialize": True}},
            "properties": {"system": {
                "active": True, "connection": self.connection_id,
                "subscription": {"id": f"0000000{self.xuid[-1]}-0000-4000-8000-000000000000",
                                 "changeTypes": ["everything"]}}}}}})

    def write(self, body: dict[str, Any]) -> int:
        answer = self.http.put(LOBBY, json=body)
        assert answer.status_code in (200, 201), (answer.status_code, answer.text)
        return answer.json()["changeNumber"]

    def next_message(self, wanted: Callable[[rta.Message], bool]) -> rta.Message:
        """The next message `wanted` accepts; the taps of every event read are kept."""
        deadline = time.monotonic() + WAIT
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no such RTA message within the wait (taps {self.taps})"
            decoded = rta.decode(self.ws.recv(timeout=remaining), from_client=False)
            if decoded is None:
                continue
            self.taps += [t.change_number for t in decoded.taps if t.session == KEY]
            if wanted(decoded):
                return decoded

    def taps_until(self, change_number: int) -> list[int]:
        """Every tap of the lobby up to the one that reaches `change_number`."""
        if not any(n >= change_number for n in self.taps):
            self.next_message(lambda m: any(t.session == KEY and
                                            (t.change_number or 0) >= change_number
                                            for t in m.taps))
        return list(self.taps)


def _play(port: int) -> tuple[Console, Console, int]:
    """The title's part, as each console plays it: subscribe, join, one write; the
    consoles and the last changeNumber."""
    with ExitStack() as stack:
        first = Console(port, "console-a", "2533274800000001", stack)
        second = Console(port, "console-b", "2533274800000002", stack)
        first.subscribe()
        second.subscribe()
        first.join()
        joined = second.join()
        first.taps_until(joined)
        written = first.write({"properties": {"custom": {"map": "harbor"}}})
        first.taps_until(written)
        second.taps_until(written)
        _drain(first)
        _drain(second)
    return first, second, written


def _drain(console: Console) -> None:
    """Read what else arrives within a short while (a stray extra tap would show)."""
    try:
        while True:
            decoded = rta.decode(console.ws.recv(timeout=0.3), from_client=False)
            if decoded is not None:
                console.taps += [t.change_number for t in decoded.taps if t.session == KEY]
    except (TimeoutError, ConnectionClosed):
        return


def _recorded_taps(path: Path) -> list[list[int]]:
    """Per websocket (in handshake order), the lobby's changeNumbers tapped on it."""
    order: list[str] = []
    taps: dict[str, list[int]] = {}
    for record in recording.read(path, strict=True, messages=True):
        if not messages.is_message(record):
            if record["response"] and record["response"]["status"] == 101:
                order.append(record["client"])
            continue
        message = messages.rta_of(record)
        if message is not None and record["direction"] == "server":
            taps.setdefault(record["client"], []).extend(
                t.change_number for t in message.taps if t.session == KEY)
    return [taps.get(client, []) for client in order]


def _taps_follow_their_writes(path: Path) -> None:
    """In the replay's own recording every tap comes after the answer that brought the
    lobby to its changeNumber (the replay releases a tap only once that was served)."""
    answered: set[int] = set()
    taps = 0
    for record in recording.read(path, strict=True, messages=True):
        if not messages.is_message(record):
            body = (record["response"] or {}).get("body") or {}
            if isinstance(body.get("json"), dict) and "changeNumber" in body["json"]:
                answered.add(body["json"]["changeNumber"])
            continue
        message = messages.rta_of(record)
        for tap in message.taps if message is not None else ():
            assert tap.change_number in answered, (record["seq"], tap, answered)
            taps += 1
    assert taps >= 4


def test_a_replay_gives_fresh_consoles_the_recorded_taps_in_order(launch: Launcher) -> None:
    standin = launch.standin()
    recorder = launch.proxy("--mode", f"reverse:{standin.url}", "--quiet")
    first, second, written = _play(recorder.port)
    recorded = _recorded_taps(recorder.record)
    assert recorded == [first.taps, second.taps]
    assert written in first.taps and written in second.taps
    standin.stop()  # the replay answers everything itself: nothing to forward to
    recorder.stop()

    replayer = launch.proxy("--mode", f"reverse:{standin.url}", "--replay",
                            str(recorder.record), "--unmatched", "error")
    again_first, again_second, again_written = _play(replayer.port)
    assert again_written == written
    assert again_first.connection_id == first.connection_id  # the recorded subscribe result
    assert again_second.connection_id == second.connection_id
    assert (again_first.taps, again_second.taps) == (first.taps, second.taps)

    deadline = time.monotonic() + WAIT  # the replay's own recording holds the taps too
    while _recorded_taps(replayer.record) != recorded:
        assert time.monotonic() < deadline, (_recorded_taps(replayer.record), recorded)
        time.sleep(0.05)
    _taps_follow_their_writes(replayer.record)
    handshakes = [r for r in recording.read(replayer.record, strict=True)
                  if r["response"] and r["response"]["status"] == 101]
    assert [h["request"]["url"] for h in handshakes] == [f"{standin.url}/connect"] * 2
    assert all(h["provenance"]["source"] == "replayed" for h in handshakes)
    assert "token-of-console-a" not in replayer.record.read_text()
