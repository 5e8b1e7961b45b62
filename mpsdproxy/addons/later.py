"""Work that can wait until the title has its answer: the `AfterAnswer` queue.

mitmproxy sends a response as soon as every response hook has returned. Some
of what the addons do with a finished exchange changes nothing the title
receives: judging it (the live verdicts), printing its log line, keeping the
tracked session in step with it. Done inside the hook, that work delays every
answer; queued with `AfterAnswer.soon`, it runs once the answer has gone out.

The queue runs on the event loop's next turn, in the order the work was
queued, and before the loop handles any socket event that arrives after the
answer was sent: the proxy never reads the title's next request before the
work for its last answer is done. One turn runs everything queued during the
turn before, so at high load the work also runs in batches. Without a running
event loop (hooks called directly, as the unit tests do) work runs at once.

`MpsdChain` owns one queue and hands it to the parts that need it; it drains
the queue at shutdown, before any part finishes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["AfterAnswer"]


#: One queued job: what to call and its arguments (a plain pair: one is queued for
#: nearly every answer, and a named tuple costs a Python-level constructor call).
Job = tuple[Callable[..., Any], tuple[Any, ...]]


class AfterAnswer:
    """A queue of jobs that run on the event loop's next turn, after the answer is out."""

    def __init__(self) -> None:
        self.queue: deque[Job] = deque()
        #: The loop a drain is scheduled on, if any: a loop that stopped before its turn
        #: came (a proxy shut down) must not keep the next loop's work waiting.
        self.scheduled_on: asyncio.AbstractEventLoop | None = None

    def soon(self, job: Callable[..., Any], *args: Any) -> None:
        """Run `job(*args)` once the current hook round is over (at once without a loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.drain()  # whatever an earlier loop left, first
            _call(job, args)
            return
        if self.scheduled_on is not loop:
            self.drain()
            loop.call_soon(self.drain)
            self.scheduled_on = loop
        self.queue.append((job, args))

    def drain(self) -> None:
        """Run every queued job now, in order (shutdown calls it so nothing queued is lost)."""
        self.scheduled_on = None
        while self.queue:
            _call(*self.queue.popleft())

    def pending(self) -> int:
        """How many jobs wait to run."""
        return len(self.queue)


def _call(call: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        call(*args)
    except Exception:  # noqa: BLE001 - one job's bug must not cost the others their turn
        logger.exception(f"Addon error: {getattr(call, '__qualname__', call)}")
