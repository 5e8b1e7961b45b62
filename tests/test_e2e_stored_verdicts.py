"""End to end: the proxy's own stored verdicts make `report` fast on what it recorded.

The proxy writes each verdict beside its recording as it decides it; at shutdown it ends
the sidecar with the trailer `report` trusts, once the recording is closed. `report` then
reads those verdicts and counts the rest with DuckDB, and gives the same verdicts as
judging the recording again. A run that appended to an older recording gets no trailer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import Launcher
from conftest import Process
from library_client import LibraryClient
from scenario_kit import me

from mpsdproxy import title
from mpsdproxy.fleet import reportdb
from mpsdproxy.fleet import stored
from mpsdproxy.recording import verdictfile


def play(proxy: Process, lobby: str) -> None:
    client = LibraryClient(proxy.url, "2533274800000301")
    path = title.session_path(lobby)
    try:
        client.write_session(path, me(client.user))
        client.read_session(path)
        client.write_session(path, {"properties": {"custom": {"map": "dunes"}}})
        client.read_session(path)
    finally:
        client.close()


def last_line(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[-1])


def report(record: Path, engine: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "mpsdproxy", "report", str(record),
                           "--format", "json"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MPSDPROXY_REPORT_ENGINE": engine})
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def outcomes(built: dict) -> dict[str, dict[str, int]]:
    """Each rule's verdict counts by status."""
    return {rule["rule"]: rule["counts"] for rule in built["verdicts"]["rules"]}


def test_a_proxy_recording_is_reported_from_its_stored_verdicts(launch: Launcher) -> None:
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--quiet")
    play(proxy, "stored-lobby")
    proxy.stop()
    assert proxy.record is not None
    sidecar = Path(verdictfile.sidecar_of(proxy.record))
    trailer = last_line(sidecar)
    assert trailer["complete"] is True
    assert trailer["recording_bytes"] == proxy.record.stat().st_size
    assert trailer["exchanges"] == 4

    complete = stored.complete_trailer(proxy.record)
    assert complete is not None  # the fast path takes it...
    reportdb.build_report_db(proxy.record, complete)  # ...and can (Unsupported otherwise)
    from_sidecar, judged_again = report(proxy.record, "duckdb"), report(proxy.record, "python")
    assert outcomes(from_sidecar) == outcomes(judged_again)
    assert sum(c["pass"] for c in outcomes(from_sidecar).values()) > 0
    assert last_line(sidecar) == trailer  # reading it changed nothing


def test_a_run_that_appended_to_a_recording_leaves_no_trailer(launch: Launcher,
                                                              tmp_path: Path) -> None:
    standin = launch.standin()
    record = tmp_path / "appended.jsonl"
    for lobby in ("first-lobby", "second-lobby"):
        proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--quiet", "--record", str(record),
                             record=False)
        play(proxy, lobby)
        proxy.stop()
    lines = Path(verdictfile.sidecar_of(record)).read_text().splitlines()
    trailers = [json.loads(line) for line in lines if '"complete"' in line]
    assert len(trailers) == 1  # the first run's; the second, appended, claims nothing
    assert trailers[0]["recording_bytes"] < record.stat().st_size


def test_report_while_the_proxy_records_leaves_the_sidecar_to_the_proxy(
        launch: Launcher) -> None:
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--quiet")
    play(proxy, "reported-while-live")
    assert proxy.record is not None
    sidecar = Path(verdictfile.sidecar_of(proxy.record))
    midway = report(proxy.record, "python")  # the proxy holds the recording: a moment of it
    assert midway["exchanges"] == 4
    assert not sidecar.exists()  # nothing stored for a run still going
    play(proxy, "reported-while-live-2")
    proxy.stop()
    lines = [json.loads(line) for line in sidecar.read_text().splitlines()]
    headers = [line for line in lines if line.get("format") == verdictfile.FORMAT
               and "complete" not in line]
    assert [h["source"] for h in headers] == ["proxy"]  # one sidecar: the proxy's own
    assert lines[-1]["complete"] is True and lines[-1]["exchanges"] == 8
