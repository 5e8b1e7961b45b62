"""`mpsdproxy demo`: the stand-in, the proxy in front of it, and scripted titles.

Three passes, each through its own proxy in front of one stand-in:
1. a session lifecycle that produces every row of the status table;
2. a shipped scenario (`scenarios/retry-after-drill.yaml`) injecting faults while a
   well-behaved and a misbehaving title play, then the report with both verdicts;
3. two-console lobbies over the RTA websocket: the host learns from a shoulder tap
   that its friend joined, then a scenario drops a tap while the friend changes the
   lobby; the host that reads on the next newer tap (as MultiplayerManager does) and
   the one that waits for the lost changeNumber are told apart by the tap-read verdict;
4. a small fault sweep (`run --sweep`) of a well-behaved and a misbehaving lobby
   title, and the matrix of each: recovered and not-recovered cells.
Everything runs in this one process on free loopback ports and stops with it, so
the demo needs no network and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from collections.abc import Sequence
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Any

import click

from mpsdproxy import catalog
from mpsdproxy import emulator
from mpsdproxy import recording
from mpsdproxy import report
from mpsdproxy import title
from mpsdproxy import verdicts
from mpsdproxy.addons import master as proxy

#: The shipped scenario the demo injects: package data, so an installed wheel has it too.
DRILL = Path(str(resources.files("mpsdproxy") / "scenarios" / "retry-after-drill.yaml"))


def _default_recording() -> str:
    os.makedirs("recordings", exist_ok=True)
    return os.path.join("recordings", time.strftime("demo-%Y%m%d-%H%M%S.jsonl"))


async def _through_proxy(emulator_port: int, record: str,
                         play: Callable[[title.HttpClientSender], Any],
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
    faults_record = _beside(record, "faults")
    lobby_record = _beside(record, "rta")
    with emulator.running() as (_, emulator_port), tempfile.TemporaryDirectory() as scratch:
        click.secho("== 1. Every row of the status table ==\n", bold=True, fg="cyan")
        results = asyncio.run(_through_proxy(
            emulator_port, record, lambda send: title.run(title.lifecycle(), send)))
        ok = _rows_summary(results, record)
        click.secho(f"== 2. Faults from {DRILL.name}, and what two titles did ==\n",
                    bold=True, fg="cyan")
        asyncio.run(_through_proxy(emulator_port, faults_record, _both_titles,
                                   mpsd_scenario=[str(DRILL)]))
        _report(faults_record)
        click.secho("\n== 3. A two-console lobby on shoulder taps, and a tap that never "
                    "arrives ==\n", bold=True, fg="cyan")
        scenario = Path(scratch) / "demo-missed-tap.yaml"
        scenario.write_text(MISSED_TAP, encoding="utf-8")
        click.echo("Each lobby: a host and a friend, each with its RTA websocket. The proxy "
                   "drops each console's\nthird tap for the lobby (a scenario rule, tap: drop):"
                   " the host's is for the friend's map.\n")
        current = asyncio.run(_through_proxy(emulator_port, lobby_record, _lobbies,
                                             mpsd_scenario=[str(scenario)], mpsd_quiet=True))
    ok = _lobby_report(lobby_record, current) and ok
    ok = _sweep(record) and ok
    return 0 if ok else 1


# --- pass 4: a small fault sweep ---------------------------------------------------------

#: The cells pass 4 sweeps: quick ones (an answer, no retry wait), so the pass takes seconds.
SWEEP_ONLY = ("PUT session */409.conflict,412.if-match-session,403.read-only",
              "GET session */400.bad-request")


def _sweep(record: str) -> bool:
    """Sweep a well-behaved and a misbehaving lobby title; the matrix of each. Whether the
    misbehaving one shows both recovered and not-recovered cells and the other none failed."""
    from mpsdproxy.report import matrix
    from mpsdproxy.sweep.lobby import LobbyTitle

    click.secho("\n== 4. A fault sweep: each fault the service can give, at each call ==\n",
                bold=True, fg="cyan")
    states = []
    with emulator.running() as (_, emulator_port):
        for who, blind in (("good", False), ("bad", True)):
            where = _beside(record, f"sweep-{who}")
            click.secho(f"A {'misbehaving' if blind else 'well-behaved'} lobby title "
                        f"({'resends the ETag a 412 refused' if blind else 'adopts a 412'}):",
                        bold=True)
            asyncio.run(_through_proxy(
                emulator_port, where, lambda send, w=who, b=blind: LobbyTitle(
                    send, f"sweep-{w}-lobby", f"sweep-{w}", "2533274800000201",
                    blind_resend=b).play(12),
                mpsd_sweep=True, mpsd_sweep_only=list(SWEEP_ONLY), mpsd_sweep_gap="100ms",
                mpsd_quiet=True))
            built = matrix.build_matrix([where])
            click.echo(matrix.render_text(built))
            states.append(built.counts())
    good, bad = states
    click.echo(f"Again, any time: mpsdproxy report {where} --matrix --format html "
               f"-o report.html")
    return not good[matrix.NOT_RECOVERED] and bool(bad[matrix.NOT_RECOVERED]) \
        and bool(bad[matrix.RECOVERED])


def _beside(record: str, part: str) -> str:
    """The recording of another pass, next to the first one's."""
    return str(Path(record).with_name(f"{Path(record).stem}-{part}.jsonl"))


