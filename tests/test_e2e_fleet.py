"""End to end: a night of QA passes, summarised by `mpsdproxy fleet`.

Thirty recordings, each made by the real proxy (`mpsdproxy run --tag build=N --tag
console=...`) in front of one stand-in, while the scripted title
(`library_client.LibraryClient`) plays a lobby's lifecycle under the same fault
pass (`stale-etag-on-join.yaml`: the first ETag write to each lobby gets a 412
with a newer session). Build 1235 carries a regression: its title resends the
ETag the 412 refused (`blind_resend`), so "412 handled" fails on `PUT session`.
The fleet must name that build, that operation and that verdict from the
verdicts the proxy stored, answer a SQL join of exchanges and verdicts, and give
the same counts from its Parquet export as from the JSON Lines.

The ten proxies of a build start together and stop together: thirty honest
recordings without thirty sequential start-ups.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Launcher
from conftest import Process
from conftest import free_port
from conftest import wait_for_port
from library_client import LibraryClient
from scenario_kit import SHIPPED
from scenario_kit import me

from mpsdproxy import recording
from mpsdproxy import title

BUILDS = ("1234", "1235", "1236")
REGRESSED = "1235"
CONSOLES = 10
FORCED_412 = SHIPPED / "stale-etag-on-join.yaml"


def fleet(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mpsdproxy", "fleet", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def start_proxies(launch: Launcher, upstream: str, folder: Path, build: str) -> list[Process]:
    """One proxy per console, started together once the first has made the CA."""
    started: list[Process] = []
    ports: set[int] = set()
    while len(ports) < CONSOLES:  # a port handed out twice would reach another proxy
        ports.add(free_port())
    for n, port in enumerate(sorted(ports), 1):
        record = folder / f"build{build}-console{n:02d}.jsonl"
        log = folder / f"proxy-{build}-{n}.log"
        args = ["run", "--listen-port", str(port), "--confdir", str(launch.confdir),
                "--mode", f"reverse:{upstream}", "--quiet", "--scenario", str(FORCED_412),
                "--record", str(record), "--tag", f"build={build}",
                "--tag", f"console=devkit-{n:02d}", "--tag", "title=netrumble"]
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "mpsdproxy", *args],
                                    cwd=launch.tmp_path, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        process = Process(port, proc, log, record)
        launch.started.append(process)  # stopped by the fixture whatever happens
        started.append(process)
        if n == 1:  # the first makes the confdir's CA; the others only read it
            wait_for_port(port, proc, log, timeout=60)
    for process in started:
        wait_for_port(process.port, process.proc, process.log, timeout=60)
    return started


def play(proxy: Process, lobby: str, user: str, blind_resend: bool) -> None:
    """The lifecycle of test_e2e_library: create, read, two ETag writes, a handle, a read.
    Each console plays as its own user: the stand-in throttles one user's call rate."""
    client = LibraryClient(proxy.url, user, blind_resend=blind_resend)
    path = title.session_path(lobby)
    try:
        client.write_session(path, me(client.user))
        client.read_session(path)
        client.write_session(path, {"properties": {"custom": {"map": "dunes"}}})
        client.write_session(path, {"properties": {"custom": {"mode": "ffa"}}})
        client.create_handle(title.SCID, "LobbySession", lobby)
        client.read_session(path)
    finally:
        client.close()


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory, confdir: Path) -> Iterator[Path]:
    """Thirty recordings in one folder, each with its stored verdicts (made once for the
    module's tests)."""
    launch = Launcher(tmp_path_factory.mktemp("night"), confdir)
    try:
        yield _record_the_night(launch)
    finally:
        launch.stop_all()


