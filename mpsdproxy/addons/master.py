"""Run mitmproxy with the mpsdproxy addons: the engine behind `mpsdproxy run` and the demo.

It lives among the addons because it builds mitmproxy's master (`DumpMaster`);
the command line and the demo call `serve` and `start` here.

The addons are registered before any option is set, so a bad option value
(a broken scenario, an unreadable recording, a FIFO given as a file) fails in
`configure` and the proxy never starts listening on a half-valid setup.

Stopping is graceful (`GracefulStop`): the first SIGINT or SIGTERM closes the
listening sockets, lets the exchanges in flight get their answers (and so their
records), for at most `mpsd_shutdown_grace` seconds, then stops; a second signal
stops at once. Signal handlers go through the event loop where it can take them
and through `signal.signal` where it cannot (Windows), as the stand-in's do.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import signal
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from mitmproxy import exceptions
from mitmproxy import options as mitm_options
from mitmproxy.addons.script import ScriptLoader
from mitmproxy.proxy import mode_specs
from mitmproxy.tools.dump import DumpMaster

from mpsdproxy import safefiles
from mpsdproxy.addons import MpsdChain
from mpsdproxy.addons import access
from mpsdproxy.addons import default_addons
from mpsdproxy.addons import mitmconfig
from mpsdproxy.addons import router
from mpsdproxy.addons.later import AfterAnswer

__all__ = ["DEFAULT_GRACE", "AddonGroup", "FileGuard", "GracefulStop", "ProxyError",
           "group_addons", "install_stop_signals", "is_loopback", "read_config",
           "remote_points", "routing_options", "serve", "start"]

#: Seconds the exchanges in flight get to finish once a stop signal came.
DEFAULT_GRACE = 10

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether a listening host keeps the port on this machine (`access.is_loopback`)."""
    return access.is_loopback(host)


def remote_points(modes: Sequence[str], listen_host: str, listen_port: int | None
                  ) -> list[access.ListenPoint]:
    """The addresses beyond loopback the proxy would listen on (`access.remote_points`);
    ValueError for a bad mode."""
    return access.remote_points(modes, listen_host, listen_port)


def read_config(confdir: str, sets: Sequence[str], typed: set[str]) -> mitmconfig.MitmConfig:
    """mitmproxy's config.yaml for `run` (`mitmconfig.for_run`); ValueError for a bad one."""
    return mitmconfig.for_run(confdir, sets, typed)


def routing_options(modes: Sequence[str], intercept_hosts: Sequence[str]) -> dict[str, Any]:
    """mitmproxy options that keep every non-session-directory host untouched.

    In reverse mode the target is the session directory itself; in every other
    mode only the intercept hosts are decrypted (`allow_hosts`), so a title's
    other traffic passes through as raw TCP. `lazy` connections mean the proxy
    never contacts a server for a request it answers itself (a fault, a replay).
    """
    parsed = [mode_specs.ProxyMode.parse(m) for m in modes]
    opts: dict[str, Any] = {"connection_strategy": "lazy"}
    if all(isinstance(m, mode_specs.ReverseMode) for m in parsed):
        return opts
    hosts = list(intercept_hosts)
    for m in parsed:
        if isinstance(m, mode_specs.ReverseMode):
            hosts.append(m.address[0])
    opts["allow_hosts"] = router.allow_patterns(hosts)
    return opts


class ProxyError(Exception):
    """The proxy could not start (bad options or a port in use)."""


def _add_before_save(master: DumpMaster, chain: MpsdChain) -> None:
    """Add the mpsdproxy addons just before mitmproxy's `save` (what `-w` and
    `save_stream_file` run on), where `mitmdump -s addons/mpsdproxy.py` puts them too:
    a flow file then holds each flow's classification, comment and mark. Every addon
    that guards a request (proxyauth, blocklist, scripts) still sees it first."""
    master.addons.add(chain)
    order = master.addons.chain
    save = master.addons.get("save")
    if save in order:
        order.remove(chain)
        order.insert(order.index(save), chain)


