"""The resilience matrix: operation x fault, built from sweep recordings alone.

`mpsdproxy report --matrix` reads one or more recordings of a fault sweep
(`mpsdproxy run --sweep`) and fills one cell per operation the title made and
fault of the sweep's list (`sweep.fault_list`):

- recovered: the sweep injected it (the recording's fault note names the cell)
  and every recovery verdict that applies passed (`verdicts/recovery_rules.py`),
  with the time the title took to make the call succeed again;
- not recovered: a recovery verdict failed; which, why, and the records;
- not reachable: no request of that operation in the recordings was one the
  service could answer so (the catalog's `why_not`, whose words say why), so it
  was rightly never injected;
- not exercised: some request allowed it, but the sweep has not injected it yet.

Whether the session of a request existed (which decides some rows) is learned
as the injector learns it: from the answers the service gave
(`sessions.SessionTracker`), never from injected ones. Output: text, JSON,
JUnit (one test case per cell, named by the cell) and HTML (`matrix_html.py`).
"""

from __future__ import annotations

import contextlib
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mpsdproxy import catalog
from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import rta
from mpsdproxy import sessions
from mpsdproxy import sweep
from mpsdproxy.recording import messages
from mpsdproxy.report import junit
from mpsdproxy.verdicts import recovery_rules
from mpsdproxy.verdicts.base import Status
from mpsdproxy.verdicts.base import Verdict
from mpsdproxy.verdicts.engine import Engine

__all__ = ["RECOVERED", "NOT_RECOVERED", "NOT_REACHABLE", "NOT_EXERCISED", "STATES",
           "CellResult", "Matrix", "build_matrix", "render_matrix", "exit_code"]

RECOVERED, NOT_RECOVERED = "recovered", "not-recovered"
NOT_REACHABLE, NOT_EXERCISED = "not-reachable", "not-exercised"
STATES = (RECOVERED, NOT_RECOVERED, NOT_REACHABLE, NOT_EXERCISED)


@dataclass
class CellResult:
    name: str
    operation: str
    fault: str
    state: str = NOT_REACHABLE
    reason: str = ""
    records: list[str] = field(default_factory=list)  # "file#seq"
    recover_ms: float | None = None
    verdicts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "operation": self.operation, "fault": self.fault,
                "state": self.state, "reason": self.reason, "records": self.records,
                "recover_ms": self.recover_ms, "verdicts": self.verdicts}


@dataclass
class Matrix:
    sources: list[str]
    operations: list[str]
    faults: list[str]
    cells: dict[str, CellResult]
    #: Lines of the recordings no cell could use: `file:line: problem`.
    skipped: list[str] = field(default_factory=list)

    def cell(self, operation: str, fault: str) -> CellResult:
        return self.cells[sweep.cell_name(operation, fault)]

    def counts(self) -> dict[str, int]:
        found = dict.fromkeys(STATES, 0)
        for cell in self.cells.values():
            found[cell.state] += 1
        return found

    def to_dict(self) -> dict[str, Any]:
        return {"format": "mpsdproxy-sweep-matrix", "version": 1,
                "sources": self.sources, "operations": self.operations, "faults": self.faults,
                "counts": self.counts(), "skipped": self.skipped,
                "cells": [c.to_dict() for c in self.cells.values()]}


