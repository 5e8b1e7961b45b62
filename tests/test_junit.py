"""JUnit for CI: names a CI server can follow between runs, warnings that do not look
green, anomalies that fail the XML when they fail the exit code, real times."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_report import playtest
from test_report import write

from mpsdproxy import report
from mpsdproxy.cli import cli
from mpsdproxy.verdicts import Status

#: Added to every record number of the second run, so only the title is the same.
OFFSET = 1000


def _demo(where: Path) -> Path:
    """One real run of the demo's scripted titles: its faults pass (a misbehaving title)."""
    where.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "mpsdproxy", "demo", "--record", str(where / "demo.jsonl")],
        capture_output=True, text=True, timeout=120, cwd=where,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return where / "demo-faults.jsonl"


def _renumber(path: Path, offset: int) -> Path:
    """The same recording with every record number moved by `offset`."""
    out = path.with_name("renumbered.jsonl")
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if "seq" in item:
            item["seq"] += offset
        lines.append(json.dumps(item, ensure_ascii=False))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two recordings of the same title: separate runs (other times), other record numbers."""
    base = tmp_path_factory.mktemp("junit")
    return _demo(base / "one"), _renumber(_demo(base / "two"), OFFSET)


def _junit(path: Path, *extra: str) -> tuple[int, ET.Element]:
    """`mpsdproxy report --format junit` as CI calls it; the exit code and the parsed XML."""
    out = path.with_suffix(".xml")
    result = CliRunner().invoke(cli, ["report", str(path), "--format", "junit",
                                      "-o", str(out), *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, ET.parse(out).getroot()


def _names(root: ET.Element) -> list[tuple[str, str]]:
    return [(c.get("classname", ""), c.get("name", "")) for c in root.iter("testcase")]


def test_names_are_the_same_in_two_runs_of_the_same_title(two_runs: tuple[Path, Path]) -> None:
    code_one, one = _junit(two_runs[0], "--fail-on", "fail")
    code_two, two = _junit(two_runs[1], "--fail-on", "fail")
    assert code_one == code_two == 1  # the misbehaving title fails
    assert _names(one) == _names(two)
    assert len(set(_names(one))) == len(_names(one)), "one testcase per name"
    failing = sorted(c.get("name", "") for c in two.iter("testcase")
                     if c.find("failure") is not None)
    assert failing and all(name.count(": ") == 2 for name in failing)  # rule: client: op
    assert any(name.startswith("retry-after: ") and name.endswith(": GET sessions/{name}")
               for name in failing)
    for _, name in _names(two):
        assert not re.search(r"\brecords? \d|#\d", name), name
        assert "bad-lobby" not in name  # session names change between runs of real titles


def test_cases_have_real_times_and_the_suite_a_timestamp(two_runs: tuple[Path, Path]) -> None:
    _, root = _junit(two_runs[0])
    suite = root.find("testsuite")
    assert suite is not None
    first = json.loads(two_runs[0].read_text(encoding="utf-8").splitlines()[1])
    started = datetime.datetime.fromisoformat(suite.get("timestamp", ""))
    recorded = datetime.datetime.fromisoformat(first["start"].replace("Z", "+00:00"))
    assert started.tzinfo is None
    assert abs(started.replace(tzinfo=datetime.UTC) - recorded).total_seconds() < 1
    assert float(suite.get("time", "0")) > 1.0  # the well-behaved title waits out 1 s
    times = {c.get("name"): float(c.get("time", "-1")) for c in suite.iter("testcase")}
    assert all(t >= 0 for t in times.values())
    # the well-behaved title waited the 1 s Retry-After: its verdict spans that wait
    waited = [t for name, t in times.items() if name and name.startswith("retry-after: ")]
    assert max(waited) >= 1.0


def _status_cases(root: ET.Element) -> dict[str, list[ET.Element]]:
    cases: dict[str, list[ET.Element]] = {"fail": [], "warn": [], "n/a": [], "pass": []}
    for case in root.iter("testcase"):
        skipped = case.find("skipped")
        if case.find("failure") is not None:
            cases["fail"].append(case)
        elif skipped is not None:
            key = "warn" if skipped.get("message", "").startswith("warning: ") else "n/a"
            cases[key].append(case)
        else:
            cases["pass"].append(case)
    return cases


def test_warnings_are_skipped_not_green(tmp_path: Path) -> None:
    built = report.build_report(write(tmp_path / "pass.jsonl", playtest()))
    assert built.total(Status.WARN) > 0
    root = ET.fromstring(report.render_junit(built))
    cases = _status_cases(root)
    assert cases["warn"], "a warning shows as skipped"
    for case in cases["warn"]:
        assert case.findtext("system-out", "").startswith("WARN ")
    suite = root.find("testsuite")
    assert suite is not None
    assert int(suite.get("skipped", "0")) == len(cases["warn"]) + len(cases["n/a"])
    assert int(suite.get("tests", "0")) == sum(len(v) for v in cases.values())


def test_anomalies_fail_the_xml_when_they_fail_the_gate(tmp_path: Path) -> None:
    built = report.build_report(write(tmp_path / "pass.jsonl", playtest()))
    assert built.anomaly_total and report.exit_code(built, "anomaly") == 1
    root = ET.fromstring(report.render_junit(built, "anomaly"))
    anomalies = [c for c in root.iter("testcase") if c.get("classname") == "mpsdproxy.anomalies"]
    assert {c.get("name") for c in anomalies} == {a.code for a in built.anomalies}
    assert all(c.find("failure") is not None for c in anomalies)
    # without the gate they are counted, not tests
    plain = ET.fromstring(report.render_junit(built, "fail"))
    assert not [c for c in plain.iter("testcase") if c.get("classname") == "mpsdproxy.anomalies"]
    props = {p.get("name"): p.get("value") for p in plain.iter("property")}
    assert props["anomalies"] == str(built.anomaly_total)


def test_a_clean_pass_has_a_passing_anomaly_case(tmp_path: Path) -> None:
    clean = [r for r in playtest() if not (r.get("classification") or {}).get("anomalies")]
    built = report.build_report(write(tmp_path / "clean.jsonl", clean))
    assert built.anomaly_total == 0
    root = ET.fromstring(report.render_junit(built, "anomaly"))
    (case,) = [c for c in root.iter("testcase") if c.get("classname") == "mpsdproxy.anomalies"]
    assert case.get("name") == "no anomalies" and case.find("failure") is None


def test_the_cli_fails_the_xml_under_fail_on_anomaly(tmp_path: Path) -> None:
    path = write(tmp_path / "pass.jsonl", playtest())
    code, root = _junit(path, "--fail-on", "anomaly")
    anomalies = [c for c in root.iter("testcase") if c.get("classname") == "mpsdproxy.anomalies"]
    assert code == 1 and anomalies
    assert all(c.find("failure") is not None for c in anomalies)


def test_lines_no_verdict_saw_are_counted_and_listed(tmp_path: Path) -> None:
    """CI reads only the XML: a line the report could not read is in it, by file and line."""
    path = write(tmp_path / "pass.jsonl", playtest())
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3]) + '{"seq": 99, "request": 7}\n' + "".join(lines[3:]))
    _, root = _junit(path)
    suite = root.find("testsuite")
    assert suite is not None
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["skipped_lines"] == "1"
    assert "pass.jsonl:4: missing 'request'" in suite.findtext("system-err", "")
    _, clean = _junit(write(tmp_path / "clean.jsonl", playtest()))
    assert clean.find("testsuite/system-err") is None
