"""RtaFaults: each `tap:` and `rta:` fault, seen on the wire the title would get.

The addon runs with the fault injector whose scenarios hold the rules, on
mitmproxy's test websocket flows. What the title receives is the message
itself (unless dropped) followed by what the addon injected with
`inject.websocket`, which `Wire` stands in for here (the proxy's end to end
test drives the real one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import command
from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy import websocket
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from wsproto.frame_protocol import Opcode

from mpsdproxy import rta
from mpsdproxy.addons import connfaults
from mpsdproxy.addons import flows
from mpsdproxy.addons.injector import FaultInjector
from mpsdproxy.addons.rtafaults import RtaFaults

LOBBY = "scid-1~LobbySession~lobby-1"
GAME = "scid-1~GameSession~game-1"


class Wire:
    """Stands in for mitmproxy's proxyserver: the frames `inject.websocket` would send."""

    def __init__(self) -> None:
        self.sent: list[tuple[bool, bytes]] = []

    @command.command("inject.websocket")
    def inject_websocket(self, flow: mflow.Flow, to_client: bool, message: bytes,
                         is_text: bool = True) -> None:
        self.sent.append((to_client, message))


class Title:
    """One RTA websocket through the addon: what the title and the service receive."""

    def __init__(self, rf: RtaFaults, wire: Wire, flow: http.HTTPFlow,
                 injector: FaultInjector, tctx: taddons.context) -> None:
        self.rf, self.wire, self.flow = rf, wire, flow
        self.injector, self.tctx = injector, tctx

    def frame(self, text: str | bytes, *, from_client: bool = False) -> list[bytes]:
        """Send one frame; the frames the other side receives for it, in order."""
        content = text.encode() if isinstance(text, str) else text
        message = websocket.WebSocketMessage(Opcode.TEXT, from_client, content)
        assert self.flow.websocket is not None
        self.flow.websocket.messages.append(message)
        before = len(self.wire.sent)
        self.rf.websocket_message(self.flow)
        got = [] if message.dropped else [message.content]
        return got + self.injected(before)

    def injected(self, since: int = 0) -> list[bytes]:
        """What was injected (to the title) from `since` on; each passes the hook too, as
        mitmproxy hands injected messages to addons."""
        out = []
        for to_client, frame in self.wire.sent[since:]:
            assert to_client
            out.append(frame)
        return out

    def echo(self, frames: list[bytes]) -> None:
        """Injected frames come back through the hook, as mitmproxy sends them."""
        assert self.flow.websocket is not None
        for frame in frames:
            self.flow.websocket.messages.append(
                websocket.WebSocketMessage(Opcode.TEXT, False, frame, injected=True))
            self.rf.websocket_message(self.flow)


def tap(resource: str, change_number: int) -> str:
    return rta.tap_message(0, [rta.Tap(resource, change_number, "branch-1", "sub-1")], "ncid-1")


def numbers(frames: list[bytes]) -> list[tuple[str, int | None]]:
    """The taps in these frames: (session, changeNumber)."""
    out = []
    for frame in frames:
        message = rta.decode(frame, from_client=False)
        assert message is not None
        out += [(t.session, t.change_number) for t in message.taps]
    return out


def rta_flow() -> http.HTTPFlow:
    flow = tflow.twebsocketflow()
    flow.request.headers["Sec-WebSocket-Protocol"] = rta.SUBPROTOCOL
    assert flow.websocket is not None
    flow.websocket.messages = []
    return flow


@pytest.fixture
def under(tmp_path: Path) -> Iterator[Callable[[str], Title]]:
    """A title on an RTA websocket, under a scenario of these rules (the addon finds the
    injector among mitmproxy's addons by itself)."""
    with contextlib.ExitStack() as stack:
        def make(rules: str) -> Title:
            path = tmp_path / "rta.yaml"
            path.write_text(f"name: rta-test\nrules:\n{rules}", encoding="utf-8")
            injector, rf, wire = FaultInjector(), RtaFaults(), Wire()
            tctx = stack.enter_context(taddons.context(injector, rf, wire))
            tctx.configure(injector, mpsd_scenario=[str(path)])
            return Title(rf, wire, rta_flow(), injector, tctx)

        yield make


