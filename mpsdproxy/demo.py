"""`mpsdproxy demo`: the stand-in, the proxy in front of it, and scripted titles.

Two passes, each through its own proxy in front of one stand-in:
1. a session lifecycle that produces every row of the status table;
2. a shipped scenario (`scenarios/retry-after-drill.yaml`) injecting faults while a
   well-behaved and a misbehaving title play, then the report with both verdicts.
Everything runs in this one process on free loopback ports and stops with it, so
the demo needs no network and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from mpsdproxy import catalog
from mpsdproxy import emulator
from mpsdproxy import report
from mpsdproxy import title
from mpsdproxy.addons import master as proxy

#: The shipped scenario the demo injects (in the checkout `make demo` runs from).
DRILL = Path(__file__).resolve().parent.parent / "scenarios" / "retry-after-drill.yaml"


def _default_recording() -> str:
    os.makedirs("recordings", exist_ok=True)
    return os.path.join("recordings", time.strftime("demo-%Y%m%d-%H%M%S.jsonl"))


async def _through_proxy(emulator_port: int, record: str, play: Callable[[title.Sender], Any],
                         **options: Any) -> Any:
    """Start a proxy in front of the stand-in, let `play` drive it, stop the proxy."""
    settings = {
        "mode": [f"reverse:http://127.0.0.1:{emulator_port}"],
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "mpsd_record": record,
        "mpsd_verdicts": False,  # the report at the end judges the pass
        "connection_strategy": "lazy",
        "termlog_verbosity": "warn",
        **options,
    }
    master = await proxy.start(settings)
    try:
        _, port, *_ = master.addons.get("proxyserver").listen_addrs()[0]
        click.secho(f"Proxy on 127.0.0.1:{port} in front of the stand-in on "
                    f"127.0.0.1:{emulator_port}\n", bold=True)
        send = title.HttpClientSender("127.0.0.1", port, admin_port=emulator_port)
        try:
            return await asyncio.to_thread(play, send)
        finally:
            send.close()
            await asyncio.sleep(0.2)  # let the proxy see the close before it shuts down
    finally:
        master.shutdown()
        await master.run_task  # type: ignore[attr-defined]


def _rows_summary(results: Sequence[title.Result], record: str) -> bool:
    wanted = {r.step.expect for r in results if r.step.expect}
    wrong = [r for r in results if r.step.expect and catalog.get(r.step.expect).status != r.status]
    click.echo()
    click.secho(f"Rows of the status table produced: {len(wanted) - len(wrong)}"
                f"/{len(catalog.ENTRIES)}", bold=True)
    for r in wrong:
        click.secho(f"  unexpected: {r.step.says}: got {r.status}, wanted {r.step.expect}",
                    fg="red")
    for entry in catalog.ENTRIES:
        if entry.id not in wanted:
            click.secho(f"  not exercised: {entry.id}", fg="yellow")
    click.echo(f"Recording: {record}\n")
    return not wrong


def _both_titles(send: title.Sender) -> None:
    click.secho("A well-behaved title:", bold=True)
    title.well_behaved(send)
    click.secho("\nA misbehaving title:", bold=True)
    title.misbehaving(send)


def _report(record: str) -> None:
    built = report.build_report(record)
    html = str(Path(record).with_suffix(".html"))
    Path(html).write_text(report.render(built, "html"), encoding="utf-8")
    click.echo()
    click.echo(report.render(built, "text"))
    click.echo(f"Recording: {record}")
    click.echo(f"HTML report: {html}")
    click.echo(f"Again, any time: mpsdproxy report {record} --format html -o report.html")


def main(record: str | None = None) -> int:
    record = record or _default_recording()
    Path(record).parent.mkdir(parents=True, exist_ok=True)
    faults_record = str(Path(record).with_name(Path(record).stem + "-faults.jsonl"))
    with emulator.running() as (_, emulator_port):
        click.secho("== 1. Every row of the status table ==\n", bold=True, fg="cyan")
        results = asyncio.run(_through_proxy(
            emulator_port, record, lambda send: title.run(title.lifecycle(), send)))
        ok = _rows_summary(results, record)
        click.secho(f"== 2. Faults from {DRILL.name}, and what two titles did ==\n",
                    bold=True, fg="cyan")
        asyncio.run(_through_proxy(emulator_port, faults_record, _both_titles,
                                   mpsd_scenario=[str(DRILL)]))
    _report(faults_record)
    return 0 if ok else 1
