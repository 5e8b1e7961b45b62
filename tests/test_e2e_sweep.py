"""End to end: `mpsdproxy run --sweep` in front of the stand-in, a scripted title, the matrix.

The title is `library_client.LibraryClient` playing a lobby turn after turn
(`sweep_turn`: write the lobby, read it, recover from a failed call as
MultiplayerManager does), hosting a new lobby every few turns (`play`: it reads the
lobby before creating it), so the faults only a create or a read of a missing session
can get are reached too. Everything goes over real loopback sockets; the matrix is
built from the recording alone with `mpsdproxy report --matrix`. The RTA cells are
tests/test_e2e_sweep_rta.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from conftest import Launcher
from conftest import read_records
from library_client import LibraryClient
from library_client import sweep_turn
from test_report_html import png_size_and_colours
from test_report_html import run_chromium

from mpsdproxy import catalog
from mpsdproxy import recording
from mpsdproxy import sessions
from mpsdproxy import sweep
from mpsdproxy import title

PLAYER = "2533274800000001"
GET, PUT = "GET session LobbySession", "PUT session LobbySession"
#: The cells a lobby that exists can get: every one a turn's read or write allows.
UPDATE_CELLS = {sweep.cell_name(GET, f) for f in (
    "400.bad-request", "403.forbidden", "429.too-many-requests", "503.service-unavailable",
    "drop", "reset", "hang")} | {sweep.cell_name(PUT, f) for f in (
        "204.put-session-deleted", "400.bad-request", "403.forbidden", "403.read-only",
        "409.conflict", "412.if-match-session", "429.too-many-requests",
        "503.service-unavailable", "drop", "reset", "hang", "lost-answer")}
#: The cells only a request about a lobby not there yet can get: the read before joining
#: a new lobby, and the write that creates it.
CREATE_CELLS = {sweep.cell_name(GET, f) for f in (
    "202.accepted", "204.get-session", "404.not-found")} | {sweep.cell_name(PUT, f) for f in (
        "202.accepted", "404.not-found")}
#: Turns a match lasts before the title moves to a new lobby.
MATCH_TURNS = 3
#: Cells that recover in milliseconds, for the runs that test order and sharing.
QUICK = "GET */400.*,403.forbidden"
QUICK_CELLS = {sweep.cell_name(GET, "400.bad-request"), sweep.cell_name(GET, "403.forbidden")}


@pytest.fixture
def standin_config(tmp_path: Path) -> Path:
    """The stand-in with a rate limit a fast scripted title does not reach."""
    default = Path(recording.__file__).parent.parent / "data" / "emulator.yaml"
    config = tmp_path / "standin.yaml"
    config.write_text(default.read_text(encoding="utf-8").replace(
        "rate_limit: {burst: 30, sustained: 300}",
        "rate_limit: {burst: 100000, sustained: 1000000}"), encoding="utf-8")
    return config


def done_cells(state: Path) -> set[str]:
    if not state.exists():
        return set()
    return set(json.loads(state.read_text(encoding="utf-8"))["cells"])


def play(client: LibraryClient, turn: int, matches: bool) -> None:
    """One turn. With `matches`, every MATCH_TURNS turns the title starts a new lobby: it
    reads it first (not there yet) and its first write creates it, as a title hosting match
    after match does; so the faults only a create or a read of a missing session can get
    have requests to land on."""
    match, within = divmod(turn, MATCH_TURNS) if matches else (0, 1)
    path = title.session_path(f"sweep-lobby-{match}" if matches else "sweep-lobby")
    if within == 0:
        client.read_session(path)
    sweep_turn(client, path, turn)


def sweep_pass(launch: Launcher, config: Path, state: Path, until: set[str], *args: str,
               most: int | None = None, blind: bool = False, deadline_s: float = 150,
               matches: bool = True) -> Path:
    """One playthrough through a sweeping proxy until the state file holds `until` (or
    `most` new cells, or the deadline); the recording."""
    standin = launch.standin("--config", str(config))
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--quiet", "--sweep",
                         "--sweep-state", str(state), "--sweep-gap", "200ms",
                         "--set", "mpsd_hang_max=1", *args)
    before = done_cells(state)
    client = LibraryClient(proxy.url, PLAYER, blind_resend=blind)
    started = time.monotonic()
    try:
        turn, after = 0, None
        while time.monotonic() - started < deadline_s and (after is None or turn < after):
            play(client, turn, matches)
            turn += 1
            done = done_cells(state)
            if after is None and (until <= done
                                  or (most is not None and len(done - before) >= most)):
                after = turn + 3  # a few more turns: what the title did after the last fault
            time.sleep(0.05)
    finally:
        client.close()
    proxy.stop()
    standin.stop()
    assert proxy.record is not None
    return proxy.record


def injected(record: Path) -> list[str]:
    """The sweep's cells in the order the recording shows them injected."""
    cells: list[str] = []
    for r in read_records(record):
        provenance = r.get("provenance") or {}
        if provenance.get("scenario") == "sweep" and provenance["rule"] not in cells:
            cells.append(provenance["rule"])
    return cells