# --- pass 3: RTA lobbies ------------------------------------------------------------------

#: The fault of pass 3: each console's third tap of a demo lobby is lost. A host is tapped
#: for its own create (1) and its friend's join (2), so the tap lost is the friend's
#: first change; counted per console, so the friend's taps do not move the host's count.
MISSED_TAP = """\
name: demo-missed-tap
description: Each console's third shoulder tap for a demo lobby never arrives.
seed: 16
rules:
  - name: missed-tap
    description: The third tap a console gets for a demo lobby is dropped.
    match: {resource: session, path: "*/sessions/rta-*"}
    per: client
    when: {nth: 3}
    fault: {tap: drop}
"""

#: Who plays pass 3: (lobby, how its host listens, heading).
LOBBIES = (
    ("rta-good-lobby", title.reads_newer,
     "A title that reads the lobby on any newer tap, as MultiplayerManager does:"),
    ("rta-bad-lobby", title.reads_next_only,
     "A title that reads only on the changeNumber after its own:"),
)


def _hosts() -> dict[str, str]:
    """Each host's title key in the report (its hashed user) -> its lobby."""
    return {recording.user_of(title.authorization(f"{lobby}-host")): lobby
            for lobby, _, _ in LOBBIES}


def _lobbies(send: title.HttpClientSender) -> dict[str, bool]:
    """Play each lobby with its own two consoles; keep every websocket open until the
    read limit has passed since the last tap, so the report can judge the host that
    never read (its websockets' close frames end the recording after that)."""
    limit = verdicts.load_limits().rules.rta_read_within_s
    current: dict[str, bool] = {}
    with ExitStack() as stack:
        for number, (lobby, listens, heading) in enumerate(LOBBIES):
            click.secho(("\n" if number else "") + heading, bold=True)
            consoles = []
            for who, xuid in (("host", "2533274800000101"), ("friend", "2533274800000102")):
                user = f"{lobby}-{who}"
                ws = title.RtaSocket(send.host, send.port, user)
                stack.callback(ws.close)
                consoles.append(title.Console(
                    who, user, xuid, title.HttpClientSender(send.host, send.port), ws,
                    listens, click.echo))
            current[lobby] = title.rta_lobby(*consoles, lobby)
        click.echo(f"\n(waiting {limit:g} s, the read limit of the tap-read verdict, before "
                   "the consoles close)")
        time.sleep(limit + 1.0)
    return current


def _lobby_report(record: str, current: dict[str, bool]) -> bool:
    """The tap-read verdicts of the hosts; whether they tell the two titles apart."""
    built = report.build_report(record)
    html = str(Path(record).with_suffix(".html"))
    Path(html).write_text(report.render(built, "html"), encoding="utf-8")
    hosts = _hosts()
    click.echo()
    click.secho("Shoulder tap read, for each host:", bold=True)
    judged: dict[str, set[str]] = {}
    for verdict in built.verdicts:
        if verdict.rule == "tap-read" and verdict.client in hosts:
            lobby = hosts[verdict.client]
            judged.setdefault(lobby, set()).add(verdict.status.value)
            colour = {"fail": "red", "pass": "green"}.get(verdict.status.value)
            click.secho(f"  - {verdict.status.value.upper()} {lobby} host: {verdict.reason}",
                        fg=colour)
    click.echo(f"Recorded: {built.rta.connections_total} RTA websockets, {built.rta.taps} "
               "taps (a dropped tap is not in the recording: the title never got it)")
    good, bad = (lobby for lobby, _, _ in LOBBIES)
    told_apart = ("fail" not in judged.get(good, {"fail"}) and "fail" in judged.get(bad, set())
                  and current.get(good, False) and not current.get(bad, True))
    if not told_apart:
        click.secho("unexpected: the verdicts did not tell the two hosts apart", fg="red")
    click.echo(f"Recording: {record}")
    click.echo(f"HTML report: {html}")
    click.echo(f"Again, any time: mpsdproxy report {record} --format html -o report.html")
    return told_apart
