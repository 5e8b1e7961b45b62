"""Run mitmproxy with the mpsdproxy addons: the engine behind `mpsdproxy run` and the demo.

It lives among the addons because it builds mitmproxy's master (`DumpMaster`);
the command line and the demo call `serve` and `start` here.

The addons are registered before any option is set, so a bad option value
(a broken scenario, an unreadable recording) fails in `configure` and the
proxy never starts listening on a half-valid setup.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import signal
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from mitmproxy import exceptions
from mitmproxy import options as mitm_options
from mitmproxy.proxy import mode_specs
from mitmproxy.tools.dump import DumpMaster

from mpsdproxy.addons import MpsdChain
from mpsdproxy.addons import router

__all__ = ["ProxyError", "is_loopback", "routing_options", "serve", "start"]

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


async def start(
    settings: dict[str, Any], sets: Sequence[str] = (), quiet_mitmproxy: bool = False
) -> DumpMaster:
    """Build a master with the mpsdproxy addons, apply options, and start it running.

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
    _add_before_save(master, MpsdChain())
    try:
        opts.update(**settings)
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
          ready: Callable[[DumpMaster], None] | None = None) -> None:
    """Run the proxy until SIGINT or SIGTERM (the `mpsdproxy run` command)."""

    async def main() -> None:
        master = await start(settings, sets)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, master.shutdown)
        if hasattr(signal, "SIGPIPE"):
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        if ready:
            ready(master)
        await master.run_task  # type: ignore[attr-defined]

    asyncio.run(main())