def matrix_of(*records: Path, fmt: str = "json", out: Path | None = None,
              fail_on: bool = False) -> tuple[int, str]:
    args = [sys.executable, "-m", "mpsdproxy", "report", str(records[0]), "--matrix",
            "--format", fmt]
    for other in records[1:]:
        args += ["--also", str(other)]
    if out is not None:
        args += ["-o", str(out)]
    if fail_on:
        args += ["--fail-on", "fail"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, done.stdout


def cells_by_name(text: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in json.loads(text)["cells"]}


def assert_only_reachable_injected(record: Path) -> None:
    """Each injected cell was one the catalog allows for that very request, judged from
    the recording (the session's existence learned from the service's answers only)."""
    faults = {f.name: f for f in sweep.fault_list()}
    tracker = sessions.SessionTracker()
    for r in read_records(record):
        exchange = recording.to_exchange(r)
        key = exchange.request.resource.key
        exists = tracker.exists(key) if key else None
        provenance = r.get("provenance") or {}
        if provenance.get("scenario") == "sweep" and not provenance.get("note"):
            _, fault = sweep.split_cell(provenance["rule"])
            situation = catalog.Situation.of(exchange.request, exists)
            assert faults[fault].why_not(situation) is None, (r["seq"], provenance["rule"])
        if provenance.get("source") == "forwarded":
            tracker.observe(exchange)


def test_a_well_behaved_title_recovers_from_every_reachable_cell(
        launch: Launcher, standin_config: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    record = sweep_pass(launch, standin_config, state, UPDATE_CELLS | CREATE_CELLS)
    assert UPDATE_CELLS | CREATE_CELLS <= done_cells(state)
    assert_only_reachable_injected(record)
    code, text = matrix_of(record, fail_on=True)
    cells = cells_by_name(text)
    assert code == 0
    for name in UPDATE_CELLS | CREATE_CELLS:
        assert cells[name]["state"] == "recovered", cells[name]
    # Each recovered with its time, or given up cleanly (the match ended: a new lobby).
    assert all(cells[name]["recover_ms"] is not None or "given up cleanly"
               in cells[name]["reason"] for name in UPDATE_CELLS | CREATE_CELLS), \
        {n: cells[n]["reason"] for n in UPDATE_CELLS | CREATE_CELLS}
    # Every reachable cell of its operations is recovered; the rest honestly not reachable.
    mine = {name: c for name, c in cells.items() if c["operation"] in (GET, PUT)}
    assert {c["state"] for c in mine.values()} == {"recovered", "not-reachable"}, \
        {n: c["state"] for n, c in mine.items() if c["state"] not in ("recovered",
                                                                     "not-reachable")}
    assert not [c for c in cells.values() if c["state"] == "not-recovered"]
    unreachable = cells[sweep.cell_name(GET, "409.conflict")]
    assert unreachable["state"] == "not-reachable" and "write" in unreachable["reason"]
    assert not any(f"{GET} × 409" in cell for cell in injected(record))

    _, junit = matrix_of(record, fmt="junit")
    cases = {c.get("name"): c for c in ET.fromstring(junit).iter("testcase")}
    assert set(cases) == set(cells)
    assert all(cases[name].find("failure") is None for name in UPDATE_CELLS)

    page = tmp_path / "matrix.html"
    matrix_of(record, fmt="html", out=page)
    done = run_chromium(["--dump-dom", page.as_uri()], tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Fault sweep matrix" in done.stdout
    assert sweep.cell_name(PUT, "412.if-match-session") in done.stdout
    shot = tmp_path / "matrix.png"
    done = run_chromium([f"--screenshot={shot}", page.as_uri()], tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    _, _, colours = png_size_and_colours(shot.read_bytes())
    assert colours > 64


def test_a_title_that_resends_the_refused_etag_does_not_recover(
        launch: Launcher, standin_config: Path, tmp_path: Path) -> None:
    cell = sweep.cell_name(PUT, "412.if-match-session")
    record = sweep_pass(launch, standin_config, tmp_path / "state.json", {cell},
                        "--sweep-only", "PUT */412.*", blind=True, matches=False)
    code, text = matrix_of(record, fail_on=True)
    found = cells_by_name(text)[cell]
    assert code == 1
    assert found["state"] == "not-recovered" and "did not succeed again" in found["reason"]
    assert found["records"]


def test_two_runs_sharing_the_state_complete_it_without_repeats(
        launch: Launcher, standin_config: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = sweep_pass(launch, standin_config, state, QUICK_CELLS, "--sweep-only", QUICK,
                       most=1)
    second = sweep_pass(launch, standin_config, state, QUICK_CELLS, "--sweep-only", QUICK)
    one, two = injected(first), injected(second)
    assert len(one) == 1 and not set(one) & set(two)
    assert set(one) | set(two) == QUICK_CELLS == done_cells(state)
    code, text = matrix_of(first, second)
    cells = cells_by_name(text)
    assert all(cells[name]["state"] == "recovered" for name in QUICK_CELLS)


def test_the_same_seed_gives_the_same_order(
        launch: Launcher, standin_config: Path, tmp_path: Path) -> None:
    orders = []
    for run in ("a", "b"):
        record = sweep_pass(launch, standin_config, tmp_path / f"{run}.json", QUICK_CELLS,
                            "--sweep-only", QUICK, "--sweep-seed", "11")
        orders.append(injected(record))
    assert orders[0] == orders[1] and set(orders[0]) == QUICK_CELLS


@pytest.mark.parametrize(("args", "says"), [
    (["--sweep-state", "{state}"], "--sweep-state {state}: {state}:1: not a sweep state file"),
    (["--sweep-only", "/"], "--sweep-only '/': expected OPS/FAULTS"),
    (["--sweep-gap", "2x"], "--sweep-gap 2x: expected a duration"),
])
def test_bad_sweep_flags_are_refused_in_one_line(tmp_path: Path, args: list[str],
                                                 says: str) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json", encoding="utf-8")
    args = [a.format(state=state) for a in args]
    done = subprocess.run([sys.executable, "-m", "mpsdproxy", "run", "--listen-port", "0",
                           "--confdir", str(tmp_path), "--sweep", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert says.format(state=state) in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_matrix_of_an_empty_file_is_bad_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "mpsdproxy", "report", str(empty), "--matrix"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and str(empty) in done.stderr
    assert "Traceback" not in done.stderr
