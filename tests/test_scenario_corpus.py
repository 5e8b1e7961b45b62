"""The broken-scenario corpus: each file in tests/scenarios_broken/ is rejected by `check`
with exactly one problem, on the line and at the key path expected.yaml names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mpsdproxy import scenario

CORPUS = Path(__file__).resolve().parent / "scenarios_broken"
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "expected.yaml").read_text())
LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<column>\d+): (?P<key>.+?): (?P<message>.+)$")


def test_corpus_is_large_and_fully_described() -> None:
    files = {p.name for p in CORPUS.glob("*.yaml")} - {"expected.yaml"}
    assert len(files) >= 30
    assert files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_reports_the_expected_line_and_key(name: str) -> None:
    want = EXPECTED[name]
    path = CORPUS / name
    lines = scenario.check([path])
    assert len(lines) == 1, lines
    found = LINE.match(lines[0])
    assert found is not None, lines[0]
    assert found["file"] == str(path)
    assert (int(found["line"]), found["key"]) == (want["line"], want["key"]), lines[0]
    assert want["message"] in found["message"], lines[0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_refuses_with_the_same_problem(name: str) -> None:
    with pytest.raises(scenario.ScenarioError) as raised:
        scenario.load(CORPUS / name)
    (problem,) = raised.value.problems
    assert (problem.line, problem.key_path) == (EXPECTED[name]["line"], EXPECTED[name]["key"])
    assert str(raised.value) == str(problem)
