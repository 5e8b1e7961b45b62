"""MpsdChain: the addons as one entry in mitmproxy's chain, with mitmproxy's guarantees."""

from __future__ import annotations

import asyncio

from mitmproxy.test import taddons
from mitmproxy.test import tflow

from mpsdproxy.addons import MpsdChain
from mpsdproxy.addons import default_addons


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
    from mpsdproxy.addons import later

    seen: list[str] = []
    chain = MpsdChain([Finisher(seen)])

    async def shutting_down() -> None:
        later.soon(seen.append, "queued after an answer")
        chain.done()  # before the loop's next turn

    asyncio.run(shutting_down())
    assert seen == ["queued after an answer", "part done"]
