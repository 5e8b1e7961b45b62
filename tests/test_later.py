"""Work queued until the answer is out: order, errors, shutdown, loops that stop."""

from __future__ import annotations

import asyncio
import socket

import pytest

from mpsdproxy.addons.later import AfterAnswer


@pytest.fixture
def later() -> AfterAnswer:
    return AfterAnswer()


def test_without_a_running_loop_work_runs_at_once(later: AfterAnswer) -> None:
    done: list[int] = []
    later.soon(done.append, 1)
    assert done == [1]
    assert later.pending() == 0


def test_work_waits_for_the_hook_round_then_runs_in_order(later: AfterAnswer) -> None:
    done: list[str] = []

    async def main() -> None:
        later.soon(done.append, "first")
        later.soon(done.append, "second")
        assert done == []  # still inside the "hook"
        await asyncio.sleep(0)
        assert done == ["first", "second"]

    asyncio.run(main())


def test_work_runs_before_a_socket_event_that_comes_after_it(later: AfterAnswer) -> None:
    """The title's next request is read only after the work for its last answer."""
    seen: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        got = loop.create_future()

        def readable() -> None:
            seen.append("next request read")
            ours.recv(100)
            loop.remove_reader(ours)
            got.set_result(None)

        loop.add_reader(ours, readable)
        later.soon(seen.append, "work for the last answer")
        theirs.send(b"GET / HTTP/1.1\r\n\r\n")  # arrives while the hook round runs
        await got
        ours.close()
        theirs.close()

    asyncio.run(main())
    assert seen == ["work for the last answer", "next request read"]


def test_a_failing_job_is_logged_and_the_next_still_runs(later: AfterAnswer,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    done: list[int] = []

    def broken() -> None:
        raise RuntimeError("boom")

    async def main() -> None:
        later.soon(broken)
        later.soon(done.append, 2)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert done == [2]
    assert "Addon error" in caplog.text and "boom" in caplog.text


def test_drain_runs_what_waits_now(later: AfterAnswer) -> None:
    done: list[int] = []

    async def main() -> None:
        later.soon(done.append, 1)
        assert later.pending() == 1
        later.drain()
        assert done == [1]
        await asyncio.sleep(0)  # the scheduled turn finds nothing left
        assert done == [1]

    asyncio.run(main())


def test_a_loop_that_stopped_before_its_turn_does_not_hold_the_next_loops_work(
        later: AfterAnswer) -> None:
    done: list[str] = []

    first = asyncio.new_event_loop()
    first.call_soon(later.soon, done.append, "left by the first loop")
    first.call_soon(first.stop)  # stops before the turn that would run the work
    first.run_forever()
    first.close()
    assert done == []

    async def second() -> None:
        later.soon(done.append, "second loop")
        await asyncio.sleep(0)

    asyncio.run(second())
    assert done == ["left by the first loop", "second loop"]


def test_two_queues_keep_their_work_apart() -> None:
    """Nothing is shared between queues: each chain drains only its own."""
    done: list[str] = []
    first, second = AfterAnswer(), AfterAnswer()

    async def main() -> None:
        first.soon(done.append, "first")
        second.soon(done.append, "second")
        second.drain()
        assert done == ["second"]
        assert (first.pending(), second.pending()) == (1, 0)
        await asyncio.sleep(0)
        assert done == ["second", "first"]

    asyncio.run(main())
