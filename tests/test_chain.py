"""MpsdChain: the addons as one entry in mitmproxy's chain, with mitmproxy's guarantees."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy import websocket
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from wsproto.frame_protocol import Opcode

from mpsdproxy.addons import MpsdChain
from mpsdproxy.addons import UnforwardedHookError
from mpsdproxy.addons import default_addons
from mpsdproxy.addons.later import AfterAnswer


def test_every_parts_options_and_commands_are_registered():
    with taddons.context(*default_addons()) as alone:
        options, commands = set(alone.options.keys()), set(alone.master.commands.commands)
    with taddons.context(MpsdChain()) as tctx:
        assert options <= set(tctx.options.keys())
        assert commands <= set(tctx.master.commands.commands)
        assert {"mpsd.counters", "mpsd.inject.on"} <= set(tctx.master.commands.commands)


def test_options_reach_every_part(tmp_path):
    chain = MpsdChain()
    with taddons.context(chain) as tctx:
        tctx.configure(chain, mpsd_record=str(tmp_path / "r.jsonl"), mpsd_quiet=True)
        recorder = next(p for p in chain.parts if type(p).__name__ == "Recorder")
        assert recorder.writer is not None
        chain.done()
        assert recorder.writer is None


class Part:
    def __init__(self, name: str, seen: list[str], delay: bool = False,
                 boom: bool = False) -> None:
        self.name, self.seen, self.delay, self.boom = name, seen, delay, boom

    def request(self, flow):
        self.seen.append(f"{self.name} start")
        if self.boom:
            raise RuntimeError("a part's bug")
        if self.delay:
            async def later():
                await asyncio.sleep(0.01)
                self.seen.append(f"{self.name} end")
            return later()
        self.seen.append(f"{self.name} end")
        return None


def test_a_parts_awaitable_is_awaited_before_the_next_part_sees_the_flow():
    seen: list[str] = []
    chain = MpsdChain([Part("a", seen), Part("b", seen, delay=True), Part("c", seen)])
    pending = chain.request(tflow.tflow())
    assert seen == ["a start", "a end", "b start"]
    asyncio.run(pending)
    assert seen == ["a start", "a end", "b start", "b end", "c start", "c end"]


def test_without_awaitables_the_hook_returns_nothing_to_await():
    seen: list[str] = []
    chain = MpsdChain([Part("a", seen), Part("b", seen)])
    assert chain.request(tflow.tflow()) is None
    assert seen == ["a start", "a end", "b start", "b end"]


def test_a_failing_part_does_not_keep_the_flow_from_the_parts_after_it(caplog):
    seen: list[str] = []
    chain = MpsdChain([Part("a", seen, boom=True), Part("b", seen)])
    assert chain.request(tflow.tflow()) is None
    assert seen == ["a start", "b start", "b end"]
    assert "Addon error" in caplog.text and "a part's bug" in caplog.text


class Finisher:
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def done(self) -> None:
        self.seen.append("part done")


def test_work_waiting_for_an_answer_is_done_before_any_part_finishes():
    seen: list[str] = []
    chain = MpsdChain([Finisher(seen)])

    async def shutting_down() -> None:
        chain.after.soon(seen.append, "queued after an answer")
        chain.done()  # before the loop's next turn

    asyncio.run(shutting_down())
    assert seen == ["queued after an answer", "part done"]


class Queuer:
    """A part that queues work after the answer, on the queue the chain hands it."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen
        self.after_answer = AfterAnswer()

    def response(self, flow):
        self.after_answer.soon(self.seen.append, "judged")


def test_the_chain_hands_its_queue_to_the_parts_that_queue_work():
    seen: list[str] = []
    chain = MpsdChain([Queuer(seen), Finisher(seen)])

    async def answer_then_shut_down() -> None:
        chain.response(tflow.tflow(resp=True))
        assert seen == []  # waits for the answer to go out
        chain.done()

    asyncio.run(answer_then_shut_down())
    assert seen == ["judged", "part done"]


def test_the_default_parts_share_the_chains_queue():
    chain = MpsdChain()
    queued = [p for p in chain.parts if hasattr(p, "after_answer")]
    assert {type(p).__name__ for p in queued} >= {"LiveLog", "VerdictLog"}
    assert all(p.after_answer is chain.after for p in queued)


@pytest.mark.parametrize("hook", ["dns_request",
                                  "tcp_message", "client_connected", "server_connect", "update"])
def test_a_part_with_a_hook_the_chain_does_not_forward_is_refused(hook):
    part = type("Listener", (), {hook: lambda self, *args: None})()
    with pytest.raises(UnforwardedHookError, match=f"Listener defines {hook}") as e:
        MpsdChain([Part("a", []), part])
    assert e.value.part is part and e.value.hooks == [hook]