def _record_the_night(launch: Launcher) -> Path:
    folder = launch.tmp_path / "nightly"
    folder.mkdir()
    standin = launch.standin()
    for build in BUILDS:
        proxies = start_proxies(launch, standin.url, folder, build)
        for n, proxy in enumerate(proxies, 1):
            play(proxy, f"lobby-{build}-{n}", f"25332748{build}{n:04d}",
                 blind_resend=build == REGRESSED)
        for proxy in proxies:
            proxy.proc.terminate()
        for proxy in proxies:
            proxy.stop()
            assert "mpsd verdicts:" in proxy.output()  # finished cleanly, verdicts stored
    return folder


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def test_a_night_of_passes_names_the_regressed_build_operation_and_verdict(
        night: Path, tmp_path: Path) -> None:
    records = sorted(night.glob("*.jsonl"))
    assert len(records) == 30
    assert all(recording.read_tags(p)["build"] in BUILDS for p in records)
    assert all(Path(f"{p}.verdicts").exists() for p in records)  # stored live

    summary = _json(fleet(night, "--format", "json"))
    assert summary["group_by"] == "build"
    assert [t["group"] for t in summary["trend"]] == list(BUILDS)
    assert [t["runs"] for t in summary["trend"]] == [10, 10, 10]
    assert summary["without_verdicts"] == []
    (regression,) = summary["regressions"]
    assert (regression["group"], regression["rule"], regression["operation"]) == \
        (REGRESSED, "412-handled", "PUT session")
    assert (regression["runs_failing"], regression["was_runs_failing"]) == (10, 0)
    rows = {(c["group"], c["operation"], c["row"]) for c in summary["changes"]["rows"]}
    assert (REGRESSED, "PUT session", "412.if-match-session") in rows
    assert all(len(r["operations"]) >= 3 and r["coverage"]["reached"] >= 3
               for r in summary["runs"])

    text = fleet(night, "--fail-on", "regression")
    assert text.returncode == 1, text.stderr
    (line,) = [x for x in text.stdout.splitlines() if "REGRESSED" in x]
    assert "build 1235" in line and "412 handled" in line and "PUT session" in line

    html = fleet(night, "--format", "html", "-o", tmp_path / "night.html")
    assert html.returncode == 0, html.stderr
    page = (tmp_path / "night.html").read_text()
    assert "<svg" in page and "<script" not in page and "REGRESSED build 1235" in page


def test_sql_joins_exchanges_and_verdicts(night: Path) -> None:
    query = """SELECT r.build, e.operation, count(*) AS fails
               FROM verdicts v JOIN exchanges e ON e.run = v.run AND e.seq = v.trigger
               JOIN runs r ON r.run = v.run
               WHERE v.status = 'fail' GROUP BY ALL ORDER BY ALL"""
    rows = _json(fleet(night, "--sql", query, "--format", "json"))
    assert [(r["build"], r["operation"]) for r in rows] == [(REGRESSED, "PUT session")]
    assert rows[0]["fails"] >= 10
    bad = fleet(night, "--sql", "SELECT nothing FROM nowhere")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "--sql" in bad.stderr


def test_parquet_export_reads_back_with_the_same_counts(night: Path, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    done = fleet(night, "--to-parquet", archive, "--partition", "build,date",
                 "--sql", "SELECT 1")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in archive.iterdir()) == [f"build={b}" for b in BUILDS]
    counts = """SELECT (SELECT count(*) FROM exchanges) AS exchanges,
                       (SELECT count(*) FROM verdicts) AS verdicts,
                       (SELECT count(*) FROM verdicts WHERE status = 'fail') AS fails,
                       (SELECT count(*) FROM rta) AS messages,
                       (SELECT count(*) FROM runs) AS runs"""
    from_jsonl = _json(fleet(night, "--sql", counts, "--format", "json"))
    from_parquet = _json(fleet(archive, "--sql", counts, "--format", "json"))
    assert from_parquet == from_jsonl
    assert from_jsonl[0]["runs"] == 30
    one = _json(fleet(archive, "--format", "json"))
    assert one["regressions"][0]["group"] == REGRESSED