class _Builder:
    def __init__(self) -> None:
        self.faults = sweep.fault_list()
        self.operations: dict[sweep.Operation, None] = {}
        self.reachable: dict[str, str] = {}  # cell -> "file#seq" of a request allowing it
        self.why: dict[str, str] = {}  # cell -> why not (the last request's reason)
        #: cell -> (source, the recovery verdicts about its fault), per recording
        self.injected: dict[str, list[tuple[str, list[recovery_rules.Recovery]]]] = {}
        #: Lines no cell could use, as `file:line: problem` (every format names them).
        self.skipped: list[recording.ReadIssue] = []

    def add(self, path: str) -> None:
        tracker = sessions.SessionTracker()
        source = os.path.basename(path)
        self._seen: set[str] = set()
        decided = _verdicts(path)
        verdicts = _recovery_by_fault(decided)
        for record in recording.read(path, messages=True, issues=self.skipped):
            if not isinstance(record.get("seq"), int):
                continue
            if messages.is_message(record):
                self._tap(record, source, decided)
                continue
            op = sweep.Operation.of_record(record)
            if op is None:
                continue
            try:
                exchange = recording.to_exchange(record)
            except (ValueError, KeyError, TypeError):
                continue
            key = exchange.request.resource.key
            situation = catalog.Situation.of(exchange.request,
                                             tracker.exists(key) if key else None)
            self._reach(op, situation, f"{source}#{record['seq']}")
            if self._first(record):
                found = verdicts.get(record["seq"], [])
                self.injected.setdefault(record["provenance"]["rule"], []).append((source, found))
            provenance = record.get("provenance") or {}
            if provenance.get("source") == "forwarded" or provenance.get("forwarded"):
                tracker.observe(exchange)

    def _reach(self, op: sweep.Operation, situation: catalog.Situation, where: str) -> None:
        """Which faults this request (or tap) of `op` allowed, and why not the others."""
        self.operations.setdefault(op, None)
        for fault in self.faults:
            name = sweep.cell_name(op, fault.name)
            reason = fault.why_not(situation)
            if reason is None:
                self.reachable.setdefault(name, where)
            else:
                self.why[name] = reason

    def _first(self, record: dict[str, Any]) -> bool:
        """Whether the record is a sweep cell's fault (its first record: later records of
        the rule follow from it, as a newer ETag or a late tap)."""
        provenance = record.get("provenance") or {}
        rule = provenance.get("rule")
        if provenance.get("scenario") != sweep.SCENARIO_NAME or not isinstance(rule, str) \
                or rule in self._seen:
            return False
        self._seen.add(rule)
        return True

    def _tap(self, record: dict[str, Any], source: str, decided: list[Verdict]) -> None:
        """A shoulder tap from the service (delivered, or a fault's note of one dropped):
        its RTA operation, and the sweep's RTA fault on it with the verdict that judges it."""
        found = _tapped(record)
        if found is None:
            return
        op, resource = found
        situation = catalog.Situation(sweep.faultlist.RTA_METHOD, resource, None, None, None)
        self._reach(op, situation, f"{source}#{record['seq']}")
        if self._first(record):
            _, fault = sweep.split_cell(record["provenance"]["rule"])
            self.injected.setdefault(record["provenance"]["rule"], []).append(
                (source, _rta_recovery(decided, fault, record["seq"])))

    def build(self, sources: list[str]) -> Matrix:
        ops = sorted(self.operations, key=lambda o: (o.template, o.kind, o.method))
        faults = [f.name for f in self.faults]
        cells = {}
        for op in ops:
            for fault in faults:
                name = sweep.cell_name(op, fault)
                cells[name] = self._cell(name, op.name, fault)
        return Matrix(sources, [o.name for o in ops], faults, cells,
                      [str(issue) for issue in self.skipped])

    def _cell(self, name: str, operation: str, fault: str) -> CellResult:
        cell = CellResult(name, operation, fault)
        runs = self.injected.get(name)
        if not runs:
            if name in self.reachable:
                cell.state = NOT_EXERCISED
                cell.reason = f"reachable (e.g. record {self.reachable[name]}), not injected yet"
            else:
                cell.state = NOT_REACHABLE
                cell.reason = self.why.get(name, "the service cannot give it here")
            return cell
        failed = []
        for source, found in runs:
            for verdict in found:
                item = verdict.to_dict() | {"source": source}
                item["records"] = [f"{source}#{seq}" for seq in verdict.records]
                cell.verdicts.append(item)
                cell.records.extend(r for r in item["records"] if r not in cell.records)
                if verdict.status is Status.FAIL:
                    failed.append(verdict)
                elif verdict.recover_ms is not None and verdict.status is Status.PASS:
                    cell.recover_ms = max(cell.recover_ms or 0.0, verdict.recover_ms)
        if failed:
            cell.state, cell.recover_ms = NOT_RECOVERED, None
            cell.reason = "; ".join(f"{v.rule}: {v.reason}" for v in failed)
        else:
            cell.state = RECOVERED
            call = next((v for v in cell.verdicts if v["rule"] == "recovery.call"),
                        cell.verdicts[0] if cell.verdicts else None)
            cell.reason = call["reason"] if call else "injected; nothing after it to judge"
        return cell


