"""End to end: each `tap:` and `rta:` fault of a scenario, seen on the wire a title gets.

`mpsdproxy emulate` serves the RTA websocket, `mpsdproxy run --mode reverse:... --scenario`
sits in front of it, and a console (a `websockets` client plus an HTTP client, both
through the proxy) subscribes to session changes and creates a lobby with its
ConnectionId, as MultiplayerManager does. A second console joins and writes over HTTP
only (no websocket), so every tap on the wire is the first console's: its first tap is
for its own create (changeNumber 1), its second for the join (2), its third for the
write (3). Each test's scenario breaks one of them and the test reads what arrives.
Real sockets on loopback, bounded waits, our own ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Launcher
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect

from mpsdproxy import recording
from mpsdproxy import rta
from mpsdproxy import title
from mpsdproxy.recording import messages

SCID = title.SCID
NAME = "faulty-lobby"
LOBBY = f"/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/{NAME}"
KEY = f"{SCID}~lobbysession~{NAME}"
WAIT = 10.0
#: How long a test listens to be sure a message does not come.
QUIET = 1.0
#: The lobby's taps, described as requests for the session (a tap rule's match).
SESSIONS = 'match: {path: "*/sessions/faulty-*"}'


def _headers(user: str) -> dict[str, str]:
    return {"x-xbl-contract-version": "107", "Authorization": f"XBL3.0 x={user};token-of-{user}",
            "Content-Type": "application/json; charset=utf-8"}


def _member(xuid: str, system: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"members": {"me": {"constants": {"system": {"xuid": xuid, "initialize": True}},
                               "properties": {"system": {"active": True, **(system or {})}}}}}


class Wire:
    """The listening console's websocket and HTTP client, and a friend's HTTP client."""

    def __init__(self, proxy_port: int, stack: ExitStack) -> None:
        base = f"http://127.0.0.1:{proxy_port}"
        self.http = stack.enter_context(httpx.Client(
            base_url=base, timeout=WAIT, headers=_headers("console-one")))
        self.friend = stack.enter_context(httpx.Client(
            base_url=base, timeout=WAIT, headers=_headers("console-two")))
        self.ws: ClientConnection = stack.enter_context(connect(
            f"ws://127.0.0.1:{proxy_port}/connect", subprotocols=[rta.SUBPROTOCOL],
            additional_headers={"Authorization": _headers("console-one")["Authorization"]},
            proxy=None, compression=None, open_timeout=WAIT, close_timeout=2))

    def subscribe(self, sequence: int = 1) -> rta.Message:
        self.ws.send(rta.subscribe_message(sequence))
        return self.next(lambda m: m.type is rta.Type.SUBSCRIBE)

    def create(self) -> int:
        """Subscribe, then create the lobby with this console's connection: changeNumber 1."""
        answer = self.subscribe()
        assert answer.status == rta.Status.SUCCESS and answer.connection_id, answer
        return self._put(self.http, _member("2533274800000161", {
            "connection": answer.connection_id,
            "subscription": {"id": "0f0e0d0c-0000-4000-8000-000000000161",
                             "changeTypes": ["everything"]}}))

    def join(self) -> int:
        """The friend joins (over HTTP only): changeNumber 2."""
        return self._put(self.friend, _member("2533274800000162"))

    def change(self, value: str) -> int:
        """The friend changes the lobby: the next changeNumber."""
        return self._put(self.friend, {"properties": {"custom": {"map": value}}})

    @staticmethod
    def _put(client: httpx.Client, body: dict[str, Any]) -> int:
        answer = client.put(LOBBY, json=body)
        assert answer.status_code in (200, 201), (answer.status_code, answer.text)
        return answer.json()["changeNumber"]

    def next(self, wanted: Callable[[rta.Message], bool] = lambda m: True,
             timeout: float = WAIT) -> rta.Message:
        """The next RTA message `wanted` accepts, within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no such RTA message within the wait")
            message = rta.decode(self.ws.recv(timeout=remaining), from_client=False)
            if message is not None and wanted(message):
                return message

    def tap(self, timeout: float = WAIT) -> int:
        """The changeNumber of the next tap for the lobby."""
        event = self.next(lambda m: any(t.session == KEY for t in m.taps), timeout)
        return next(t.change_number for t in event.taps if t.session == KEY)

    def taps(self, count: int) -> list[int]:
        return [self.tap() for _ in range(count)]

    def silent(self) -> bool:
        """Whether nothing more arrives within QUIET."""
        try:
            self.ws.recv(timeout=QUIET)
        except TimeoutError:
            return True
        return False


@pytest.fixture
def wire(launch: Launcher, tmp_path: Path):
    """`wire(fault, when)`: the stand-in, a proxy with one rule, and a Wire through it."""
    with ExitStack() as stack:
        made: list[Any] = []

        def make(fault: str, when: str = "{nth: 2}", match: str = "") -> Wire:
            scenario = tmp_path / "fault.yaml"
            scenario.write_text(
                "name: rta-on-the-wire\nseed: 16\nrules:\n  - name: the-fault\n"
                f"    {match or SESSIONS}\n"
                f"    when: {when}\n    fault: {fault}\n", encoding="utf-8")
            standin = launch.standin()
            proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--scenario", str(scenario))
            made.append(proxy)
            return Wire(proxy.port, stack)

        yield make
        stack.close()
        for proxy in made:  # the counts are printed when the proxy stops
            proxy.stop()


def test_tap_drop_the_tap_never_arrives(wire) -> None:
    w = wire("{tap: drop}")
    assert w.create() == 1 and w.tap() == 1
    assert w.join() == 2
    assert w.change("harbour") == 3
    assert w.tap() == 3  # the join's tap (2) never came
    assert w.silent()


def test_tap_duplicate_arrives_twice(wire) -> None:
    w = wire("{tap: duplicate}")
    w.create()
    w.join()
    w.change("harbour")
    assert w.taps(4) == [1, 2, 2, 3]
    assert w.silent()


def test_tap_stale_names_an_older_change_number(wire) -> None:
    w = wire("{tap: stale}")
    w.create()
    assert w.join() == 2
    w.change("harbour")
    # the join's tap names the changeNumber this websocket was last tapped with (1)
    assert w.taps(3) == [1, 1, 3]


def test_tap_delay_arrives_late(wire) -> None:
    w = wire("{tap: {delay: 1500ms}}")
    w.create()
    assert w.tap() == 1
    w.join()
    joined = time.monotonic()
    assert w.change("harbour") == 3
    assert w.tap() == 3  # the later change's tap overtakes the delayed one
    assert w.tap(timeout=WAIT) == 2
    assert time.monotonic() - joined >= 1.4


def test_tap_reorder_arrives_after_the_next_one(wire) -> None:
    w = wire("{tap: reorder}")
    w.create()
    assert w.tap() == 1
    w.join()
    assert w.silent()  # held back until the service sends its next event
    w.change("harbour")
    assert w.taps(2) == [3, 2]


def test_rta_close_drops_the_websocket(wire, launch: Launcher) -> None:
    w = wire("{rta: close}")
    w.create()
    assert w.tap() == 1
    w.join()  # its tap is the service's second lobby message: the socket goes with it
    with pytest.raises(ConnectionClosed) as closed:
        w.next(lambda m: bool(m.taps))
    assert closed.value.rcvd is None  # no close frame: as a network loss
    proxy = launch.started[-1]
    proxy.stop()
    records = list(recording.read(proxy.record, strict=True, messages=True))
    taps = [t.change_number for r in records if messages.is_message(r)
            for t in (messages.rta_of(r) or rta.Message(rta.Type.RESYNC)).taps]
    assert taps == [1]  # the recording holds what the title got


def test_rta_resync_follows_the_message(wire) -> None:
    w = wire("{rta: resync}", when="{nth: 1}")
    w.create()
    assert w.tap() == 1
    assert w.next().type is rta.Type.RESYNC  # [4] right after the tap
    w.join()
    assert w.tap() == 2
    assert w.silent()


def test_rta_subscribe_status_fails_the_subscribe(wire) -> None:
    w = wire("{rta: {subscribe_status: 1002}}", when="{nth: 1}",
             match='match: {path: "/connections/*"}')
    failed = w.subscribe(1)
    assert (failed.sequence, failed.status) == (1, rta.Status.SERVICE_UNAVAILABLE)
    assert failed.connection_id is None
    retried = w.subscribe(2)  # the library retries 1002 with backoff: this one goes through
    assert (retried.sequence, retried.status) == (2, rta.Status.SUCCESS)
    assert retried.connection_id
