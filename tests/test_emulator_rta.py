"""The stand-in's Real-Time Activity websocket, in process, over real loopback sockets.

RTA V2 as the client library speaks it (real_time_activity_connection.cpp: subscribe
`[1, seq, uri]` and its result `[1, seq, status, id, data]`, unsubscribe, event `[3, id,
data]`, resync `[4]`; multiplayer_subscription.cpp: the ConnectionId in the subscribe
result, `resource` split on `~`), and the taps the session directory sends a member's
connection when its session changes (protocol notes §3.5). Ids here are synthetic.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import ManualClock
from websockets.exceptions import ConnectionClosed
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect

from mpsdproxy import emulator
from mpsdproxy import model
from mpsdproxy import rta
from mpsdproxy.emulator import server
from mpsdproxy.emulator.state import Change

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/Party-R1"
LOBBY_KEY = f"{SCID}~lobbysession~party-r1"
ANN, BO = "2533274800000011", "2533274800000012"
WAIT = 5.0  # seconds: the longest any frame we expect may take
QUIET = 0.4  # seconds: how long "nothing arrives" is watched for


def open_socket(port: int) -> ClientConnection:
    """An RTA websocket to the stand-in, as the library opens it. Entered at once (websockets
    17.1 warns otherwise); the caller closes it."""
    return connect(f"ws://127.0.0.1:{port}/connect", subprotocols=[rta.SUBPROTOCOL],
                   open_timeout=WAIT).__enter__()


class Title:
    """One console: an RTA websocket and an HTTP client, as the library pairs them."""

    def __init__(self, port: int, user: str, xuid: str, subscription: str) -> None:
        self.xuid = xuid
        self.subscription = subscription
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT, headers={
            "x-xbl-contract-version": "107",
            "Authorization": f"XBL3.0 x={user};token-of-{user}",
        })
        self.ws = open_socket(port)
        self.connection_id = ""

    def subscribe(self, sequence: int = 1, uri: str = rta.CONNECTIONS_URI) -> rta.Message:
        self.ws.send(rta.subscribe_message(sequence, uri))
        answer = self.next()
        if answer.connection_id:
            self.connection_id = answer.connection_id
        return answer

    def next(self, timeout: float = WAIT) -> rta.Message:
        message = rta.decode(self.ws.recv(timeout=timeout), from_client=False)
        assert message is not None
        return message

    def quiet(self) -> bool:
        """Whether nothing arrives for a little while."""
        try:
            self.ws.recv(timeout=QUIET)
        except TimeoutError:
            return True
        return False

    def member(self) -> dict[str, Any]:
        """This console's member with its connection, as the library writes it
        (multiplayer_session_member.cpp: properties.system.connection, subscription)."""
        return {"constants": {"system": {"xuid": self.xuid, "initialize": True}},
                "properties": {"system": {"active": True, "connection": self.connection_id,
                                          "subscription": {"id": self.subscription,
                                                           "changeTypes": ["everything"]}}}}

    def join(self, path: str = LOBBY) -> dict[str, Any]:
        return self.write(path, {"members": {"me": self.member()}})

    def write(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.http.put(path, json=body)
        assert answer.status_code in (200, 201), (answer.status_code, answer.text)
        return answer.json()

    def close(self) -> None:
        self.ws.close()
        self.http.close()


@pytest.fixture
def standin() -> Iterator[tuple[emulator.Emulator, int]]:
    with emulator.running() as running:
        yield running


@pytest.fixture
def pair(standin: tuple[emulator.Emulator, int]) -> Iterator[tuple[Title, Title]]:
    _, port = standin
    ann = Title(port, "console-ann", ANN, "A1B2C3D4-0000-4000-8000-00000000000A")
    bo = Title(port, "console-bo", BO, "A1B2C3D4-0000-4000-8000-00000000000B")
    try:
        yield ann, bo
    finally:
        ann.close()
        bo.close()


def switch(port: int, method: str, action: str, body: Any = None) -> Any:
    answer = httpx.request(method, f"http://127.0.0.1:{port}/_emulator/{action}",
                           json=body, timeout=WAIT)
    assert answer.status_code == 200, answer.text
    return answer.json()


# -- subscribing ----------------------------------------------------------------------------


def test_subscribe_to_connections_answers_a_connection_id(pair: tuple[Title, Title]) -> None:
    ann, bo = pair
    first = ann.subscribe(sequence=1)
    assert (first.type, first.sequence, first.status, first.subscription_id) == \
        (rta.Type.SUBSCRIBE, 1, rta.Status.SUCCESS, 0)
    assert first.connection_id
    assert bo.subscribe().connection_id not in (None, first.connection_id)
    again = ann.subscribe(sequence=2)  # the same resource on the same socket
    assert (again.subscription_id, again.connection_id) == (0, first.connection_id)


def test_other_resources_answer_unknown_resource(pair: tuple[Title, Title]) -> None:
    ann, _ = pair
    ann.ws.send(rta.subscribe_message(7, "https://social.xboxlive.com/users/xuid(1)/friends"))
    refused = ann.next()
    assert (refused.sequence, refused.status, refused.subscription_id) == \
        (7, rta.Status.UNKNOWN_RESOURCE, None)
    ann.ws.send("not RTA at all")  # ignored; the socket stays up
    assert ann.subscribe(sequence=8).status == rta.Status.SUCCESS


def test_unsubscribe_answers_and_stops_the_taps(pair: tuple[Title, Title],
                                                standin: tuple[emulator.Emulator, int]) -> None:
    ann, _ = pair
    subscribed = ann.subscribe()
    ann.join()
    assert ann.next().type is rta.Type.EVENT  # its own write
    assert subscribed.subscription_id is not None
    ann.ws.send(rta.unsubscribe_message(2, subscribed.subscription_id))
    done = ann.next()
    assert (done.type, done.sequence, done.status) == (rta.Type.UNSUBSCRIBE, 2, 0)
    ann.ws.send(rta.unsubscribe_message(3, 99))
    assert ann.next().status == rta.Status.UNKNOWN_RESOURCE
    switch(standin[1], "POST", "change", {"session": LOBBY})
    assert ann.quiet()


# -- taps -----------------------------------------------------------------------------------


def test_a_write_by_one_taps_the_other_with_the_new_change_number(
        pair: tuple[Title, Title]) -> None:
    ann, bo = pair
    ann.subscribe()
    bo.subscribe()
    ann.join()
    ann.next()  # the tap for its own join
    joined = bo.join()
    tap_event = ann.next()
    assert tap_event.type is rta.Type.EVENT and tap_event.subscription_id == 0
    (tap,) = tap_event.taps
    assert tap.resource == LOBBY_KEY
    assert tap.change_number == joined["changeNumber"] == 2
    assert tap.branch == joined["branch"]
    assert tap.subscription == ann.subscription.lower()
    assert tap.timestamp and isinstance(tap_event.data["ncid"], str)
    assert tap_event.data["shoulderTaps"][0]["resourceType"] == rta.RESOURCE_TYPE
    mine = bo.next()  # the writer is tapped too (the library drops what it already has)
    assert [t.change_number for t in mine.taps] == [2]


def test_a_handle_and_a_changed_session_tap_too(pair: tuple[Title, Title],
                                                standin: tuple[emulator.Emulator, int]) -> None:
    ann, _ = pair
    ann.subscribe()
    ann.join()
    ann.next()
    handle = ann.http.post("/handles", json={"version": 1, "type": "activity", "sessionRef": {
        "scid": SCID, "templateName": "LobbySession", "name": "Party-R1"}})
    assert handle.status_code == 201, handle.text
    assert [t.change_number for t in ann.next().taps] == [2]  # as raw/052_w.txt shows
    switch(standin[1], "POST", "change", {"session": LOBBY})
    assert [t.change_number for t in ann.next().taps] == [3]


def test_a_member_without_a_connection_hears_nothing(pair: tuple[Title, Title]) -> None:
    ann, bo = pair
    ann.subscribe()
    bo.write(LOBBY, {"members": {"me": {"constants": {"system": {"xuid": BO}}}}})
    assert ann.quiet()


def test_a_timer_that_removes_a_reservation_taps(standin: Any) -> None:
    clock = ManualClock(100.0)
    emu = emulator.Emulator(clock=clock)
    with emulator.running(emulator=emu) as (_, port):
        ann = Title(port, "console-ann", ANN, "sub-ann")
        try:
            ann.subscribe()
            created = ann.write(LOBBY, {
                "constants": {"system": {"reservedRemovalTimeout": 1000}},
                "members": {"me": ann.member(),
                            "reserve_0": {"constants": {"system": {"xuid": BO}}}}})
            assert [t.change_number for t in ann.next().taps] == [created["changeNumber"]]
            clock.now += 2
            assert ann.http.get(LOBBY).status_code == 200  # the service fires timers here
            assert [t.change_number for t in ann.next().taps] == [created["changeNumber"] + 1]
        finally:
            ann.close()


# -- the switches ---------------------------------------------------------------------------


def test_resync_sends_4_to_every_socket(pair: tuple[Title, Title],
                                        standin: tuple[emulator.Emulator, int]) -> None:
    ann, bo = pair
    ann.subscribe()
    bo.subscribe()
    assert switch(standin[1], "POST", "resync")["resync"] == 2
    for title in (ann, bo):
        assert json.loads(title.ws.recv(timeout=WAIT)) == [rta.Type.RESYNC]


def test_close_drops_every_socket_and_a_reconnect_reclaims_its_id(
        pair: tuple[Title, Title], standin: tuple[emulator.Emulator, int]) -> None:
    ann, bo = pair
    ann.subscribe()
    bo.subscribe()
    ann.join()
    ann.next()
    listed = switch(standin[1], "GET", "rta")["rta"]
    assert {s["connection_id"] for s in listed} == {ann.connection_id, bo.connection_id}
    assert switch(standin[1], "POST", "rta/close")["closed"] == 2
    for title in (ann, bo):
        with pytest.raises(ConnectionClosed) as closed:
            title.ws.recv(timeout=WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert switch(standin[1], "GET", "rta")["rta"] == []

    old = ann.connection_id  # the older library resubscribes to .../connections/<old id>
    ann.ws.close()
    ann.ws = open_socket(standin[1])
    assert ann.subscribe(uri=rta.CONNECTIONS_URI + old).connection_id == old
    switch(standin[1], "POST", "change", {"session": LOBBY})
    assert [t.change_number for t in ann.next().taps] == [2]


def test_rta_switches_need_the_server(standin: tuple[emulator.Emulator, int]) -> None:
    emu, _ = standin
    request = model.Request("POST", "http://localhost/_emulator/resync", model.Headers(), b"")
    assert server.answer(emu, request).status == 404


# -- the handshake and the rest of HTTP -------------------------------------------------------


def test_connect_without_the_subprotocol_is_refused(standin: tuple[emulator.Emulator, int]
                                                    ) -> None:
    _, port = standin
    with pytest.raises(InvalidStatus) as refused:
        with connect(f"ws://127.0.0.1:{port}/connect", open_timeout=WAIT):
            pass
    assert refused.value.response.status_code == 400
    assert rta.SUBPROTOCOL.encode() in refused.value.response.body
    plain = httpx.get(f"http://127.0.0.1:{port}/connect", timeout=WAIT)
    assert plain.status_code == 400 and "websocket" in plain.text


@pytest.mark.parametrize(("offered", "chosen"), [
    (["rta.xboxlive.com"], "rta.xboxlive.com"),  # the public capture's privacy sockets
    (["rta.xboxlive.com", rta.SUBPROTOCOL], rta.SUBPROTOCOL),
])
def test_the_older_subprotocol_is_answered_as_the_service_answers_it(
        standin: tuple[emulator.Emulator, int], offered: list[str], chosen: str) -> None:
    _, port = standin
    with connect(f"ws://127.0.0.1:{port}/connect", subprotocols=offered,
                 open_timeout=WAIT) as ws:
        assert ws.subprotocol == chosen
        ws.send(json.dumps([1, 1, rta.CONNECTIONS_URI]))
        answer = rta.decode(ws.recv(timeout=WAIT), from_client=False)
    assert answer is not None and answer.status == rta.Status.SUCCESS and answer.connection_id


def test_http_keeps_alive_beside_a_websocket(pair: tuple[Title, Title]) -> None:
    ann, _ = pair
    ann.subscribe()
    for _ in range(3):
        assert ann.http.get(LOBBY).status_code == 204  # one keep-alive connection
    ws: ClientConnection = ann.ws
    ws.ping().wait(WAIT)


def test_watch_hears_each_change_once(standin: tuple[emulator.Emulator, int]) -> None:
    emu, port = standin
    heard: list[Change] = []
    stop = server.watch(emu, heard.append)
    try:
        ann = Title(port, "console-ann", ANN, "sub-ann")
        try:
            ann.join()
            ann.http.get(LOBBY)
            emu.change(LOBBY)
        finally:
            ann.close()
    finally:
        stop()
    emu.change(LOBBY)
    assert [(c.key, c.change_number) for c in heard] == [(LOBBY_KEY, 1), (LOBBY_KEY, 2)]