class AddonGroup:
    """A run of mitmproxy's own addons as one entry of its addon chain.

    For every event (a request alone makes eight: requestheaders, request,
    responseheaders and response, each followed by an `update`) mitmproxy's
    `AddonManager.trigger_event` goes down its chain and gives each top-level addon
    a coroutine, an error guard (a context manager) and a generator over the addon
    and its children, whether or not the addon acts on the event. `mpsdproxy run`
    loads 35 of them, and that walk cost far more per request than everything
    mpsdproxy itself does (docs/benchmarks.md). An addon's children (its `addons`, as
    mitmproxy's own script loader holds the scripts) are called in the same walk, in
    order, with what they return awaited: as the children of a few groups,
    mitmproxy's addons cost a few walks per event instead of 35.

    One thing differs: the error guard is the group's. An exception in one grouped
    addon's hook is still logged, and the addons after it in the same group miss
    that event. So the groups hold only mitmproxy's built-in addons: the script
    loader (user code) and the mpsdproxy chain keep a guard each (`group_addons`).
    mitmproxy's `addons.remove` takes addons out of the top level only; nothing removes
    a built-in addon.
    """

    def __init__(self, addons: list[Any]) -> None:
        self.addons = addons

    def __repr__(self) -> str:
        return f"AddonGroup({[type(addon).__name__ for addon in self.addons]})"


def group_addons(chain: Sequence[Any], alone: Callable[[Any], bool]) -> list[Any]:
    """`chain` with each run of addons between those that stay `alone` as one
    `AddonGroup` (a run of one stays as it is): the same addons in the same order."""
    grouped: list[Any] = []
    for stays_alone, run in itertools.groupby(chain, key=alone):
        addons = list(run)
        if stays_alone or len(addons) == 1:
            grouped.extend(addons)
        else:
            grouped.append(AddonGroup(addons))
    return grouped


def _keeps_its_guard(addon: Any) -> bool:
    """The mpsdproxy chain and mitmproxy's script loader (whose children are the user's
    scripts) each stay a top-level addon with an error guard of its own."""
    return isinstance(addon, MpsdChain | ScriptLoader)


async def start(
    settings: dict[str, Any], sets: Sequence[str] = (), quiet_mitmproxy: bool = False,
    config: dict[str, Any] | None = None,
) -> DumpMaster:
    """Build a master with the mpsdproxy addons, apply options, and start it running.

    `config` is mitmproxy's config.yaml (`mitmconfig.read`, minus what a flag or `sets`
    overrides): applied first, then `settings` it does not name, then `sets`, so the
    command line wins as in mitmdump. With `scripts` in it, options the file names that
    no addon has yet wait for the scripts (mitmproxy's deferred options).
    Returns once the proxy listens; raises ProxyError (nothing started) on bad
    options. The caller stops it with `master.shutdown()` and awaits
    `master.run_task` (set here).
    """
    # As mitmproxy's own tools do: let every record through and the termlog filter them.
    logging.getLogger().setLevel(logging.DEBUG)
    # The live log already shows each exchange: keep mitmproxy's per-connection chatter
    # ("client connect", "server disconnect") out of the way unless asked for.
    if settings.get("termlog_verbosity") != "debug":
        logging.getLogger("mitmproxy.proxy.server").setLevel(logging.WARNING)
    opts = mitm_options.Options()
    master = DumpMaster(opts, with_termlog=not quiet_mitmproxy, with_dumper=False)
    stop = GracefulStop(master)
    # The guards first (a bad file never opens, a refused request never reaches the
    # parts after them); the stop last (an exchange ends after it is recorded).
    chain = MpsdChain([FileGuard(), access.ClientAccess(), *default_addons(), stop])
    _add_before_save(master, chain)
    master.addons.chain = group_addons(master.addons.chain, _keeps_its_guard)
    master.graceful_stop = stop  # type: ignore[attr-defined]
    config = config or {}
    try:
        if config:
            (opts.update_defer if "scripts" in config else opts.update)(**config)
        opts.update(**{k: v for k, v in settings.items() if k not in config})
        if sets:
            opts.set(*sets)
    except (exceptions.OptionsError, KeyError, TypeError) as e:
        raise ProxyError(str(e)) from e
    task = asyncio.create_task(master.run())
    master.run_task = task  # type: ignore[attr-defined]
    await _wait_listening(master, task)
    # Everything loaded so far (mitmproxy, the addons, their options and data) lives as
    # long as the proxy: keep the garbage collector from walking it on every collection.
    gc.freeze()
    return master


