"""`make bench`'s fleet part: report today vs the engine, fleet over 1, 10, N files and from
Parquet, through the real entry point at smoke size (seconds), and its targets table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402


def test_the_fleet_part_runs_at_smoke_size(tmp_path: Path) -> None:
    raw, doc = tmp_path / "raw.json", tmp_path / "bench.md"
    done = subprocess.run([sys.executable, "bench/run.py", "--smoke", "--part", "fleet",
                           "--out", str(doc), "--json", str(raw), "--workdir",
                           str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    fleet = json.loads(raw.read_text())["results"]["fleet"]
    one = fleet["report_vs_fleet"]
    for name in ("report", "engine", "fleet"):
        assert one[name]["exit"] in (0, 1), one[name]["stderr"][-500:]
    assert one["engine_time_ratio"] > 0
    assert set(fleet["many"]["runs"]) == {"1", "3"}
    text = doc.read_text()
    assert "### 4. Fleet and the report engine" in text
    assert "report (engine)" in text and "report 2,000: time" in text


def test_targets_are_judged_only_at_the_issues_sizes() -> None:
    run = {"seconds": 9.0, "peak_rss_mb": 250.0, "exit": 0}
    result = {"report_vs_fleet": {"exchanges": 1_000_000, "report": dict(run, seconds=90.0),
                                  "engine": run, "fleet": run},
              "many": {"files": 100, "per_file": 100_000,
                       "runs": {"1": run, "10": run, "100": dict(run, seconds=70.0)},
                       "export": run, "parquet": run}}
    verdicts = {t.what: t.met for t in results.fleet_targets(result)}
    assert verdicts["report 1,000,000: time"] is True
    assert verdicts["report 1,000,000: peak memory"] is True
    assert verdicts["fleet 10,000,000 over 100 files"] is False  # 70 s > 60 s
    small = dict(result, report_vs_fleet=dict(result["report_vs_fleet"], exchanges=2000))
    assert {t.what: t.met for t in results.fleet_targets(small)}[
        "report 2,000: time"] is None  # not the issue's size: not judged
