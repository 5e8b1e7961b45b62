"""The shipped JSON Schemas describe what the tool really writes: the report JSON of a
recording of the demo's scripted titles, and every line of recordings (messages too)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mpsdproxy import recording
from mpsdproxy import report
from mpsdproxy.cli import cli

SAMPLES = sorted((Path(__file__).resolve().parent.parent / "recordings").glob("sample-*.jsonl"))


def _schema(name: str) -> jsonschema.Draft202012Validator:
    """A schema as the installed package ships it (importlib.resources, not the checkout)."""
    text = (resources.files("mpsdproxy") / "data" / name).read_text(encoding="utf-8")
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


REPORT = _schema("report.schema.json")
RECORDING = _schema("recording.schema.json")


def _problems(validator: jsonschema.Draft202012Validator, item: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(item)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The three recordings one run of the demo makes (lifecycle, faults, RTA lobbies)."""
    where = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        [sys.executable, "-m", "mpsdproxy", "demo", "--record", str(where / "demo.jsonl")],
        capture_output=True, text=True, timeout=120, cwd=where,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    paths = [where / name for name in ("demo.jsonl", "demo-faults.jsonl", "demo-rta.jsonl")]
    assert all(p.exists() for p in paths)
    return paths


@pytest.mark.parametrize("part", [0, 1, 2], ids=["lifecycle", "faults", "rta"])
def test_the_report_json_of_the_demo_matches_its_schema(demo: list[Path], part: int) -> None:
    result = CliRunner().invoke(cli, ["report", str(demo[part]), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert _problems(REPORT, doc) == []
    if part == 2:
        assert doc["rta"]["connections"] and doc["rta"]["subscriptions"]


@pytest.mark.parametrize("rep", [report.report_records([])], ids=["empty"])
def test_a_report_with_nothing_known_matches_too(rep: report.Report) -> None:
    doc = json.loads(report.render(rep, "json"))
    assert doc["start"] is None
    assert _problems(REPORT, doc) == []


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_line_of_the_demo_recordings_matches_the_recording_schema(
        demo: list[Path]) -> None:
    kinds = set()
    for path in [*demo, *SAMPLES]:
        for n, item in enumerate(_lines(path), start=1):
            assert _problems(RECORDING, item) == [], f"{path.name}:{n}"
            kinds.add("header" if "format" in item else item.get("kind", "exchange"))
    assert kinds == {"header", "exchange", "websocket"}  # message records were checked


def test_the_schemas_refuse_what_is_not_their_form(demo: list[Path]) -> None:
    lines = _lines(demo[2])
    exchange = next(i for i in lines if "request" in i)
    message = next(i for i in lines if i.get("kind") == "websocket")
    assert _problems(RECORDING, {**exchange, "seq": "7"})
    assert _problems(RECORDING, {k: v for k, v in exchange.items() if k != "request"})
    assert _problems(RECORDING, {**message, "direction": "sideways"})
    assert _problems(RECORDING, {"format": "something-else", "version": 2})
    doc = json.loads(report.render(report.build_report(demo[0]), "json"))
    assert _problems(REPORT, {**doc, "version": 2})
    assert _problems(REPORT, {k: v for k, v in doc.items() if k != "outcome"})


CAPTURE = Path(__file__).resolve().parent.parent.parent / "shared" / "captures" / \
    "x49_mp_cs21.saz"


def test_the_public_capture_imported_matches_both_schemas(tmp_path: Path) -> None:
    if not CAPTURE.exists():
        pytest.skip(f"{CAPTURE} is not here (public captures live beside the clone)")
    imported = tmp_path / "capture.jsonl"
    result = CliRunner().invoke(cli, ["import", str(CAPTURE), "-o", str(imported)])
    assert result.exit_code == 0, result.output
    lines = _lines(imported)
    assert any(i.get("kind") == "websocket" for i in lines)
    for n, item in enumerate(lines, start=1):
        assert _problems(RECORDING, item) == [], n
    shown = CliRunner().invoke(cli, ["report", str(imported), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert _problems(REPORT, json.loads(shown.stdout)) == []


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value (keys and indexes), the value's own first."""
    found = [prefix]
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, child in items:
        found += _paths(child, (*prefix, key))
    return found


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=3),
    max_leaves=6)
#: What the reader checks beyond the schema's types: seq's range and base64's alphabet.
_BEYOND_TYPES = {"seq", "base64", "encoded", "payload"}


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_reader_takes_every_line_the_schema_allows(data: st.DataObject) -> None:
    """A line of another shape than the tool writes, yet one the shipped schema allows,
    is one every command reads (the reader's checks are the schema's, never stricter):
    each line of the samples with one value anywhere replaced or removed."""
    lines = [item for path in SAMPLES for item in _lines(path) if "seq" in item]
    item = data.draw(st.sampled_from(lines))
    paths = [p for p in _paths(item) if p and not _BEYOND_TYPES & set(map(str, p))]
    where = data.draw(st.sampled_from(paths))
    changed = json.loads(json.dumps(item))
    parent = changed
    for key in where[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = data.draw(_JSON)
    if _problems(RECORDING, changed) == []:
        assert recording.check_outline(changed, messages=True) is None, changed