class FileGuard:
    """Refuses a FIFO, a device, a folder or `-` as `mpsd_record`, `mpsd_scenario` or
    `mpsd_sweep_state`.

    Opening a FIFO waits for a writer (or a reader) forever, and `/dev/stdout` as a
    recording mixes records into the live log: the proxy would hang before it
    listens, or write garbage, without a word. It sits before the mpsdproxy chain so
    the check runs before the recorder or the injector opens anything, for a flag,
    `--set` and a later option change alike.
    """

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        checked = {"mpsd_record": "recording", "mpsd_scenario": "scenario file",
                   "mpsd_sweep_state": "sweep state"}
        for name in sorted(checked.keys() & updated):
            value = getattr(ctx.options, name, "")
            paths = [value] if isinstance(value, str) else list(value)
            for path in paths:
                try:
                    safefiles.refuse_not_regular(path, checked[name])
                except safefiles.BadFile as e:
                    raise exceptions.OptionsError(f"Cannot use {name} option {e}") from None


class GracefulStop:
    """Counts the exchanges in flight and stops the proxy without cutting them off.

    An exchange is in flight from its request headers until the work queued after its
    last `response` (or `error`) hook has run (the chain's `AfterAnswer` queue): this
    addon comes last in the chain, so by then the recorder wrote it, mitmproxy has
    handed the answer to the socket, and its verdicts are decided. `stop()` (the first
    signal) closes the listening sockets, waits until nothing is in flight or
    `mpsd_shutdown_grace` seconds have passed, and shuts the master down; a second
    `stop()` shuts it down at once.
    """

    def __init__(self, master: DumpMaster) -> None:
        self.master = master
        #: Each exchange in flight by its flow's id, with its flow.
        self.in_flight: dict[str, Any] = {}
        #: The chain's after-answer queue (`MpsdChain` hands it over): an exchange is in
        #: flight until its answer is out and the work queued for it has run.
        self.after_answer: AfterAnswer | None = None
        self.grace = float(DEFAULT_GRACE)
        self.stopping: asyncio.Task[None] | None = None

    def load(self, loader: Any) -> None:
        loader.add_option(
            "mpsd_shutdown_grace", int, DEFAULT_GRACE,
            "Seconds the exchanges in flight get to finish (and be recorded) after a first "
            "SIGINT or SIGTERM; a second signal stops at once.",
        )

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        if "mpsd_shutdown_grace" in updated:
            value = ctx.options.mpsd_shutdown_grace
            if value < 0:
                raise exceptions.OptionsError(
                    f"Cannot parse mpsd_shutdown_grace option {value}: should be 0 or more")
            self.grace = float(value)

    def requestheaders(self, flow: Any) -> None:
        self.in_flight[flow.id] = flow

    def response(self, flow: Any) -> None:
        self._finished(flow)

    def error(self, flow: Any) -> None:
        self._finished(flow)

    def client_disconnected(self, client: Any) -> None:
        """A request whose client left before sending all of it can never be answered.
        mitmproxy says so with an `error` hook, except where its own reader gave up on
        the request (a chunked body with trailers): no hook at all comes then, and the
        stop would wait the whole grace for it."""
        for flow in list(self.in_flight.values()):
            if flow.client_conn is client and flow.request.timestamp_end is None:
                self._forget(flow.id)

    def _finished(self, flow: Any) -> None:
        """Forget the flow once its answer is written (after this hook) and the work
        queued for it is done (at once outside a chain)."""
        if self.after_answer is None:
            self._forget(flow.id)
        else:
            self.after_answer.soon(self._forget, flow.id)

    def _forget(self, flow_id: str) -> None:
        self.in_flight.pop(flow_id, None)

    def stop(self) -> None:
        """The first call drains then stops; any later one stops at once."""
        if self.stopping is None:
            self.stopping = asyncio.get_running_loop().create_task(self._drain())
            return
        logger.warning("Stopping now: exchanges still in flight are cut off")
        self.master.shutdown()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        logger.warning(f"Stopping: no new connections; {len(self.in_flight)} exchange(s) in "
                       f"flight get up to {self.grace:g} s to finish (signal again to stop now)")
        proxyserver = self.master.addons.get("proxyserver")
        if proxyserver is not None:
            await proxyserver.servers.update([])
        deadline = loop.time() + self.grace
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self.in_flight:
            logger.warning(f"{len(self.in_flight)} exchange(s) still in flight after "
                           f"{self.grace:g} s: stopping anyway")
        await asyncio.sleep(0.05)  # the last answers leave the socket buffers
        self.master.shutdown()


