"""Work that can wait until the title has its answer.

mitmproxy sends a response as soon as every response hook has returned. Some
of what the addons do with a finished exchange changes nothing the title
receives: judging it (the live verdicts), printing its log line, keeping the
tracked session in step with it. Done inside the hook, that work delays every
answer; queued with `soon`, it runs once the answer has gone out.

The queue runs on the event loop's next turn, in the order the work was
queued, and before the loop handles any socket event that arrives after the
answer was sent: the proxy never reads the title's next request before the
work for its last answer is done. One turn runs everything queued during the
turn before, so at high load the work also runs in batches. Without a running
event loop (hooks called directly, as the unit tests do) work runs at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

_queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
#: The loop a drain is scheduled on, if any: a loop that stopped before its turn came
#: (a proxy shut down) must not keep the next loop's work waiting.
_scheduled_on: asyncio.AbstractEventLoop | None = None


def soon(job: Callable[..., Any], *args: Any) -> None:
    """Run `job(*args)` once the current hook round is over (at once without a loop)."""
    global _scheduled_on
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        drain()  # whatever an earlier loop left, first
        _call(job, args)
        return
    if _scheduled_on is not loop:
        drain()
        loop.call_soon(drain)
        _scheduled_on = loop
    _queue.append((job, args))


def drain() -> None:
    """Run every queued job now, in order (shutdown calls it so nothing queued is lost)."""
    global _scheduled_on
    _scheduled_on = None
    while _queue:
        job, args = _queue.popleft()
        _call(job, args)


def pending() -> int:
    """How many jobs wait to run."""
    return len(_queue)


def _call(job: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        job(*args)
    except Exception:  # noqa: BLE001 - one job's bug must not cost the others their turn
        logger.exception(f"Addon error: {getattr(job, '__qualname__', job)}")