def lobby(n: int) -> list[tuple[str, int]]:
    return [(LOBBY.lower(), n)]


def test_drop_the_second_tap_never_reaches_the_title(under: Callable[[str], Title]) -> None:
    title = under("""
  - name: missed-tap
    when: {nth: 2}
    fault: {tap: drop}
""")
    assert numbers(title.frame(tap(LOBBY, 2))) == lobby(2)
    assert title.frame(tap(LOBBY, 3)) == []
    assert numbers(title.frame(tap(LOBBY, 4))) == lobby(4)
    assert title.flow.metadata[flows.FAULT_NOTE]["fault"] == "tap:drop"
    assert "missed-tap: 3 taps matched, 1 fired" in "\n".join(
        title.injector.scenarios.count_lines())


def test_duplicate_sends_the_tap_again_right_after(under: Callable[[str], Title]) -> None:
    title = under("""
  - name: twice
    fault: {tap: duplicate}
""")
    got = title.frame(tap(LOBBY, 2))
    assert numbers(got) == lobby(2) + lobby(2)
    title.echo(got[1:])
    assert title.flow.metadata[flows.FAULT_NOTE]["injected"] is True
    assert title.flow.metadata[flows.FAULT_NOTE]["rule"] == "twice"


def test_reorder_delivers_the_tap_after_the_next_one(under: Callable[[str], Title]) -> None:
    title = under("""
  - name: out-of-order
    when: {nth: 1}
    fault: {tap: reorder}
""")

    async def run() -> tuple[list[bytes], list[bytes]]:
        return title.frame(tap(LOBBY, 2)), title.frame(tap(LOBBY, 3))

    held, next_one = asyncio.run(run())
    assert held == []
    assert numbers(next_one) == lobby(3) + lobby(2)
    title.echo(next_one[1:])
    assert title.flow.metadata[flows.FAULT_NOTE]["rule"] == "out-of-order"
    assert title.flow.metadata[flows.FAULT_NOTE]["released"] is True


def test_stale_names_a_change_number_the_title_already_has(under: Callable[[str], Title]) -> None:
    title = under("""
  - name: old-news
    when: {nth: 2}
    fault: {tap: stale}
""")
    assert numbers(title.frame(tap(LOBBY, 2))) == lobby(2)
    assert numbers(title.frame(tap(LOBBY, 5))) == lobby(2)  # the last it was told
    assert title.flow.metadata[flows.FAULT_NOTE]["stale_changeNumber"] == 2


def test_stale_without_history_is_one_less(under: Callable[[str], Title]) -> None:
    title = under("""
  - name: old-news
    fault: {tap: stale}
""")
    assert numbers(title.frame(tap(LOBBY, 7))) == lobby(6)


def test_delay_sends_the_tap_later(under: Callable[[str], Title]) -> None:
    title = under("""
  - name: late-tap
    fault: {tap: {delay: 50ms}}
""")
    async def run() -> tuple[list[bytes], list[bytes]]:
        now = title.frame(tap(LOBBY, 2))
        await asyncio.sleep(0.3)
        return now, title.injected()

    now, later = asyncio.run(run())
    assert now == []
    assert numbers(later) == lobby(2)
    assert title.flow.metadata[flows.FAULT_NOTE]["delay_ms"] == 50.0


def test_a_tap_rule_matches_the_taps_session_by_path(under: Callable[[str], Title]) -> None:
    title = under("""
  - name: lobby-only
    match: {path: "*/sessiontemplates/LobbySession/sessions/*", resource: session}
    fault: {tap: drop}
""")
    assert title.frame(tap(LOBBY, 2)) == []
    assert numbers(title.frame(tap(GAME, 2))) == [(GAME.lower(), 2)]


