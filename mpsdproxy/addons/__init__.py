"""The mpsdproxy addons, one per module, in the order a request meets them."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

from mpsdproxy.addons import flows
from mpsdproxy.addons.later import AfterAnswer

logger = logging.getLogger(__name__)


def default_addons() -> list[Any]:
    """Every mpsdproxy addon in chain order (DESIGN.md, "One request's way through").

    Each is inert until its options are set, so the full chain is always loaded.
    """
    from mpsdproxy.addons import bodycap
    from mpsdproxy.addons import classifier
    from mpsdproxy.addons import injector
    from mpsdproxy.addons import livelog
    from mpsdproxy.addons import recorder
    from mpsdproxy.addons import replayer
    from mpsdproxy.addons import router
    from mpsdproxy.addons import rtafaults  # helper "faults": a missing module fails loudly
    from mpsdproxy.addons import standin
    from mpsdproxy.addons import sweep
    from mpsdproxy.addons import verdictlog

    faults = injector.FaultInjector()
    fault_sweep = sweep.Sweep(faults)
    return [
        router.Router(),
        bodycap.LargeBodies(),
        replayer.Replayer(),
        standin.StandIn(),
        fault_sweep,  # arms its cell just before the injector gives it
        faults,
        rtafaults.RtaFaults(),
        classifier.StatusClassifier(),
        recorder.Recorder(),
        fault_sweep.settler,  # the call ended (and is recorded): its cell is settled
        livelog.LiveLog(),
        verdictlog.VerdictLog(),
    ]


#: The events the mpsdproxy addons act on, each flow's first.
FLOW_EVENTS = ("request", "responseheaders", "response", "error")
#: The events a request is admitted or refused on (`access`), and a graceful stop
#: counts an exchange in flight from (`master.GracefulStop`).
GUARD_EVENTS = ("http_connect", "requestheaders", "client_disconnected")
#: A websocket flow's events after its 101 `response`: the RTA connection's messages
#: (mitmproxy's `flow.websocket.messages[-1]` is the one `websocket_message` is about).
WEBSOCKET_EVENTS = ("websocket_start", "websocket_message", "websocket_end")
LIFECYCLE_EVENTS = ("configure", "running", "done")
#: The events after which a flow's model values are no longer needed (`flows.forget`).
ENDING_EVENTS = ("response", "error", "websocket_end")
#: Hooks the chain hands its parts itself (`load` registers options and commands).
FORWARDED = frozenset({*FLOW_EVENTS, *GUARD_EVENTS, *WEBSOCKET_EVENTS, *LIFECYCLE_EVENTS,
                       "load"})


class UnforwardedHookError(TypeError):
    """A part defines a mitmproxy event hook the chain would never call."""

    def __init__(self, part: Any, hooks: list[str]) -> None:
        self.part, self.hooks = part, hooks
        super().__init__(
            f"{type(part).__name__} defines {', '.join(hooks)}, which MpsdChain does not "
            f"forward (it forwards {', '.join(sorted(FORWARDED))}): forward the hook in "
            "MpsdChain, or add the part to mitmproxy as an addon of its own")


def mitmproxy_hooks() -> frozenset[str]:
    """Every event hook name mitmproxy knows (its hook classes register themselves on
    import, so the modules that define them are imported first)."""
    from mitmproxy import addonmanager  # noqa: F401 - defines the load hook
    from mitmproxy import hooks
    from mitmproxy import log  # noqa: F401 - defines add_log
    from mitmproxy.proxy import layers  # noqa: F401 - http, tcp, udp, websocket, dns, tls...
    from mitmproxy.proxy import server_hooks  # noqa: F401 - connection events

    return frozenset(hooks.all_hooks)


class TerminalSafeLog(logging.Filter):
    """Every mpsdproxy log line made terminal-safe (`model.terminal_safe`) on its way to
    mitmproxy's log handlers: the lines name session names, URLs and paths a title sent
    (percent-decoded, so `%1B[2J` is an escape sequence), and the operator's terminal
    shows them. One filter instead of an escape at each of the addons' log calls."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] != "mpsdproxy":
            return True
        from mpsdproxy import model

        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - the handler reports a bad format, as it would
            return True
        record.msg, record.args = model.terminal_safe(message), None
        return True


