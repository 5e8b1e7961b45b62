"""`report` through the engine (DuckDB aggregates, verdicts from a complete sidecar) gives
what the Python pass gives, in every form; a sidecar that is not complete for the recording
as it is now sends `report` back to the Python pass.

The Python pass writes the sidecar (and its completeness trailer) the first time; the second
`report`, with `MPSDPROXY_REPORT_ENGINE=duckdb`, takes the engine whatever the file's size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from mpsdproxy import interchange
from mpsdproxy import recording
from mpsdproxy.fleet import reportdb
from mpsdproxy.fleet import stored
from mpsdproxy.recording import verdictfile

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "mpsdproxy" / "data" / "report.schema.json"
CAPTURE = ROOT.parent / "shared" / "captures" / "x49_mp_cs21.saz"
FORMATS = ("text", "json", "junit", "html")


def report(path: Path, fmt: str, engine: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, stored.ENGINE_ENV: engine}
    return subprocess.run([sys.executable, "-m", "mpsdproxy", "report", str(path), "--format",
                           fmt, "--quiet"], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def both_ways(path: Path) -> dict[str, tuple[str, str]]:
    """Each form from the Python pass (which stores the sidecar) and from the engine."""
    out = {}
    for fmt in FORMATS:
        python = report(path, fmt, "python")
        assert python.returncode in (0, 1), python.stderr
        assert stored.complete_trailer(path) is not None, "the Python pass left no trailer"
        engine = report(path, fmt, "duckdb")
        assert engine.returncode == python.returncode, engine.stderr
        out[fmt] = (python.stdout, engine.stdout)
    return out


def engine_directly(path: Path, fmt: str) -> str:
    """The form straight from `reportdb.build_report_db`: it raises rather than fall back,
    so a test that compares it shows the engine itself made the same report."""
    from mpsdproxy import report as forms

    trailer = stored.complete_trailer(path)
    assert trailer is not None
    return forms.render(reportdb.build_report_db(path, trailer), fmt)


def generated(tmp_path: Path, count: int) -> Path:
    """A recording the benchmark's way: many sessions (more than the 24 lanes), a 503
    drill, 412s, throttling, enough exchanges for the timeline to be sampled."""
    sys.path.insert(0, str(ROOT))
    from bench import replay

    path = tmp_path / "generated.jsonl"
    replay.write_recording(path, count)
    return path


@pytest.mark.parametrize("name", ["sample-drill.jsonl", "sample-lobby.jsonl"])
def test_every_form_is_the_same_through_the_engine(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    shutil.copy(ROOT / "recordings" / name, path)
    for fmt, (python, engine) in both_ways(path).items():
        assert engine == python == engine_directly(path, fmt), fmt
    jsonschema.validate(json.loads(report(path, "json", "duckdb").stdout),
                        json.loads(SCHEMA.read_text()))


def test_a_sampled_timeline_lanes_and_evidence_are_the_same(tmp_path: Path) -> None:
    path = generated(tmp_path, 4000)
    python, engine = both_ways(path)["json"]
    assert engine == python == engine_directly(path, "json")
    data = json.loads(engine)
    assert data["timeline"]["sampled_every"] > 1  # the stride doubled
    assert data["timeline"]["lanes"][-1] == "(other resources)"
    assert data["evidence"] and data["verdicts"]["items"]


def test_rta_messages_and_412_links_are_the_same(tmp_path: Path) -> None:
    if not CAPTURE.exists():
        pytest.skip(f"{CAPTURE} is not beside the clone")
    path = tmp_path / "capture.jsonl"
    interchange.import_file(str(CAPTURE), str(path))
    python, engine = both_ways(path)["json"]
    assert engine == python == engine_directly(path, "json")
    assert json.loads(engine)["rta"]["precondition_links"]


def test_a_recording_that_grew_is_judged_again(tmp_path: Path) -> None:
    path = tmp_path / "drill.jsonl"
    shutil.copy(ROOT / "recordings" / "sample-drill.jsonl", path)
    first = json.loads(report(path, "json", "python").stdout)
    last = next(r for r in recording.read(path))
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(dict(last, seq=10_000)) + "\n")
    assert stored.complete_trailer(path) is None  # the trailer names the old size
    grown = json.loads(report(path, "json", "duckdb").stdout)
    assert grown["exchanges"] == first["exchanges"] + 1
    trailer = stored.complete_trailer(path)  # report's own sidecar was written again
    assert trailer is not None and trailer["exchanges"] == grown["exchanges"]


def test_a_sidecar_without_trailer_or_with_skipped_lines_is_not_complete(
        tmp_path: Path) -> None:
    path = tmp_path / "drill.jsonl"
    shutil.copy(ROOT / "recordings" / "sample-drill.jsonl", path)
    with open(path, "a", encoding="utf-8") as f:
        f.write("{not json\n")
    result = report(path, "json", "duckdb")
    assert json.loads(result.stdout)["skipped_lines"] == 1
    assert stored.complete_trailer(path) is None  # the pass skipped a line: not complete
    again = json.loads(report(path, "json", "duckdb").stdout)
    assert again["skipped"][0]["line"] == json.loads(result.stdout)["skipped"][0]["line"]
    sidecar = Path(verdictfile.sidecar_of(path))
    lines = sidecar.read_text().splitlines()
    sidecar.write_text("\n".join(lines[:-1]) + "\n")  # a proxy's sidecar: no trailer
    assert stored.complete_trailer(path) is None


# --------------------------------------------------------------------------- pure logic


def test_capped_counts_keep_the_first_keys_and_pool_the_rest() -> None:
    rows = [(n, 1) for n in range(300)] + [(0, 5)]
    capped = reportdb.capped_counts(rows)
    assert len(capped) == 257 and capped[0] == 6 and capped["other"] == 300 - 256


def test_a_trailer_names_the_size_rules_and_limits() -> None:
    trailer = {"format": verdictfile.FORMAT, "complete": True, "recording_bytes": 10,
               "skipped_lines": 0, "limits": "built-in defaults", "rules": [],
               "looked_at": {}}
    assert not stored.trailer_fits(trailer, 10)  # another rule set
    from mpsdproxy import verdicts

    ok = dict(trailer, rules=[r.id for r in verdicts.RULES],
              limits=verdicts.default_limits().source)
    assert stored.trailer_fits(ok, 10)
    assert not stored.trailer_fits(ok, 11)
    assert not stored.trailer_fits(dict(ok, skipped_lines=1), 10)


def test_what_the_columns_cannot_read_alike_goes_to_the_python_pass(tmp_path: Path) -> None:
    """A record stored without its classification is classified by the Python pass as it
    reads; the engine cannot, so it declines (`Unsupported`) and `report` falls back."""
    path = tmp_path / "drill.jsonl"
    lines = (ROOT / "recordings" / "sample-drill.jsonl").read_text().splitlines()
    first = next(n for n, line in enumerate(lines) if '"classification"' in line)
    record = json.loads(lines[first])
    del record["classification"]
    lines[first] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    python = report(path, "json", "python")
    assert stored.complete_trailer(path) is not None
    with pytest.raises(reportdb.Unsupported):
        reportdb.build_report_db(path, stored.complete_trailer(path) or {})
    engine = report(path, "json", "duckdb")
    assert engine.returncode == python.returncode and engine.stdout == python.stdout