def test_the_default_parts_only_define_hooks_the_chain_forwards():
    MpsdChain(default_addons())  # does not raise


class Listener:
    """A part that follows a websocket (the RTA connection) and holds one message."""

    def __init__(self, name: str, seen: list[str], hold: bool = False) -> None:
        self.name, self.seen, self.hold = name, seen, hold

    def websocket_start(self, flow):
        self.seen.append(f"{self.name} start")

    def websocket_message(self, flow):
        text = flow.websocket.messages[-1].text
        if not self.hold:
            self.seen.append(f"{self.name} {text}")
            return None

        async def later():
            await asyncio.sleep(0.01)
            self.seen.append(f"{self.name} {text} held")
        return later()

    def websocket_end(self, flow):
        self.seen.append(f"{self.name} end")


def test_websocket_events_reach_the_parts_in_order():
    seen: list[str] = []
    chain = MpsdChain([Listener("a", seen, hold=True), Listener("b", seen)])
    f = tflow.twebsocketflow(messages=False)
    assert chain.websocket_start(f) is None
    f.websocket.messages.append(websocket.WebSocketMessage(Opcode.TEXT, False, b"[4]"))
    pending = chain.websocket_message(f)
    assert seen == ["a start", "b start"]  # b waits until a is done with the message
    asyncio.run(pending)
    chain.websocket_end(f)
    assert seen == ["a start", "b start", "a [4] held", "b [4]", "a end", "b end"]


def test_the_rta_faults_come_right_after_the_injector():
    names = [type(p).__name__ for p in MpsdChain().parts]
    assert names[names.index("FaultInjector") + 1] == "RtaFaults"
    assert names.index("RtaFaults") < names.index("Recorder") < names.index("LiveLog")


def test_a_flows_models_are_freed_once_its_exchange_is_over_and_its_work_ran():
    """mitmproxy's flows die in reference cycles: the models built for one must not
    wait for the garbage collector (a flow stays alive here, as in the proxy until a
    collection)."""
    import gc
    import weakref

    from mpsdproxy.addons import flows

    class Reader:
        after_answer = None

        def response(self, flow):
            exchange = flows.exchange_of(flow)
            self.after_answer.soon(seen.append, exchange.response.status)

    seen: list[int] = []
    chain = MpsdChain([Reader()])
    flow = tflow.tflow(resp=True)
    gc.disable()
    try:
        async def answer() -> weakref.ref:
            chain.response(flow)
            built = weakref.ref(flows.exchange_of(flow))
            assert built() is not None and seen == []  # the queued work still needs it
            await asyncio.sleep(0)
            return built

        built = asyncio.run(answer())
        assert seen == [200]
        assert built() is None  # freed by reference counting, no collection
        assert flows.exchange_of(flow).response.status == 200  # built again on demand
    finally:
        gc.enable()


def test_a_websockets_models_are_kept_until_it_ends():
    from mpsdproxy.addons import flows

    chain = MpsdChain([])
    flow = tflow.twebsocketflow()
    flow.websocket.timestamp_end = None
    before = flows.exchange_of(flow)
    chain.response(flow)  # the 101: messages follow
    chain.after.drain()
    assert flows.exchange_of(flow) is before
    flow.websocket.timestamp_end = 1.0
    chain.websocket_end(flow)
    chain.after.drain()
    assert flows.exchange_of(flow) is not before


def test_log_lines_reach_the_terminal_with_no_control_character_of_a_title():
    """A session name is percent-decoded (`%1B[2J` is an escape sequence): every
    mpsdproxy log line reaches mitmproxy's terminal log escaped, others untouched."""
    import io
    import logging

    from mitmproxy.addons.termlog import TermLogHandler

    out = io.StringIO()
    terminal = TermLogHandler(out)
    terminal.install()
    try:
        with taddons.context(MpsdChain()):
            logging.getLogger("mpsdproxy.addons.injector").warning(
                "PUT sessions/%s: rule stale", "lobby\x1b[2J\x1b]0;owned\x07\r")
            logging.getLogger("mitmproxy.proxy").warning("mitmproxy's own \x1b line")
    finally:
        terminal.uninstall()
    lines = out.getvalue().splitlines()  # other records (asyncio's debug) may come too
    [mpsd] = [line for line in lines if "rule stale" in line]
    [own] = [line for line in lines if "mitmproxy's own" in line]
    assert "\x1b" not in mpsd and "\r" not in mpsd and "\x07" not in mpsd
    assert "sessions/lobby\\x1b[2J\\x1b]0;owned\\x07\\x0d: rule stale" in mpsd
    assert "\x1b" in own