def install_stop_signals(loop: asyncio.AbstractEventLoop,
                         on_signal: Callable[[], None]) -> Callable[[], None]:
    """Call `on_signal` on the loop for SIGINT and SIGTERM; returns what undoes it.

    `loop.add_signal_handler` is POSIX-only (NotImplementedError on Windows' proactor
    loop, RuntimeError off the main thread): there `signal.signal` takes the signal
    and hands it to the loop thread-safely, as the stand-in falls back too.
    """
    undo: list[Callable[[], Any]] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            undo.append(lambda sig=sig: loop.remove_signal_handler(sig))
            continue
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        try:
            previous = signal.signal(sig, lambda *_: loop.call_soon_threadsafe(on_signal))
        except (ValueError, OSError):
            continue  # not the main thread: the caller stops the proxy itself
        undo.append(lambda sig=sig, previous=previous: signal.signal(sig, previous))

    def restore() -> None:
        for step in undo:
            step()

    return restore


async def _wait_listening(master: DumpMaster, task: asyncio.Task[None]) -> None:
    """Wait until the proxy servers are up (or the master died trying)."""
    proxyserver = master.addons.get("proxyserver")
    for _ in range(400):
        if task.done():
            task.result()
            raise ProxyError("the proxy stopped while starting")
        if proxyserver.is_running and proxyserver.listen_addrs():
            return
        await asyncio.sleep(0.025)
    raise ProxyError("the proxy did not start listening within 10 s")


def serve(settings: dict[str, Any], sets: Sequence[str] = (),
          ready: Callable[[DumpMaster], None] | None = None,
          config: dict[str, Any] | None = None) -> None:
    """Run the proxy until SIGINT or SIGTERM (the `mpsdproxy run` command): the first
    signal stops gracefully (`GracefulStop`), a second one at once. `config`: as `start`."""

    async def main() -> None:
        # Handlers first: a signal that comes as soon as the port listens is not lost.
        signals: list[None] = []
        stopper: GracefulStop | None = None

        def on_signal() -> None:
            if stopper is None:
                signals.append(None)  # still starting: acted on once the master runs
            else:
                stopper.stop()

        restore = install_stop_signals(asyncio.get_running_loop(), on_signal)
        if hasattr(signal, "SIGPIPE"):
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        try:
            master = await start(settings, sets, config=config)
            stopper = master.graceful_stop
            for _ in signals[:2]:
                stopper.stop()
            if ready:
                ready(master)
            await master.run_task  # type: ignore[attr-defined]
        finally:
            restore()

    asyncio.run(main())
