"""End to end: two consoles' RTA websockets through `mpsdproxy run` in front of the stand-in.

Each console subscribes to the session directory's connections resource, writes the
ConnectionId it got into its member (as MultiplayerManager does: the library's
multiplayer_subscription.cpp reads `ConnectionId` from the subscribe result, and the
member write carries `properties.system.connection`), and a write by one gives the
other a shoulder tap with the session's new changeNumber. The recording then holds
the HTTP exchanges and every RTA message, in the order they passed the proxy, and the
live log shows the tap. Real sockets on loopback, bounded waits, our own ids.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Launcher
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect

from mpsdproxy import recording
from mpsdproxy import rta
from mpsdproxy.recording import messages

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
NAME = "party-rta"
LOBBY = f"/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/{NAME}"
KEY = f"{SCID}~lobbysession~{NAME}"
WAIT = 10.0


class Console:
    """One console: its RTA websocket and its HTTP client, both through the proxy."""

    def __init__(self, proxy_port: int, user: str, xuid: str, stack: ExitStack) -> None:
        self.xuid = xuid
        auth = f"XBL3.0 x={user};token-of-{user}"
        self.http = stack.enter_context(httpx.Client(
            base_url=f"http://127.0.0.1:{proxy_port}", timeout=WAIT, headers={
                "x-xbl-contract-version": "107", "Authorization": auth,
                "Content-Type": "application/json; charset=utf-8"}))
        self.ws: ClientConnection = stack.enter_context(connect(
            f"ws://127.0.0.1:{proxy_port}/connect", subprotocols=[rta.SUBPROTOCOL],
            additional_headers={"Authorization": auth}, proxy=None, compression=None,
            open_timeout=WAIT, close_timeout=2))
        self.connection_id = ""

    def subscribe(self) -> None:
        """Subscribe to session changes; keep the ConnectionId the answer carries."""
        self.ws.send(rta.subscribe_message(1))
        answer = self.next_message(lambda m: m.type is rta.Type.SUBSCRIBE)
        assert answer.status == rta.Status.SUCCESS, answer
        assert answer.connection_id, answer
        self.connection_id = answer.connection_id

    def join(self) -> int:
        """Join the lobby with this console's connection; the new changeNumber."""
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

    def next_message(self, wanted: Any) -> rta.Message:
        """The next RTA message that `wanted` accepts (others are skipped), within WAIT."""
        deadline = time.monotonic() + WAIT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no such RTA message within the wait")
            decoded = rta.decode(self.ws.recv(timeout=remaining), from_client=False)
            if decoded is not None and wanted(decoded):
                return decoded

    def tap_for(self, change_number: int) -> rta.Tap:
        """Wait for the tap that says the lobby reached `change_number` (or later)."""
        def reached(m: rta.Message) -> bool:
            return any(t.session == KEY and (t.change_number or 0) >= change_number
                       for t in m.taps)
        event = self.next_message(reached)
        return next(t for t in event.taps if t.session == KEY)


@pytest.fixture
def consoles(launch: Launcher) -> Iterator[tuple[Console, Console, Any]]:
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}")
    with ExitStack() as stack:
        first = Console(proxy.port, "console-a", "2533274800000001", stack)
        second = Console(proxy.port, "console-b", "2533274800000002", stack)
        yield first, second, proxy


def _rta(record: dict[str, Any]) -> rta.Message | None:
    message = messages.from_record(record)
    return rta.decode(message.payload, from_client=message.direction == "client")


def test_a_write_by_one_console_taps_the_other(consoles) -> None:
    first, second, proxy = consoles
    first.subscribe()
    second.subscribe()
    assert first.connection_id != second.connection_id
    first.join()
    joined = second.join()
    assert first.tap_for(joined).change_number == joined  # first learns second joined
    written = first.write({"properties": {"custom": {"map": "harbor"}}})
    assert written > joined
    tap = second.tap_for(written)
    assert tap.change_number == written
    first.ws.close()
    second.ws.close()

    deadline = time.monotonic() + WAIT  # the live log line follows the answer
    while f"RTA tap {NAME} changeNumber {written} -> client 127.0.0.1" not in proxy.output():
        assert time.monotonic() < deadline, proxy.output()
        time.sleep(0.05)
    records = list(recording.read(proxy.record, strict=True, messages=True))
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    kinds = ["ws" if messages.is_message(r) else r["request"]["method"] for r in records]
    assert kinds.count("GET") == 2 and kinds.count("PUT") == 3  # two handshakes, three writes
    puts = [i for i, r in enumerate(records) if not messages.is_message(r)
            and r["request"]["method"] == "PUT"]
    subscribes = [i for i, r in enumerate(records) if messages.is_message(r)
                  and r["direction"] == "client" and (_rta(r) or rta.Message(rta.Type.RESYNC)
                                                      ).type is rta.Type.SUBSCRIBE]
    assert len(subscribes) == 2 and max(subscribes) < puts[0]
    taps = [(i, t) for i, r in enumerate(records) if messages.is_message(r)
            for t in ((_rta(r) or rta.Message(rta.Type.RESYNC)).taps)]
    seen_by_second = [i for i, t in taps if t.change_number == written]
    assert seen_by_second and min(seen_by_second) > puts[1]  # after second's join answer
    assert all(t.session == KEY for _, t in taps)
    assert any(r.get("rta", {}).get("type") == "event" for r in records), \
        "the records carry the decoded RTA message"
    closes = [r for r in records if messages.is_message(r) and r["opcode"] == "close"]
    assert len(closes) == 2
    raw = proxy.record.read_text()
    assert "token-of-console-a" not in raw


def test_regular_mode_decrypts_the_rta_host(launch: Launcher, confdir: Path) -> None:
    """wss://rta.xboxlive.com/connect through the proxy (CONNECT, its CA), sent to the
    stand-in with --upstream: the default intercept list holds the RTA host."""
    standin = launch.standin()
    proxy = launch.proxy("--upstream", standin.url)
    verify = ssl.create_default_context(cafile=str(confdir / "mitmproxy-ca-cert.pem"))
    with connect("wss://rta.xboxlive.com/connect", subprotocols=[rta.SUBPROTOCOL],
                 proxy=proxy.url, ssl=verify, compression=None, open_timeout=WAIT,
                 close_timeout=2) as ws:
        ws.send(rta.subscribe_message(1))
        answer = rta.decode(ws.recv(timeout=WAIT), from_client=False)
    assert answer is not None and answer.connection_id
    deadline = time.monotonic() + WAIT
    while "RTA closed by client" not in proxy.output():
        assert time.monotonic() < deadline, proxy.output()
        time.sleep(0.05)
    records = list(recording.read(proxy.record, strict=True, messages=True))
    assert records[0]["request"]["url"] == "https://rta.xboxlive.com/connect"
    assert [messages.is_message(r) for r in records] == [False, True, True, True]
    assert [r.get("rta", {}).get("type") for r in records[1:3]] == ["subscribe", "subscribe"]
