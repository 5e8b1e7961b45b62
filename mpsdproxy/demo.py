"""`mpsdproxy demo`: the stand-in, the proxy in front of it, and a scripted title.

Everything runs in this one process on free loopback ports and stops with it,
so the demo needs no network and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence

import click

from mpsdproxy import catalog
from mpsdproxy import emulator
from mpsdproxy import proxy
from mpsdproxy import title


def _default_recording() -> str:
    os.makedirs("recordings", exist_ok=True)
    return os.path.join("recordings", time.strftime("demo-%Y%m%d-%H%M%S.jsonl"))


async def _drive(emulator_port: int, record: str) -> list[title.Result]:
    settings = {
        "mode": [f"reverse:http://127.0.0.1:{emulator_port}"],
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "mpsd_record": record,
        "connection_strategy": "lazy",
        "termlog_verbosity": "warn",
    }
    master = await proxy.start(settings)
    try:
        host, port, *_ = master.addons.get("proxyserver").listen_addrs()[0]
        click.secho(f"Proxy on 127.0.0.1:{port} in front of the stand-in on "
                    f"127.0.0.1:{emulator_port}\n", bold=True)
        send = title.HttpClientSender("127.0.0.1", port, admin_port=emulator_port)
        try:
            return await asyncio.to_thread(title.run, title.lifecycle(), send)
        finally:
            send.close()
            await asyncio.sleep(0.2)  # let the proxy see the close before it shuts down
    finally:
        master.shutdown()
        await master.run_task  # type: ignore[attr-defined]


def _summary(results: Sequence[title.Result], record: str) -> int:
    wanted = {r.step.expect for r in results if r.step.expect}
    wrong = [r for r in results if r.step.expect and catalog.get(r.step.expect).status != r.status]
    missing = [e.id for e in catalog.ENTRIES if e.id not in wanted]
    click.echo()
    click.secho(f"Rows of the status table produced: {len(wanted) - len(wrong)}"
                f"/{len(catalog.ENTRIES)}", bold=True)
    for r in wrong:
        click.secho(f"  unexpected: {r.step.says}: got {r.status}, wanted {r.step.expect}",
                    fg="red")
    for entry_id in missing:
        click.secho(f"  not exercised: {entry_id}", fg="yellow")
    click.echo(f"Recording: {record}")
    click.echo(f"Read it with: head -n 3 {record} | python3 -m json.tool --json-lines")
    return 1 if wrong else 0


def main(record: str | None = None) -> int:
    record = record or _default_recording()
    with emulator.running() as (_, emulator_port):
        results = asyncio.run(_drive(emulator_port, record))
    return _summary(results, record)
