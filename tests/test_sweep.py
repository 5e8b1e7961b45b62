"""The fault sweep's planning, order, filter and state file, and the matrix's verdicts, as
pure logic (the end-to-end behaviour through the proxy is tests/test_e2e_sweep.py)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import ManualClock

from mpsdproxy import catalog
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import resources
from mpsdproxy import sweep
from mpsdproxy.cli import cli
from mpsdproxy.report import matrix
from mpsdproxy.sweep.state import BadState
from mpsdproxy.verdicts import recovery_rules
from mpsdproxy.verdicts.base import Status
from mpsdproxy.verdicts.base import Verdict
from mpsdproxy.verdicts.engine import Engine


def judge(records: Sequence[Mapping[str, Any]], index: int,
          limit_s: float = recovery_rules.CALL_LIMIT_S) -> list[recovery_rules.Recovery]:
    """Both recovery verdicts for the fault at `records[index]`, from the verdict engine run
    over the records, as `report` runs it (not applicable when a rule has nothing to say)."""
    engine = Engine()
    for rule in engine.rules:
        if isinstance(rule, recovery_rules.RecoveryCallRule):
            rule.limit_s = limit_s
    found: list[Verdict] = []
    for record in records:
        found.extend(engine.feed(recording.to_exchange(record)))
    found.extend(engine.finish())
    seq = records[index].get("seq")
    out = []
    for rule in recovery_rules.RECOVERY_RULES:
        mine = [v for v in found if v.rule == rule and v.records[:1] == (seq,)]
        nothing = recovery_rules.Recovery(rule, Status.NOT_APPLICABLE,
                                          "nothing to judge about this fault")
        out.append(recovery_rules.Recovery.of(mine[0]) if mine else nothing)
    return out


def judge_call(records: Sequence[Mapping[str, Any]], index: int,
               limit_s: float = recovery_rules.CALL_LIMIT_S) -> recovery_rules.Recovery:
    return judge(records, index, limit_s)[0]


def judge_state(records: Sequence[Mapping[str, Any]], index: int) -> recovery_rules.Recovery:
    return judge(records, index)[1]


MPSD = "https://sessiondirectory.xboxlive.com"
SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
ETAG = '"abc"'


def situation(method: str, path: str = LOBBY, exists: bool | None = True,
              headers: tuple[tuple[str, str], ...] = ()) -> catalog.Situation:
    request = model.Request(method, MPSD + path, model.Headers(headers))
    return catalog.Situation.of(request, exists)


def op(method: str, path: str = LOBBY) -> sweep.Operation:
    found = sweep.Operation.of(model.Request(method, MPSD + path))
    assert found is not None
    return found


def planner(tmp_path: Path | None = None, **kw: Any) -> sweep.Planner:
    state = sweep.SweepState(str(tmp_path / "state.json")) if tmp_path else None
    return sweep.Planner(sweep.fault_list(), state=state, clock=kw.pop("clock", ManualClock()),
                         **kw)


# -- operations and cells --------------------------------------------------------------------


def test_an_operation_is_method_kind_and_template() -> None:
    assert op("PUT").name == "PUT session LobbySession"
    assert op("DELETE", LOBBY + "/members/me").name == "DELETE member LobbySession"
    assert op("POST", "/handles").name == "POST handle -"
    name = sweep.cell_name(op("PUT"), "412.if-match-session")
    assert name == "PUT session LobbySession × 412.if-match-session"
    assert sweep.split_cell(name) == ("PUT session LobbySession", "412.if-match-session")
    with pytest.raises(ValueError):
        sweep.split_cell("PUT session LobbySession")


def test_the_fault_list_is_the_table_but_the_hoped_for_rows_plus_connection_faults() -> None:
    names = [f.name for f in sweep.fault_list()]
    assert "200.ok" not in names and "201.created" not in names
    assert {e.id for e in catalog.ENTRIES} - {"200.ok", "201.created"} <= set(names)
    assert names[-8:] == ["drop", "reset", "hang", "lost-answer",
                          "tap:drop", "tap:delay", "rta:resync", "rta:close"]


def test_the_429_carries_a_truthful_fgrl_body_and_retry_after() -> None:
    throttle = next(f for f in sweep.fault_list(retry_after=3)
                    if f.name == "429.too-many-requests")
    body = json.loads(throttle.fault.body or b"")
    assert body["currentRequests"] == body["maxRequests"] + 1
    assert body["periodInSeconds"] == 15 and throttle.fault.retry_after == 3
    unavailable = next(f for f in sweep.fault_list(retry_after=3)
                       if f.name == "503.service-unavailable")
    assert unavailable.fault.retry_after == 3


def test_the_catalog_decides_where_a_fault_can_be_given() -> None:
    faults = {f.name: f for f in sweep.fault_list()}
    update = situation("PUT", headers=(("If-Match", ETAG),))
    assert faults["412.if-match-session"].why_not(update) is None
    star = situation("PUT", headers=(("If-Match", "*"),))
    assert "If-Match: *" in (faults["412.if-match-session"].why_not(star) or "")
    read = situation("GET")
    assert faults["409.conflict"].why_not(read) is not None
    assert "needs a write" in (faults["lost-answer"].why_not(read) or "")
    assert faults["lost-answer"].why_not(update) is None
    assert faults["drop"].why_not(read) is None


# -- planning --------------------------------------------------------------------------------


def test_one_cell_at_a_time_then_a_quiet_window_until_the_call_recovers() -> None:
    clock = ManualClock()
    plan = planner(clock=clock, gap=2.0)
    read = situation("GET")
    first = plan.choose(op("GET"), read)
    assert first is not None and first.fault.why_not(read) is None
    assert plan.choose(op("GET"), read) is None  # in flight
    plan.fired(first)
    assert plan.choose(op("GET"), read) is None  # waiting for the title to recover
    clock.now += 5
    assert plan.choose(op("GET"), read) is None
    plan.succeeded(op("GET"))
    assert plan.choose(op("GET"), read) is None  # the quiet window after recovery
    clock.now += 3.1
    second = plan.choose(op("GET"), read)
    assert second is not None and second != first


def test_a_title_that_never_recovers_holds_the_sweep_only_for_the_library_window() -> None:
    clock = ManualClock()
    plan = planner(clock=clock, gap=1.0)
    cell = plan.choose(op("GET"), situation("GET"))
    assert cell is not None
    plan.fired(cell)
    clock.now += sweep.plan.RECOVERY_WINDOW_S - 0.1
    assert plan.choose(op("GET"), situation("GET")) is None
    clock.now += 0.2 + 1.5
    assert plan.choose(op("GET"), situation("GET")) is not None


def test_a_missed_cell_stays_pending() -> None:
    plan = planner()
    cell = plan.choose(op("GET"), situation("GET"))
    assert cell is not None
    plan.missed(cell)
    assert plan.choose(op("GET"), situation("GET")) == cell


def test_a_cell_is_chosen_only_where_the_service_could_give_it() -> None:
    plan = planner()
    read = situation("GET")
    chosen = []
    while (cell := plan.choose(op("GET"), read)) is not None:
        chosen.append(cell.fault.name)
        plan.fired(cell)
        plan.quiet_until = plan.recover_by = float("-inf")
        plan.recovering = None
    assert "412.if-match-session" not in chosen and "409.conflict" not in chosen
    assert "lost-answer" not in chosen and "304.not-modified" not in chosen
    assert {"400.bad-request", "503.service-unavailable", "drop", "hang"} <= set(chosen)


def _order(seed: int, learn: list[str]) -> list[str]:
    plan = planner(seed=seed)
    for method in learn:
        plan.learn(op(method))
    return [c.name for c in plan.cells()]


def test_the_same_seed_gives_the_same_order_whatever_was_learned_first() -> None:
    assert _order(7, ["GET", "PUT"]) == _order(7, ["PUT", "GET"])
    assert _order(7, ["GET", "PUT"]) != _order(8, ["GET", "PUT"])


def test_sweep_only_narrows_operations_and_faults() -> None:
    only = sweep.Only(["PUT session */412.*,503.*", "GET */drop"])
    assert only.allows("PUT session LobbySession", "412.if-match-session")
    assert only.allows("GET session LobbySession", "drop")
    assert not only.allows("GET session LobbySession", "503.service-unavailable")
    assert not only.allows("PUT member LobbySession", "412.if-match-session")
    plan = planner(only=only)
    plan.learn(op("PUT"))
    assert {c.fault.name for c in plan.cells()} == {"412.if-match-session",
                                                   "412.precondition-failed",
                                                   "503.service-unavailable"}
    with pytest.raises(ValueError):
        sweep.Only(["/"])


# -- the state file --------------------------------------------------------------------------


def test_two_planners_sharing_a_state_file_never_repeat_a_cell(tmp_path: Path) -> None:
    one, two = planner(tmp_path), planner(tmp_path)
    read = situation("GET")
    cell = one.choose(op("GET"), read)
    assert cell is not None
    one.fired(cell)
    assert cell.name not in [c.name for c in two.pending(op("GET"))]
    other = two.choose(op("GET"), read)
    assert other is not None and other != cell
    two.fired(other)
    data = json.loads((tmp_path / "state.json").read_text(encoding="utf-8"))
    assert data["format"] == "mpsdproxy-sweep"
    assert set(data["cells"]) == {cell.name, other.name}
    assert not list((tmp_path).glob("*.part"))  # written whole, through a rename
    assert sweep.SweepState(str(tmp_path / "state.json")).done(cell.name)


def test_a_broken_state_file_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "state.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(BadState, match=r"state\.json:1: not a sweep state file"):
        sweep.SweepState(str(bad))
    bad.write_text('{"cells": {}}', encoding="utf-8")
    with pytest.raises(BadState, match="format"):
        sweep.SweepState(str(bad))


# -- recovery verdicts and the matrix ----------------------------------------------------------

T0 = 1_800_000_000.0
ME = {"members": {"me": {"constants": {"system": {"xuid": "2001", "initialize": True}}}}}
DOC = {"constants": {}, "properties": {}, "changeNumber": 2,
       "members": {"0": {"constants": {"system": {"xuid": "2001"}}}}}


def rec(seq: int, at: float, method: str, status: int | None, *, cell: str | None = None,
        body: Any = None, answer: Any = None, path: str = LOBBY,
        headers: list[list[str]] | None = None) -> dict[str, Any]:
    provenance: dict[str, Any] = {"source": "forwarded"}
    if cell is not None:
        provenance = {"source": "injected", "rule": cell, "scenario": "sweep", "seed": 0,
                      "phase": "request", "fault": "status"}
    return {
        "seq": seq, "start": recording.timestamp(T0 + at),
        "end": recording.timestamp(T0 + at + 0.01), "client": "127.0.0.1:5000",
        "request": {"method": method, "url": MPSD + path,
                    "headers": [["Authorization", "redacted:0123"], *(headers or [])],
                    "body": {"json": body} if body is not None else None},
        "response": None if status is None else {
            "status": status, "reason": "", "headers": [["ETag", ETAG]],
            "body": {"json": answer} if answer is not None else None},
        "resource": resources.parse(path).to_dict(),
        "provenance": provenance,
    }


PUT_503 = "PUT session LobbySession × 503.service-unavailable"


def pass_records(cell: str = PUT_503) -> list[dict[str, Any]]:
    return [rec(1, 0, "PUT", 201, body=ME, answer=DOC),
            rec(2, 1, "PUT", 503, cell=cell, body=ME, headers=[["If-Match", ETAG]]),
            rec(3, 2.5, "PUT", 200, body=ME, answer=DOC, headers=[["If-Match", ETAG]]),
            rec(4, 3, "GET", 200, answer=DOC)]


def test_a_call_that_succeeds_again_in_time_recovered() -> None:
    records = pass_records()
    call, state = judge(records, 1)
    assert call.status is Status.PASS and call.records == (2, 3)
    assert call.recover_ms == pytest.approx(1510, abs=1)
    assert state.status is Status.PASS and "still a member" in state.reason


def test_a_call_that_keeps_failing_did_not_recover() -> None:
    records = pass_records()[:2] + [rec(n, n, "PUT", 412, body=ME) for n in range(3, 7)]
    call = judge_call(records, 1)
    assert call.status is Status.FAIL and call.records == (2, 3, 4, 5, 6)


def test_a_success_after_the_limit_is_too_late_and_no_retry_is_a_clean_give_up() -> None:
    late = pass_records()[:2] + [rec(3, 40, "PUT", 200, body=ME, answer=DOC)]
    assert judge_call(late, 1).status is Status.FAIL
    gave_up = pass_records()[:2] + [rec(3, 2, "GET", 200, answer=DOC)]
    verdict = judge_call(gave_up, 1)
    assert verdict.status is Status.PASS and "given up cleanly" in verdict.reason


def test_a_read_that_no_longer_lists_the_title_is_inconsistent() -> None:
    gone = {**DOC, "members": {}}
    records = pass_records()[:3] + [rec(4, 3, "GET", 200, answer=gone)]
    state = judge_state(records, 1)
    assert state.status is Status.FAIL and state.records == (2, 4)


def write(tmp_path: Path, records: list[dict[str, Any]], name: str = "pass.jsonl") -> Path:
    path = tmp_path / name
    lines = [recording.header_line(), *records]
    path.write_bytes(b"".join(recording.encode_line(r) for r in lines))
    return path


def test_the_matrix_tells_the_four_states_apart(tmp_path: Path) -> None:
    built = matrix.build_matrix([write(tmp_path, pass_records())])
    assert built.operations == ["GET session LobbySession", "PUT session LobbySession"]
    cell = built.cell("PUT session LobbySession", "503.service-unavailable")
    assert cell.state == matrix.RECOVERED and cell.recover_ms == pytest.approx(1510, abs=1)
    assert built.cell("PUT session LobbySession", "drop").state == matrix.NOT_EXERCISED
    unreachable = built.cell("GET session LobbySession", "409.conflict")
    assert unreachable.state == matrix.NOT_REACHABLE and "write" in unreachable.reason
    bad = pass_records()[:2] + [rec(3, 2, "PUT", 409, body=ME), rec(4, 3, "PUT", 409, body=ME)]
    failed = matrix.build_matrix([write(tmp_path, bad, "bad.jsonl")])
    cell = failed.cell("PUT session LobbySession", "503.service-unavailable")
    assert cell.state == matrix.NOT_RECOVERED and "bad.jsonl#3" in cell.records
    assert matrix.exit_code(failed, "fail") == 1 and matrix.exit_code(built, "fail") == 0


@pytest.mark.parametrize("fmt", ["text", "json", "junit", "html"])
def test_the_matrix_shows_any_template_name_safely(tmp_path: Path, fmt: str) -> None:
    """A template name percent-decoded to a byte that is not UTF-8 and an escape sequence
    (what a title may send) reaches every matrix format as valid UTF-8, never as a crash
    or as bytes that act on a terminal."""
    odd = LOBBY.replace("LobbySession", "Lobby%E9%1B%5B2J")
    records = [rec(1, 0, "PUT", 201, body=ME, answer=DOC, path=odd),
               rec(2, 1, "PUT", 503, cell=PUT_503.replace("LobbySession", "Lobby\udce9\x1b[2J"),
                   body=ME, path=odd)]
    out = tmp_path / f"matrix.{fmt}"
    result = CliRunner().invoke(cli, ["report", str(write(tmp_path, records)), "--matrix",
                                      "--format", fmt, "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert "\\xe9" in text  # the byte that was not UTF-8, shown
    assert fmt == "html" or "\x1b" not in text  # a browser does not act on ESC
    if fmt == "junit":
        ET.fromstring(text)
    if fmt == "json":
        assert any("\\xe9" in op for op in json.loads(text)["operations"])


def test_the_junit_has_one_case_per_cell_named_by_it(tmp_path: Path) -> None:
    built = matrix.build_matrix([write(tmp_path, pass_records())])
    root = ET.fromstring(matrix.render_junit(built))
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert len(cases) == len(built.cells)
    assert cases[PUT_503].find("failure") is None and cases[PUT_503].find("skipped") is None
    skipped = cases["GET session LobbySession × 409.conflict"].find("skipped")
    assert skipped is not None and "not-reachable" in (skipped.get("message") or "")
    data = json.loads(matrix.render_json(built))
    assert data["counts"]["recovered"] == 1


def test_sweep_again_reruns_done_cells_once(tmp_path: Path) -> None:
    first = planner(tmp_path)
    cell = first.choose(op("GET"), situation("GET"))
    assert cell is not None
    first.fired(cell)
    again = planner(tmp_path, again=sweep.Only([f"GET */{cell.fault.name}"], "--sweep-again"))
    assert cell.name in [c.name for c in again.pending(op("GET"))]
    again.fired(cell)
    assert cell.name not in [c.name for c in again.pending(op("GET"))]
    with pytest.raises(ValueError, match="--sweep-again"):
        sweep.Only(["/"], "--sweep-again")


def test_a_request_about_a_missing_session_gets_a_fault_only_it_allows_first() -> None:
    create = situation("PUT", exists=None)
    cell = planner().choose(op("PUT"), create)
    assert cell is not None and cell.fault.name in ("202.accepted", "404.not-found")
    read = planner().choose(op("GET"), situation("GET", exists=False))
    assert read is not None
    assert read.fault.name in ("202.accepted", "204.get-session", "404.not-found")
    existing = situation("PUT", headers=(("If-Match", ETAG),))
    seeded = planner().choose(op("PUT"), existing)
    assert seeded is not None
    first = [c for c in planner().cells(op("PUT")) if c.fault.why_not(existing) is None][0]
    assert seeded == first  # where the session exists, the seeded order alone
