"""The proxy and the RTA websocket: intercepted by default, each message recorded in
order with the exchanges, and the taps in the live log, through the chain's hooks."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy import websocket
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.test import tutils
from wsproto.frame_protocol import Opcode

from mpsdproxy import faults
from mpsdproxy import recording
from mpsdproxy import resources
from mpsdproxy import rta
from mpsdproxy.addons import MpsdChain
from mpsdproxy.addons import classifier
from mpsdproxy.addons import common
from mpsdproxy.addons import flows
from mpsdproxy.addons import livelog
from mpsdproxy.addons import master
from mpsdproxy.addons import recorder
from mpsdproxy.addons import router
from mpsdproxy.recording import messages

SCID = "00000000-0000-4000-8000-00000000c0de"
SESSION = f"{SCID}~lobbysession~lobby-1"
LOBBY = f"/serviceconfigs/{SCID}/sessionTemplates/lobbysession/sessions/lobby-1"
TOKEN = "XBL3.0 x=2533274800000002;eyJlbmMiOiJBMTI4Q0JDK0hTMjU2In0"
CONNECTION = "11111111-2222-4333-8444-555555555555"
SUBSCRIBE = rta.subscribe_message(1)
SUBSCRIBED = rta.subscribe_result_message(1, 0, 7, {"ConnectionId": CONNECTION})
TAP = rta.tap_message(7, [rta.Tap(SESSION, 3, "b-1", "s-1", "2024-01-01T00:00:00Z")], "n-1")


def rta_flow(host: str = "rta.xboxlive.com") -> http.HTTPFlow:
    """A title's request for the RTA websocket (not answered yet)."""
    headers = http.Headers(host=host, upgrade="websocket", connection="Upgrade",
                           sec_websocket_protocol=rta.SUBPROTOCOL, authorization=TOKEN)
    request = tutils.treq(host=host, port=443, scheme=b"https", method=b"GET",
                          path=b"/connect", headers=headers, content=b"")
    return tflow.tflow(req=request)


def upgraded() -> http.Response:
    """The service's 101: from here on the flow is a websocket."""
    return tutils.tresp(status_code=101, reason=b"Switching Protocols", content=b"",
                        headers=http.Headers(upgrade="websocket", connection="Upgrade",
                                             sec_websocket_protocol=rta.SUBPROTOCOL))


def sd_flow() -> http.HTTPFlow:
    host = "sessiondirectory.xboxlive.com"
    request = tutils.treq(host=host, port=443, scheme=b"https", method=b"GET",
                          path=LOBBY.encode(), headers=http.Headers(host=host), content=b"")
    return tflow.tflow(req=request)


class Dropper:
    """A fault that keeps every tap from the title."""

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if b"shoulderTaps" in flow.websocket.messages[-1].content:
            flow.websocket.messages[-1].drop()


class Teller:
    """A fault that notes it sent the message its hook is about, as RtaFaults does."""

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        flow.metadata[flows.FAULT_NOTE] = {
            "message": len(flow.websocket.messages) - 1, "rule": "late-tap",
            "scenario": "taps", "seed": 7, "fault": "delay", "injected": True}


class Proxy:
    """The chain as mitmproxy drives it: a handshake, then websocket messages."""

    def __init__(self, tctx: taddons.context, chain: MpsdChain) -> None:
        self.tctx, self.chain = tctx, chain

    def exchange(self, f: http.HTTPFlow, reply: http.Response | None = None) -> None:
        self.chain.request(f)
        if reply is not None:
            f.response = reply
        self.chain.response(f)

    def open(self, f: http.HTTPFlow) -> None:
        self.exchange(f, upgraded())
        f.websocket = websocket.WebSocketData()  # as mitmproxy does for a 101
        self.chain.websocket_start(f)

    def send(self, f: http.HTTPFlow, text: str, from_client: bool,
             timestamp: float | None = None) -> None:
        f.websocket.messages.append(
            websocket.WebSocketMessage(Opcode.TEXT, from_client, text.encode(), timestamp))
        self.chain.websocket_message(f)

    def close(self, f: http.HTTPFlow, code: int = 1000, by_client: bool = True) -> None:
        f.websocket.close_code, f.websocket.closed_by_client = code, by_client
        f.websocket.timestamp_end = 946681300.0
        self.chain.websocket_end(f)


def chain_of(out: io.StringIO, *extra: Any) -> MpsdChain:
    return MpsdChain([router.Router(), *extra, classifier.StatusClassifier(),
                      recorder.Recorder(), livelog.LiveLog(out)])


def records(path: Path) -> list[dict[str, Any]]:
    return list(recording.read(path, strict=True, messages=True))


