"""Round two of the fault sweep: cells claimed under a file lock by runs sharing a state
file (two planners in two processes), and the recovery rules as the verdict engine's own."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from test_sweep import LOBBY
from test_sweep import MPSD
from test_sweep import T0
from test_sweep import op
from test_sweep import pass_records
from test_sweep import planner
from test_sweep import rec
from test_sweep import situation

from mpsdproxy import catalog
from mpsdproxy import recording
from mpsdproxy import sweep
from mpsdproxy.sweep import filelock
from mpsdproxy.sweep.state import CLAIM_TTL_S
from mpsdproxy.verdicts import RULES
from mpsdproxy.verdicts import Engine
from mpsdproxy.verdicts import Status

ROOT = Path(__file__).resolve().parent.parent

#: A planner in a process of its own: waits for the start file, then takes every cell of
#: `GET session LobbySession` it can, and prints them.
CHILD = """
import os, sys, time
from mpsdproxy import catalog, model, sweep
state, go, url = sys.argv[1:4]
request = model.Request("GET", url, model.Headers(()))
where = catalog.Situation.of(request, True)
operation = sweep.Operation.of(request)
plan = sweep.Planner(sweep.fault_list(), gap=0.0, state=sweep.SweepState(state))
deadline = time.monotonic() + 30
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.002)
while (cell := plan.choose(operation, where)) is not None:
    plan.fired(cell)
    plan.succeeded(operation)
    print(cell.name, flush=True)