def test_per_session_counts_each_sessions_taps(under: Callable[[str], Title]) -> None:
    title = under("""
  - name: first-per-session
    per: session
    when: {nth: 1}
    fault: {tap: drop}
""")
    assert title.frame(tap(LOBBY, 2)) == []
    assert title.frame(tap(GAME, 2)) == []
    assert numbers(title.frame(tap(LOBBY, 3))) == lobby(3)


def test_one_tap_of_an_event_is_dropped_and_the_other_goes_on(
        under: Callable[[str], Title]) -> None:
    title = under("""
  - name: lobby-only
    match: {path: "*/LobbySession/*"}
    fault: {tap: drop}
""")
    both = rta.tap_message(0, [rta.Tap(LOBBY, 2), rta.Tap(GAME, 4)], "ncid-1")
    assert numbers(title.frame(both)) == [(GAME.lower(), 4)]


def test_resync_follows_the_message(under: Callable[[str], Title]) -> None:
    title = under("""
  - name: resync-now
    when: {nth: 1}
    fault: {rta: resync}
""")
    got = title.frame(tap(LOBBY, 2))
    assert numbers(got[:1]) == lobby(2)
    assert got[1:] == [rta.resync_message().encode()]


def test_close_drops_the_websocket(under: Callable[[str], Title],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    title = under("""
  - name: lost-socket
    match: {resource: session}
    fault: {rta: close}
""")
    near, far = socket.socketpair()
    monkeypatch.setattr(connfaults, "client_socket", lambda flow: near)
    try:
        result = title.frame(rta.subscribe_result_message(1, 0, 0, {"ConnectionId": "c-1"}))
        assert len(result) == 1  # a subscribe result names no session: not matched
        assert title.frame(tap(LOBBY, 2)) == []
        far.settimeout(2)
        assert far.recv(100) == b""  # the title's end sees the connection end, no frame
    finally:
        near.close()
        far.close()


def test_subscribe_status_fails_the_subscribe(under: Callable[[str], Title]) -> None:
    title = under("""
  - name: busy
    when: {first: 1}
    fault: {rta: {subscribe_status: 1001}}
""")
    sent = rta.subscribe_message(1)
    message = websocket.WebSocketMessage(Opcode.TEXT, True, sent.encode())
    assert title.flow.websocket is not None
    title.flow.websocket.messages.append(message)
    title.rf.websocket_message(title.flow)
    assert message.dropped  # the service never hears it
    answer = title.injected()
    assert len(answer) == 1
    decoded = rta.decode(answer[0], from_client=False)
    assert decoded is not None and (decoded.sequence, decoded.status) == (1, 1001)
    assert isinstance(json.loads(answer[0])[3], str)  # the library reads the error text
    assert title.frame(sent, from_client=True) == [sent.encode()]  # the retry goes through


def test_the_kill_switch_stops_rta_faults(under: Callable[[str], Title]) -> None:
    title = under("""
  - name: missed-tap
    fault: {tap: drop}
""")
    title.tctx.configure(title.injector, mpsd_inject=False)
    assert numbers(title.frame(tap(LOBBY, 2))) == lobby(2)


def test_other_websockets_are_left_alone(under: Callable[[str], Title]) -> None:
    title = under("""
  - name: missed-tap
    fault: {tap: drop}
""")
    title.flow = tflow.twebsocketflow()
    assert title.flow.websocket is not None
    title.flow.websocket.messages = []
    assert numbers(title.frame(tap(LOBBY, 2))) == lobby(2)


def test_a_websocket_on_the_older_subprotocol_is_rta_too(under: Callable[[str], Title]) -> None:
    title = under("""
  - name: missed-tap
    fault: {tap: drop}
""")
    title.flow = rta_flow()
    title.flow.request.headers["Sec-WebSocket-Protocol"] = "rta.xboxlive.com"
    assert numbers(title.frame(tap(LOBBY, 2))) == []


def test_http_rules_never_touch_the_websocket(under: Callable[[str], Title]) -> None:
    title = under("""
  - name: a-request-rule
    fault: {status: 503}
""")
    assert numbers(title.frame(tap(LOBBY, 2))) == lobby(2)