def guard_log_handlers() -> None:
    """Put `TerminalSafeLog` on every handler of the root logger (mitmproxy's terminal
    log installs its own there), once each."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, TerminalSafeLog) for f in handler.filters):
            handler.addFilter(TerminalSafeLog())


def check_forwarded(parts: list[Any]) -> None:
    """Refuse a part with a hook the chain does not forward: mitmproxy would call it on
    a top-level addon, so silently skipping it here would be a bug nobody sees."""
    unforwarded = mitmproxy_hooks() - FORWARDED
    for part in parts:
        found = sorted(name for name in unforwarded if callable(getattr(part, name, None)))
        if found:
            raise UnforwardedHookError(part, found)


class MpsdChain:
    """The mpsdproxy addons as one entry in mitmproxy's addon chain, in chain order.

    mitmproxy hands every event to every addon it knows (top-level addons and the
    children in their `addons`), each through its own generator, and for top-level
    ones its own error guard and coroutine too, whether or not the addon acts on the
    event: about 1.5 µs per addon and event, and a request makes eight events (each
    flow event and its `update`). Every part that way would cost more per exchange
    than some of their hooks (three small guards alone, measured full-stack: about
    45 CPU µs per request). So mitmproxy knows this one object, which `mpsdproxy run`
    builds with its guards first (the file guard, the client check) and the graceful
    stop last; it calls its parts' hooks directly, in order,
    with the same guarantees mitmproxy gives: an awaitable a part returns (a delay,
    a held reply) is awaited before the next part sees the flow, and an error in one
    part is logged as mitmproxy logs addon errors and does not keep the flow from
    the parts after it (the recorder must still write it). Options and commands are
    the parts' own, registered as mitmproxy would.

    It forwards only the flow events, the guard events, the websocket events (the RTA
    connection) and the lifecycle hooks above, and refuses at construction a part that defines any
    other mitmproxy hook (`tcp_message`, `dns_request`...), which it would
    otherwise skip without a word. It owns the
    after-answer queue (`AfterAnswer`), hands it to every part that declares an
    `after_answer` attribute (injector, live log, verdicts, graceful stop), and drains it
    at shutdown.
    Once every part has seen a flow's end and their queued work has run, it drops
    the model values built for the flow (`flows.forget`): mitmproxy's flows are
    freed only by the garbage collector, and ours need not wait for it.
    """

    def __init__(self, parts: list[Any] | None = None, after: AfterAnswer | None = None) -> None:
        self.after = after or AfterAnswer()
        self.parts = default_addons() if parts is None else parts
        check_forwarded(self.parts)
        for part in self.parts:
            if hasattr(part, "after_answer"):  # a part that queues work shares the one queue
                part.after_answer = self.after
        self._hooks: dict[str, list[Any]] = {
            event: [getattr(part, event) for part in self.parts if hasattr(part, event)]
            for event in (*FLOW_EVENTS, *GUARD_EVENTS, *WEBSOCKET_EVENTS, *LIFECYCLE_EVENTS)
        }
        for event in ENDING_EVENTS:  # after every part, and after the work they queued
            self._hooks[event].append(self._release)

    def _release(self, flow: Any) -> None:
        """Queue `flows.forget` behind the work the parts queued for this flow: an HTTP
        exchange is over at its `response` or `error`, a websocket at its end."""
        if flow.websocket is None or flow.websocket.timestamp_end is not None:
            self.after.soon(flows.forget, flow)

    def load(self, loader: Any) -> None:
        from mitmproxy import ctx

        guard_log_handlers()  # mitmproxy's terminal log is installed by now
        for part in self.parts:
            if hasattr(part, "load"):
                part.load(loader)
        for part in self.parts:
            ctx.master.commands.collect_commands(part)

    def configure(self, updated: set[str]) -> None:
        for hook in self._hooks["configure"]:
            hook(updated)  # an OptionsError must reach mitmproxy: it rolls the change back

    def running(self) -> None:
        for hook in self._hooks["running"]:
            _guarded(hook)

    def done(self) -> None:
        self.after.drain()  # what waited for an answer is done before any part finishes
        for hook in self._hooks["done"]:
            _guarded(hook)

    def request(self, flow: Any) -> Awaitable[None] | None:
        return _run(self._hooks["request"], flow)

    def responseheaders(self, flow: Any) -> Awaitable[None] | None:
        return _run(self._hooks["responseheaders"], flow)

    def response(self, flow: Any) -> Awaitable[None] | None:
        return _run(self._hooks["response"], flow)

    def error(self, flow: Any) -> Awaitable[None] | None:
        return _run(self._hooks["error"], flow)

    def http_connect(self, flow: Any) -> Awaitable[None] | None:
        return _run(self._hooks["http_connect"], flow)

    def requestheaders(self, flow: Any) -> Awaitable[None] | None:
        return _run(self._hooks["requestheaders"], flow)

    def client_disconnected(self, client: Any) -> None:
        for hook in self._hooks["client_disconnected"]:
            _guarded(hook, client)

    def websocket_start(self, flow: Any) -> Awaitable[None] | None:
        return _run(self._hooks["websocket_start"], flow)

    def websocket_message(self, flow: Any) -> Awaitable[None] | None:
        """Each part sees the message in chain order: the RTA faults may drop or hold it
        before the recorder and the live log describe what the title got."""
        return _run(self._hooks["websocket_message"], flow)

    def websocket_end(self, flow: Any) -> Awaitable[None] | None:
        return _run(self._hooks["websocket_end"], flow)


def _guarded(hook: Callable[..., Any], *args: Any) -> Any:
    """Call one part's hook; an exception is logged (as mitmproxy's own guard logs it)
    instead of keeping the parts after it from the event."""
    try:
        return hook(*args)
    except Exception:  # noqa: BLE001 - one part's bug must not cost the flow its record
        logger.exception(f"Addon error: {getattr(hook, '__qualname__', hook)}")
        return None


def _run(hooks: list[Callable[..., Any]], flow: Any) -> Awaitable[None] | None:
    """Each hook in order; from the first that returns an awaitable on, a coroutine
    that awaits each before the next part runs (mitmproxy awaits it)."""
    for i, hook in enumerate(hooks):
        result = _guarded(hook, flow)
        if result is not None and inspect.isawaitable(result):
            return _finish(result, hooks[i + 1:], flow)
    return None


async def _finish(pending: Awaitable[Any], hooks: list[Callable[..., Any]], flow: Any) -> None:
    try:
        await pending
    except Exception:  # noqa: BLE001
        logger.exception("Addon error")
    for hook in hooks:
        result = _guarded(hook, flow)
        if result is not None and inspect.isawaitable(result):
            try:
                await result
            except Exception:  # noqa: BLE001
                logger.exception("Addon error")