"""


def test_two_planners_in_two_processes_never_take_the_same_cell(tmp_path: Path) -> None:
    state, go = tmp_path / "state.json", tmp_path / "go"
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(state), str(go),
                                  MPSD + LOBBY], stdout=subprocess.PIPE, text=True, cwd=ROOT)
                for _ in range(2)]
    time.sleep(0.5)  # both importing; the start file lets them race from the same moment
    go.write_text("go", encoding="utf-8")
    taken = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        taken.append(out.split("\n")[:-1])
    one, two = taken
    expected = {c.name for c in planner().cells(op("GET"))
                if c.fault.why_not(situation("GET")) is None}
    assert not set(one) & set(two) and len(one) + len(two) == len(expected)
    assert set(one) | set(two) == expected
    data = json.loads(state.read_text(encoding="utf-8"))
    assert set(data["cells"]) == expected and data["claims"] == {}
    assert Path(filelock.lock_path(str(state))).exists()


def test_a_claim_holds_other_runs_off_until_given_back_or_stale(tmp_path: Path) -> None:
    path = str(tmp_path / "state.json")
    one, two = sweep.SweepState(path), sweep.SweepState(path)
    name = "GET session LobbySession × drop"
    assert one.claim(name) and not one.done(name)
    assert not two.claim(name) and two.done(name)
    one.release(name)
    assert two.claim(name)
    data = json.loads((tmp_path / "state.json").read_text(encoding="utf-8"))
    data["claims"][name]["at"] -= CLAIM_TTL_S + 1  # its run died mid-request
    (tmp_path / "state.json").write_text(json.dumps(data), encoding="utf-8")
    assert one.claim(name)
    one.mark(name)
    two.refresh()
    assert two.done(name) and not two.claim(name)


def test_a_missed_cell_gives_its_claim_back(tmp_path: Path) -> None:
    first, second = planner(tmp_path), planner(tmp_path)
    cell = first.choose(op("GET"), situation("GET"))
    assert cell is not None
    assert cell.name not in [c.name for c in second.pending(op("GET"))]
    first.missed(cell)
    assert cell.name in [c.name for c in second.pending(op("GET"))]


# -- the recovery rules in the engine ----------------------------------------------------------


def judged(records: list[dict]) -> list:
    engine = Engine()
    found = []
    for record in records:
        found.extend(engine.feed(recording.to_exchange(record)))
    return found + engine.finish()


def test_the_recovery_rules_are_rules_of_the_engine() -> None:
    ids = [r.id for r in RULES]
    assert "recovery.call" in ids and "recovery.state" in ids
    found = judged(pass_records())
    call = [v for v in found if v.rule == "recovery.call"]
    state = [v for v in found if v.rule == "recovery.state"]
    assert [(v.status, v.records) for v in call] == [(Status.PASS, (2, 3))]
    assert call[0].gaps_ms[0] == 1510.0 and "Recovered after a sweep fault" in str(call[0])
    assert [(v.status, v.records) for v in state] == [(Status.PASS, (2, 4))]


def test_without_a_sweep_fault_the_recovery_rules_are_not_applicable() -> None:
    healthy = [rec(1, 0, "PUT", 201), rec(2, 1, "PUT", 503), rec(3, 2, "GET", 404)]
    found = [v for v in judged(healthy) if v.rule.startswith("recovery.")]
    assert [(v.rule, v.status) for v in found] == [
        ("recovery.call", Status.NOT_APPLICABLE), ("recovery.state", Status.NOT_APPLICABLE)]
    for sample in sorted((ROOT / "recordings").glob("sample-*.jsonl")):
        found = [v for v in judged(list(recording.read(str(sample))))
                 if v.rule.startswith("recovery.")]
        assert {v.status for v in found} == {Status.NOT_APPLICABLE}, sample.name


def test_a_fault_on_another_scenario_is_not_a_sweep_fault() -> None:
    records = pass_records()
    records[1]["provenance"]["scenario"] = "retry-after-drill"
    found = [v for v in judged(records) if v.rule.startswith("recovery.")]
    assert {v.status for v in found} == {Status.NOT_APPLICABLE}


# -- RTA cells and the note of a dropped frame ---------------------------------------------

TAP_TEXT = ('[3,0,{"ncid":"n-1","shoulderTaps":[{"resource":'
            '"7492baca-c1b4-440d-a391-b7ef00000001~LobbySession~lobby-1",'
            '"changeNumber":2,"branch":"b"}]}]')


def test_rta_faults_act_on_taps_only_and_http_faults_on_requests_only() -> None:
    found = sweep.Operation.of_tap("7492baca-c1b4-440d-a391-b7ef00000001~LobbySession~lobby-1")
    assert found is not None
    operation, resource = found
    assert operation.name == "RTA tap LobbySession" and resource.name == "lobby-1"
    tap = catalog.Situation("RTA", resource, None, None, None)
    faults = {f.name: f for f in sweep.fault_list()}
    assert {n for n, f in faults.items() if f.why_not(tap) is None} == set(
        sweep.faultlist.RTA_FAULTS)
    assert "shoulder tap" in (faults["412.if-match-session"].why_not(tap) or "")
    assert "shoulder tap" in (faults["tap:drop"].why_not(situation("GET")) or "")


def test_a_dropped_frame_is_a_note_no_reader_takes_for_a_delivered_message() -> None:
    from mpsdproxy.recording import messages

    sent = messages.WebsocketMessage(
        "wss://rta.xboxlive.com/connect", "server", "text", TAP_TEXT.encode(), start=T0,
        provenance={"source": "forwarded", "rule": "RTA tap LobbySession × tap:drop",
                    "scenario": "sweep", "fault": "tap:drop"}, dropped=True)
    record = {**messages.to_record(sent), "seq": 7}
    assert record["dropped"] is True and record["rta"]["type"] == "event"
    assert messages.is_dropped(record) and messages.check_message(record) is None
    assert messages.rta_of(record) is None  # not a tap the title got (report, replay)
    back = messages.from_record(record)
    assert back.dropped and back.payload == TAP_TEXT.encode()
    engine = Engine()
    assert engine.feed_message(back) == [] and engine.rta_messages == 0
    delivered = messages.from_record({k: v for k, v in record.items() if k != "dropped"})
    assert not delivered.dropped and rta_event(engine, delivered)


def rta_event(engine: Engine, message: object) -> bool:
    engine.feed_message(message)  # type: ignore[arg-type]
    return engine.rta_messages == 1
