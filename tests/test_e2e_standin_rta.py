"""End to end: `mpsdproxy emulate` as a separate process, two consoles each with an RTA
websocket and an HTTP client, in one lobby, as MultiplayerManager pairs them.

Each console opens `/connect` with the subprotocol `rta.xboxlive.com.V2` under the host
name the library uses (`wss://rta.xboxlive.com/connect`, real_time_activity_connection.cpp
`s_rtaUri`; here plain ws to the stand-in on loopback), subscribes to the connections
resource, and joins the lobby over HTTP with the ConnectionId it was given
(`properties.system.connection`, multiplayer_session_member.cpp). A write by one then
reaches the other as a shoulder tap with the new changeNumber (the library re-reads on
it: multiplayer_session_writer.cpp `OnSessionChanged`); `POST /_emulator/resync` sends
`[4]`; `POST /_emulator/rta/close` drops both sockets. Ids here are synthetic.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Launcher
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect

from mpsdproxy import rta

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/Evening-R2"
LOBBY_KEY = f"{SCID}~lobbysession~evening-r2"
WAIT = 10.0


class Console:
    """One console: its RTA websocket (under the RTA host name) and its HTTP client."""

    def __init__(self, stack: contextlib.ExitStack, port: int, user: str, xuid: str,
                 subscription: str) -> None:
        self.xuid = xuid
        self.subscription = subscription
        self.http = stack.enter_context(httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=WAIT, headers={
                "x-xbl-contract-version": "107",
                "Authorization": f"XBL3.0 x={user};token-of-{user}"}))
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.ws: ClientConnection = stack.enter_context(connect(
            "ws://rta.xboxlive.com/connect", sock=sock, subprotocols=[rta.SUBPROTOCOL],
            open_timeout=WAIT))
        self.connection_id = ""

    def subscribe(self) -> None:
        self.ws.send(rta.subscribe_message(1))
        answer = self.next()
        assert answer.status == rta.Status.SUCCESS and answer.connection_id
        self.connection_id = answer.connection_id

    def next(self) -> rta.Message:
        message = rta.decode(self.ws.recv(timeout=WAIT), from_client=False)
        assert message is not None
        return message

    def tap(self) -> rta.Tap:
        """The next event's only tap."""
        event = self.next()
        assert event.type is rta.Type.EVENT, event
        (tap,) = event.taps
        return tap

    def join(self) -> dict[str, Any]:
        return self.write({"members": {"me": {
            "constants": {"system": {"xuid": self.xuid, "initialize": True}},
            "properties": {"system": {"active": True, "connection": self.connection_id,
                                      "subscription": {"id": self.subscription,
                                                       "changeTypes": ["everything"]}}}}}})

    def write(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.http.put(LOBBY, json=body)
        assert answer.status_code in (200, 201), (answer.status_code, answer.text)
        return answer.json()


@pytest.fixture
def lobby(launch: Launcher) -> Iterator[tuple[str, Console, Console]]:
    standin = launch.standin()
    with contextlib.ExitStack() as stack:
        ann = Console(stack, standin.port, "console-ann", "2533274800000021",
                      "0F0E0D0C-0000-4000-8000-0000000000A1")
        bo = Console(stack, standin.port, "console-bo", "2533274800000022",
                     "0F0E0D0C-0000-4000-8000-0000000000B2")
        yield standin.url, ann, bo


def test_two_consoles_learn_of_each_other_from_taps(lobby: tuple[str, Console, Console]
                                                    ) -> None:
    url, ann, bo = lobby
    ann.subscribe()
    bo.subscribe()
    assert ann.connection_id != bo.connection_id

    created = ann.join()
    assert ann.tap().change_number == created["changeNumber"] == 1
    joined = bo.join()
    seen = ann.tap()
    assert (seen.session, seen.change_number, seen.branch) == \
        (LOBBY_KEY, joined["changeNumber"], joined["branch"])
    assert seen.subscription == ann.subscription.lower()
    assert bo.tap().change_number == 2

    ready = bo.write({"properties": {"custom": {"ready": True}}})
    assert ann.tap().change_number == ready["changeNumber"] == 3
    assert ann.http.get(LOBBY).json()["properties"]["custom"] == {"ready": True}
    assert bo.tap().change_number == 3

    assert httpx.post(f"{url}/_emulator/resync", timeout=WAIT).json() == {"resync": 2}
    assert ann.next().type is rta.Type.RESYNC and bo.next().type is rta.Type.RESYNC

    assert httpx.post(f"{url}/_emulator/rta/close", timeout=WAIT).json() == {"closed": 2}
    for console in (ann, bo):
        with pytest.raises(ConnectionClosed):
            console.ws.recv(timeout=WAIT)
    assert httpx.get(f"{url}/_emulator/rta", timeout=WAIT).json() == {"rta": []}
