"""A console for end-to-end RTA tests: its websocket and its HTTP client, both through the proxy."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import httpx
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect

from mpsdproxy import rta

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
WAIT = 10.0


def lobby_path(name: str) -> str:
    return f"/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/{name}"


def lobby_key(name: str) -> str:
    return f"{SCID}~lobbysession~{name}"


class Console:
    """One console in one lobby: subscribes, joins with its ConnectionId (as
    MultiplayerManager does), writes, and keeps the changeNumbers of every lobby tap it
    read (`taps`)."""

    def __init__(self, port: int, user: str, xuid: str, stack: ExitStack, lobby: str) -> None:
        self.xuid = xuid
        self.lobby, self.key = lobby_path(lobby), lobby_key(lobby)
        auth = f"XBL3.0 x={user};token-of-{user}"
        self.http = stack.enter_context(httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=WAIT, headers={
                "x-xbl-contract-version": "107", "Authorization": auth,
                "Content-Type": "application/json; charset=utf-8"}))
        self.ws: ClientConnection = stack.enter_context(connect(
            f"ws://127.0.0.1:{port}/connect", subprotocols=[rta.SUBPROTOCOL],
            additional_headers={"Authorization": auth}, proxy=None, compression=None,
            open_timeout=WAIT, close_timeout=2))
        self.connection_id = ""
        self.taps: list[int | None] = []

    def subscribe(self) -> None:
        """Subscribe to session changes; keep the ConnectionId the answer carries."""
        self.ws.send(rta.subscribe_message(1))
        answer = self.next_message(lambda m: m.type is rta.Type.SUBSCRIBE)
        assert answer.status == rta.Status.SUCCESS and answer.connection_id, answer
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
        answer = self.http.put(self.lobby, json=body)
        assert answer.status_code in (200, 201), (answer.status_code, answer.text)
        return answer.json()["changeNumber"]

    def read(self, message: str | bytes) -> rta.Message | None:
        """Decode one frame, keeping the changeNumbers of its lobby taps."""
        decoded = rta.decode(message, from_client=False)
        if decoded is not None:
            self.taps += [t.change_number for t in decoded.taps if t.session == self.key]
        return decoded

    def next_message(self, wanted: Callable[[rta.Message], bool]) -> rta.Message:
        """The next RTA message `wanted` accepts (others are read and skipped), within WAIT."""
        deadline = time.monotonic() + WAIT
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no such RTA message within the wait (taps {self.taps})"
            decoded = self.read(self.ws.recv(timeout=remaining))
            if decoded is not None and wanted(decoded):
                return decoded

    def _reaches(self, change_number: int) -> Callable[[rta.Message], bool]:
        return lambda m: any(t.session == self.key and (t.change_number or 0) >= change_number
                             for t in m.taps)

    def tap_for(self, change_number: int) -> rta.Tap:
        """Wait for the tap that says the lobby reached `change_number` (or later)."""
        event = self.next_message(self._reaches(change_number))
        return next(t for t in event.taps if t.session == self.key)

    def taps_until(self, change_number: int) -> list[int | None]:
        """Every tap of the lobby up to the one that reaches `change_number`."""
        if not any((n or 0) >= change_number for n in self.taps):
            self.next_message(self._reaches(change_number))
        return list(self.taps)


def two_join(port: int, stack: ExitStack, lobby: str) -> tuple[Console, Console, int]:
    """Two consoles on `port` subscribe and join `lobby` one after the other, as
    MultiplayerManager does; the first has read the tap of the second's join. Both
    consoles and that join's changeNumber."""
    first = Console(port, "console-a", "2533274800000001", stack, lobby)
    second = Console(port, "console-b", "2533274800000002", stack, lobby)
    first.subscribe()
    second.subscribe()
    first.join()
    joined = second.join()
    first.taps_until(joined)
    return first, second, joined