def run(path: Path, out: io.StringIO, *extra: Any, script: Any) -> None:
    chain = chain_of(out, *extra)
    with taddons.context(chain) as tctx:
        tctx.configure(chain, mpsd_record=str(path))
        script(Proxy(tctx, chain))
        chain.done()


# Interception


def test_the_rta_host_is_intercepted_by_default():
    assert set(resources.RTA_HOSTS) <= set(router.DEFAULT_INTERCEPT_HOSTS)
    r = router.Router()
    with taddons.context(r):
        f = rta_flow()
        r.request(f)
    assert common.mark(f)["url"] == "https://rta.xboxlive.com/connect"


def test_the_proxy_decrypts_the_rta_host_and_passes_others_by():
    options = master.routing_options(["regular"], router.DEFAULT_INTERCEPT_HOSTS)
    allowed = " ".join(options["allow_hosts"])
    assert "rta\\.xboxlive\\.com" in allowed
    assert "example" not in allowed


# Recording


def test_each_message_is_a_record_in_order_with_the_exchanges(tmp_path: Path):
    path = tmp_path / "run.jsonl"

    def script(proxy: Proxy) -> None:
        ws = rta_flow()
        proxy.open(ws)
        proxy.send(ws, SUBSCRIBE, True, 946681210.0)
        proxy.send(ws, SUBSCRIBED, False, 946681211.0)
        proxy.exchange(sd_flow(), flows.to_mitmproxy(faults.build("204.get-session")))
        proxy.send(ws, TAP, False, 946681212.0)
        proxy.close(ws)

    run(path, io.StringIO(), script=script)
    lines = records(path)
    assert [r["seq"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert [r.get("kind", "exchange") for r in lines] == [
        "exchange", "websocket", "websocket", "exchange", "websocket", "websocket"]
    handshake, subscribe, subscribed, _, tap, close = lines
    assert handshake["response"]["status"] == 101
    assert TOKEN not in path.read_text()
    assert (subscribe["direction"], subscribe["payload"]) == ("client", {"text": SUBSCRIBE})
    assert subscribe["url"] == "https://rta.xboxlive.com/connect"
    assert subscribe["client"] == "127.0.0.1:22"
    assert subscribe["start"] == recording.timestamp(946681210.0)
    assert subscribed["direction"] == "server"
    assert tap["provenance"] == {"source": "forwarded"}
    decoded = messages.from_record(tap)
    assert rta.decode(decoded.payload, from_client=False).taps[0].change_number == 3
    assert (close["opcode"], close["direction"]) == ("close", "client")
    assert messages.from_record(close).payload == b"\x03\xe8"


def test_a_credential_in_a_message_is_redacted(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    secret = "eyJ" + "a" * 40 + "." + "b" * 60 + "." + "c" * 43

    def script(proxy: Proxy) -> None:
        ws = rta_flow()
        proxy.open(ws)
        proxy.send(ws, json.dumps([1, 2, f"https://x.example/?access_token={secret}"]), True)

    run(path, io.StringIO(), script=script)
    assert secret not in path.read_text()
    assert len(records(path)) == 2


def test_a_dropped_message_is_not_recorded_and_the_log_says_so(tmp_path: Path):
    path, out = tmp_path / "run.jsonl", io.StringIO()

    def script(proxy: Proxy) -> None:
        ws = rta_flow()
        proxy.open(ws)
        proxy.send(ws, TAP, False)
        proxy.send(ws, rta.resync_message(), False)

    run(path, out, Dropper(), script=script)
    assert [json.loads(r["payload"]["text"]) for r in records(path)[1:]] == [[4]]
    tap_line = next(line for line in out.getvalue().splitlines() if " tap " in line)
    assert tap_line.endswith("[dropped]")


def test_a_message_a_fault_sent_says_so(tmp_path: Path):
    path, out = tmp_path / "run.jsonl", io.StringIO()

    def script(proxy: Proxy) -> None:
        ws = rta_flow()
        proxy.open(ws)
        proxy.send(ws, TAP, False)

    run(path, out, Teller(), script=script)
    assert records(path)[-1]["provenance"] == {"source": "injected", "rule": "late-tap",
                                               "scenario": "taps", "seed": 7, "fault": "delay"}
    assert out.getvalue().splitlines()[-1].endswith("[injected: late-tap]")


def test_an_injected_message_without_a_rule_is_still_injected():
    f = rta_flow()
    router.Router().request(f)
    f.response, f.websocket = upgraded(), websocket.WebSocketData()
    f.websocket.messages.append(
        websocket.WebSocketMessage(Opcode.TEXT, False, TAP.encode(), injected=True))
    assert flows.websocket_message_of(f).provenance == {"source": "injected"}


def test_someone_elses_websocket_is_neither_recorded_nor_logged(tmp_path: Path):
    path, out = tmp_path / "run.jsonl", io.StringIO()

    def script(proxy: Proxy) -> None:
        ws = rta_flow("chat.example.com")
        proxy.open(ws)
        proxy.send(ws, TAP, False)
        proxy.close(ws)

    run(path, out, script=script)
    assert records(path) == []
    assert out.getvalue() == ""


# Live log


def test_a_tap_in_the_live_log():
    f = rta_flow()
    f.client_conn.peername = ("127.0.0.1", 50412)
    f.response, f.websocket = upgraded(), websocket.WebSocketData()
    f.websocket.messages.append(websocket.WebSocketMessage(Opcode.TEXT, False, TAP.encode()))
    (line,) = livelog.format_message_lines(flows.websocket_message_of(f))
    assert line.split(" ", 1)[1] == "RTA tap lobby-1 changeNumber 3 -> client 127.0.0.1"


@pytest.mark.parametrize("text, from_client, expected", [
    (SUBSCRIBE, True, f"RTA subscribe #1 {rta.CONNECTIONS_URI} <- client"),
    (SUBSCRIBED, False,
     f"RTA subscribe result #1 status 0 SUCCESS subscription 7 connection {CONNECTION} ->"),
    (rta.subscribe_result_message(2, 1002, 0), False,
     "RTA subscribe result #2 status 1002 SERVICE_UNAVAILABLE subscription 0 ->"),
    (rta.unsubscribe_message(5, 7), True, "RTA unsubscribe #5 subscription 7 <- client"),
    (rta.unsubscribe_result_message(5, 0), False, "RTA unsubscribe result #5 status 0 SUCCESS"),
    (rta.resync_message(), False, "RTA resync -> client"),
    ("hello", False, "WS text 5 bytes -> client"),
])
def test_other_messages_in_the_live_log(text: str, from_client: bool, expected: str):
    message = messages.WebsocketMessage("https://rta.xboxlive.com/connect",
                                        "client" if from_client else "server", "text",
                                        text.encode(), client="127.0.0.1:1")
    (line,) = livelog.format_message_lines(message)
    assert expected in line


def test_one_line_per_tap_of_an_event():
    taps = [rta.Tap(SESSION, 3), rta.Tap(f"{SCID}~lobbysession~lobby-2", 9)]
    message = messages.WebsocketMessage("https://rta.xboxlive.com/connect", "server", "text",
                                        rta.tap_message(7, taps, "n").encode(),
                                        client="10.0.0.2:9")
    lines = livelog.format_message_lines(message)
    assert [line.split(" ", 1)[1] for line in lines] == [
        "RTA tap lobby-1 changeNumber 3 -> client 10.0.0.2",
        "RTA tap lobby-2 changeNumber 9 -> client 10.0.0.2"]


def test_taps_are_logged_in_line_with_the_exchanges():
    out = io.StringIO()
    chain = chain_of(out)

    async def traffic(proxy: Proxy) -> None:
        ws = rta_flow()
        proxy.open(ws)
        proxy.exchange(sd_flow(), flows.to_mitmproxy(faults.build("204.get-session")))
        proxy.send(ws, TAP, False)
        assert out.getvalue() == ""  # printed once the answer is out, in wire order
        await asyncio.sleep(0)

    with taddons.context(chain) as tctx:
        asyncio.run(traffic(Proxy(tctx, chain)))
    handshake, read, tap = out.getvalue().splitlines()
    assert " /connect " in handshake and " 101 Switching Protocols " in handshake
    assert " sessions/lobby-1 " in read
    assert " RTA tap lobby-1 changeNumber 3 " in tap


def test_the_close_in_the_live_log(tmp_path: Path):
    out = io.StringIO()

    def script(proxy: Proxy) -> None:
        ws = rta_flow()
        proxy.open(ws)
        proxy.close(ws, 1006, by_client=False)

    run(tmp_path / "r.jsonl", out, script=script)
    assert "RTA closed by server (1006) -> client 127.0.0.1" in out.getvalue()


def test_quiet_logs_no_message(tmp_path: Path):
    out = io.StringIO()
    chain = chain_of(out)
    with taddons.context(chain) as tctx:
        tctx.configure(chain, mpsd_quiet=True)
        proxy = Proxy(tctx, chain)
        ws = rta_flow()
        proxy.open(ws)
        proxy.send(ws, TAP, False)
        proxy.close(ws)
    assert out.getvalue() == ""