#: The verdict that judges the title after each RTA fault of the sweep (`verdicts/rta_rules.py`).
RTA_VERDICTS = {"tap:drop": "tap-read", "tap:delay": "tap-read", "rta:resync": "rta-resync",
                "rta:close": "rta-reconnect"}


def _tapped(record: dict[str, Any]) -> tuple[sweep.Operation, Any] | None:
    """The RTA operation of a service's event record (its first tap's session, spelt as
    the service sent it, as the sweep named the cell), or None. Read from the frame's
    text: a dropped tap's note is no message the title got (`messages.rta_of` skips it)."""
    payload = record.get("payload")
    text = payload.get("text") if isinstance(payload, dict) else None
    if record.get("direction") != "server" or not isinstance(text, str):
        return None
    decoded = rta.decode(text, from_client=False)
    if decoded is None or decoded.type is not rta.Type.EVENT or not decoded.taps:
        return None
    return sweep.Operation.of_tap(decoded.taps[0].resource)


def _rta_recovery(decided: list[Verdict], fault: str, seq: int
                  ) -> list[recovery_rules.Recovery]:
    """The verdict about what the title did after an RTA fault at record `seq`: the first
    one of the rule that judges it starting at or after the fault (after a dropped tap,
    the next tap's read; after a delay, the late tap's; after a resync or a close, the
    re-reads or the reconnect)."""
    rule = RTA_VERDICTS.get(fault)
    after = [v for v in decided if v.rule == rule and v.records and v.records[0] >= seq
             and v.status is not Status.NOT_APPLICABLE]
    if not after:
        return [recovery_rules.Recovery(rule or fault, Status.NOT_APPLICABLE,
                                        "nothing after the fault for it to judge")]
    return [recovery_rules.Recovery.of(min(after, key=lambda v: v.records[0]))]


def _verdicts(path: str) -> list[Verdict]:
    """Every verdict the engine decides over one recording, exchanges and websocket
    messages in file order (a dropped frame's note only moves its clock)."""
    engine = Engine()
    decided: list[Verdict] = []
    for record in recording.read(path, messages=True):
        if messages.is_message(record):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                decided.extend(engine.feed_message(messages.from_record(record)))
            continue
        try:
            decided.extend(engine.feed(recording.to_exchange(record)))
        except (ValueError, KeyError, TypeError):
            continue
    decided.extend(engine.finish())
    return decided


def _recovery_by_fault(decided: list[Verdict]) -> dict[int, list[recovery_rules.Recovery]]:
    """The recovery verdicts by the seq of the fault they judge: the verdict engine's own
    (`verdicts/recovery_rules.py`), so the matrix, `report` and the live log agree. A rule
    with nothing to say about a fault is not applicable to it."""
    found: dict[int, dict[str, recovery_rules.Recovery]] = {}
    for verdict in decided:
        if verdict.rule in recovery_rules.RECOVERY_RULES and verdict.records:
            found.setdefault(verdict.records[0], {})[verdict.rule] = \
                recovery_rules.Recovery.of(verdict)
    return {seq: [by_rule.get(rule) or recovery_rules.Recovery(
                rule, Status.NOT_APPLICABLE, "nothing to judge about this fault")
                for rule in recovery_rules.RECOVERY_RULES]
            for seq, by_rule in found.items()}


def build_matrix(paths: Iterable[str | os.PathLike[str]]) -> Matrix:
    """The matrix of one or more sweep recordings (a pass of several runs)."""
    builder = _Builder()
    sources = [os.fspath(p) for p in paths]
    for path in sources:
        builder.add(path)
    return builder.build(sources)


