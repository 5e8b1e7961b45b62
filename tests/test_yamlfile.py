"""The one YAML-with-positions loader: where every key is, and one line per problem."""

from __future__ import annotations

from pathlib import Path

from mpsdproxy import yamlfile


def test_positions_of_keys_and_values() -> None:
    doc = yamlfile.read_text("version: 1\nrules:\n  - name: a\n    when: {nth: 2}\n", "f.yaml")
    assert doc.problems == []
    assert doc.data["rules"][0]["when"] == {"nth": 2}
    assert doc.where(("rules", 0, "name")) == (3, 11)
    assert doc.where(("rules", 0, "name"), key=True) == (3, 5)
    assert str(doc.problem(("rules", 0, "when", "nth"), "too big", "f.yaml")) == \
        "f.yaml:4:17: rules[0].when.nth: too big"


def test_duplicate_keys_and_syntax_errors_are_problems_not_exceptions() -> None:
    doc = yamlfile.read_text("a: 1\na: 2\n", "d.yaml")
    assert [str(p) for p in doc.problems] == [
        "d.yaml:2:1: a: duplicate key 'a' (first given at line 1); YAML would keep only the last"]
    broken = yamlfile.read_text("a: [1, 2\n", "b.yaml")
    assert broken.data is None and broken.problems[0].message.startswith("invalid YAML")


def test_dates_stay_text_and_hostile_documents_are_refused(tmp_path: Path) -> None:
    assert yamlfile.read_text("seed: 2024-01-01\n", "s.yaml").data == {"seed": "2024-01-01"}
    bomb = "a: &a [" + ",".join(["*a"] * 3) + "]\n"
    assert yamlfile.read_text(bomb, "x.yaml").problems
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    problem = yamlfile.read_file(path).problems[0]
    assert (problem.line, problem.column) == (1, 10)
    assert "not UTF-8" in problem.message
    assert "cannot read" in str(yamlfile.read_file(tmp_path / "missing.yaml").problems[0])