# --- rendering --------------------------------------------------------------------------

_MARKS = {RECOVERED: "ok", NOT_RECOVERED: "FAIL", NOT_REACHABLE: "-", NOT_EXERCISED: "?"}


def render_text(matrix: Matrix) -> str:
    counts = matrix.counts()
    lines = [f"Fault sweep matrix: {len(matrix.operations)} operation(s) x "
             f"{len(matrix.faults)} fault(s), from {', '.join(matrix.sources)}",
             "  " + ", ".join(f"{n} {state}" for state, n in counts.items()),
             "  (ok recovered, FAIL not recovered, ? not exercised yet, - not reachable)", ""]
    if matrix.skipped:
        lines[-1:] = [f"  {len(matrix.skipped)} line(s) skipped: "
                      + "; ".join(matrix.skipped[:3]), ""]
    if not counts[RECOVERED] and not counts[NOT_RECOVERED]:
        lines[-1:] = ["  No fault of a sweep is in these recordings: record a pass with "
                      "`mpsdproxy run --sweep --record FILE`.", ""]
    for op in matrix.operations:
        lines.append(op)
        for fault in matrix.faults:
            cell = matrix.cell(op, fault)
            if cell.state in (NOT_REACHABLE, NOT_EXERCISED):
                continue
            took = f" in {cell.recover_ms:.0f} ms" if cell.recover_ms is not None else ""
            lines.append(f"  {_MARKS[cell.state]:>4} {fault}{took}: {cell.reason}")
        for state in (NOT_EXERCISED, NOT_REACHABLE):
            left = [f for f in matrix.faults if matrix.cell(op, f).state == state]
            if left:
                lines.append(f"  {_MARKS[state]:>4} {state.replace('-', ' ')}: {', '.join(left)}")
    return model.terminal_safe("\n".join(lines) + "\n", lines=True)


def render_json(matrix: Matrix) -> str:
    return jsonbody.document(model.printable_data(matrix.to_dict()))


def render_junit(matrix: Matrix) -> str:
    """One test case per cell, named by the cell (stable build to build): a failure for
    not recovered, skipped for not reachable and not exercised."""
    counts = matrix.counts()
    suites = ET.Element("testsuites", name="mpsdproxy sweep")
    suite = ET.SubElement(suites, "testsuite", name="mpsdproxy sweep matrix",
                          tests=str(len(matrix.cells)), failures=str(counts[NOT_RECOVERED]),
                          errors="0",
                          skipped=str(counts[NOT_REACHABLE] + counts[NOT_EXERCISED]))
    for cell in matrix.cells.values():
        seconds = (cell.recover_ms or 0.0) / 1000
        case = junit.element(suite, "testcase", name=cell.name, classname=cell.operation,
                             time=f"{seconds:.3f}")
        detail = f"{cell.reason}\nrecords: {', '.join(cell.records)}" if cell.records \
            else cell.reason
        if cell.state == NOT_RECOVERED:
            junit.element(case, "failure", detail, message=cell.reason, type="not-recovered")
        elif cell.state in (NOT_REACHABLE, NOT_EXERCISED):
            junit.element(case, "skipped", message=f"{cell.state}: {cell.reason}")
        else:
            junit.element(case, "system-out", detail)
    if matrix.skipped:
        junit.element(suite, "system-err", f"{len(matrix.skipped)} line(s) skipped:\n"
                      + "\n".join(matrix.skipped))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, "unicode") + "\n"


def render_matrix(matrix: Matrix, fmt: str) -> str:
    """Text, JSON or JUnit (HTML is `matrix_html.render_html`, which reads this module)."""
    if fmt == "json":
        return render_json(matrix)
    if fmt == "junit":
        return render_junit(matrix)
    return render_text(matrix)


def exit_code(matrix: Matrix, fail_on: str | None) -> int:
    """1 when a cell was not recovered and --fail-on asks; else 0."""
    return 1 if fail_on and matrix.counts()[NOT_RECOVERED] else 0
