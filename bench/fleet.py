"""Part 4, the fleet: many recordings with DuckDB, and `report` today vs the engine.

- report: `mpsdproxy report FILE --format json` over one recording of `count`
  exchanges, twice, in the same run: today's implementation (one Python pass,
  the verdict engine per exchange; forced with `MPSDPROXY_REPORT_ENGINE=python`,
  and it stores the verdicts beside the recording with their completeness
  trailer), then the engine path (DuckDB aggregates, verdicts read from that
  complete sidecar: `fleet.reportdb`); then `mpsdproxy fleet FILE` over the same
  file. Wall time and peak memory side by side, with the engine/today ratios;
- files: `fleet` over 1, 10 and `files` recordings of `per_file` exchanges each
  (hard links of one generated recording and its sidecar, so the disk holds one
  copy): memory must stay bounded as the number of files grows;
- parquet: the same `files` recordings exported once (`--to-parquet`), then the
  summary from the Parquet file.

Each command runs in its own process, and its peak resident memory is its own
(wait4). Recordings are made as `longrun` makes them (`replay.write_recording`,
repeated with fresh sessions and times), so the sizes are configurable and cheap.

    python -m bench.fleet --smoke            # seconds: checks the harness
    python -m bench.fleet --quick            # a few minutes
    python -m bench.fleet                    # the issue's sizes: 1M; 100 x 100k
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import common
from bench import longrun
from bench import replay

Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    count: int = 1_000_000  # exchanges for report vs fleet on one recording
    files: int = 100  # recordings for the many-files runs
    per_file: int = 100_000  # exchanges in each of them (100 x 100k = 10M)
    seed: int = 10_000  # exchanges generated; the rest are repeats with new sessions
    memory_limit: str = "1GB"


QUICK = Config(count=100_000, files=20, per_file=10_000, seed=5_000)
SMOKE = Config(count=2_000, files=3, per_file=500, seed=500)


def fleet_argv(paths: list[Path], *extra: str, memory_limit: str = "1GB") -> list[str]:
    return [common.PYTHON, "-m", "mpsdproxy", "fleet", *map(str, paths), "--format", "json",
            "--memory-limit", memory_limit, *extra]


def make_recording(path: Path, count: int, seed: int, workdir: Path) -> int:
    """A recording of about `count` exchanges (a generated seed, repeated)."""
    source = workdir / f"seed-{seed}.jsonl"
    if not source.exists():
        replay.write_recording(source, min(seed, count))
    return longrun.repeat_recording(source, path, max(1, count // min(seed, count)))


def _measure(argv: list[str], log: Log, what: str) -> dict[str, Any]:
    result = longrun.measure_process(argv)
    log(f"  {what}: {result['seconds']:.1f} s, {result['peak_rss_mb']:.0f} MB peak"
        + ("" if result["exit"] in (0, 1) else f" (exit {result['exit']}: "
                                               f"{result['stderr'][-200:]})"))
    return result


def today(argv: list[str]) -> list[str]:
    """The same command, made to take today's Python pass (`fleet/stored.py`)."""
    return ["env", "MPSDPROXY_REPORT_ENGINE=python", *argv]


def run_report_vs_fleet(config: Config, workdir: Path, log: Log) -> dict[str, Any]:
    path = workdir / "one.jsonl"
    exchanges = make_recording(path, config.count, config.seed, workdir)
    Path(f"{path}.verdicts").unlink(missing_ok=True)
    log(f"  one recording: {exchanges} exchanges ({path.stat().st_size / 2**20:.0f} MB)")
    report = _measure(today(longrun.report_argv(path)), log,
                      "report (today: Python pass, stores the verdicts)")
    engine = _measure(["env", "MPSDPROXY_REPORT_ENGINE=duckdb", *longrun.report_argv(path)],
                      log, "report (engine: DuckDB + sidecar)")
    fleet = _measure(fleet_argv([path], memory_limit=config.memory_limit), log, "fleet")
    path.unlink()
    Path(f"{path}.verdicts").unlink(missing_ok=True)
    return {"exchanges": exchanges, "report": report, "engine": engine, "fleet": fleet,
            "engine_time_ratio": _ratio(engine["seconds"], report["seconds"]),
            "engine_memory_ratio": _ratio(engine["peak_rss_mb"], report["peak_rss_mb"]),
            "time_ratio": _ratio(fleet["seconds"], report["seconds"]),
            "memory_ratio": _ratio(fleet["peak_rss_mb"], report["peak_rss_mb"])}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _linked(source: Path, folder: Path, n: int) -> list[Path]:
    """`n` names for one recording (and its sidecar): distinct runs, one copy on disk."""
    folder.mkdir(exist_ok=True)
    paths = []
    sidecar = Path(f"{source}.verdicts")
    for i in range(n):
        target = folder / f"run-{i:03d}.jsonl"
        if not target.exists():
            os.link(source, target)
            if sidecar.exists():
                os.link(sidecar, Path(f"{target}.verdicts"))
        paths.append(target)
    return paths


def run_many(config: Config, workdir: Path, log: Log) -> dict[str, Any]:
    source = workdir / "per-file.jsonl"
    per_file = make_recording(source, config.per_file, config.seed, workdir)
    _measure(longrun.report_argv(source), log, "report on the per-file recording (stores "
                                               "its verdicts)")
    runs: dict[str, Any] = {}
    for n in sorted({1, min(10, config.files), config.files}):
        folder = workdir / f"many-{n}"
        _linked(source, folder, n)
        log(f"  fleet over {n} recordings ({n * per_file} exchanges)")
        runs[str(n)] = _measure(fleet_argv([folder], memory_limit=config.memory_limit), log,
                                f"fleet x{n}")
    folder = workdir / f"many-{config.files}"
    archive = workdir / "archive.parquet"
    export = _measure(fleet_argv([folder], "--to-parquet", str(archive), "--sql", "SELECT 1",
                                 memory_limit=config.memory_limit), log, "export to Parquet")
    from_parquet = _measure(fleet_argv([archive], memory_limit=config.memory_limit), log,
                            "fleet from Parquet")
    return {"per_file": per_file, "files": config.files, "runs": runs,
            "export": export, "parquet": from_parquet,
            "parquet_mb": archive.stat().st_size / 2**20 if archive.exists() else None}


def run(config: Config, workdir: Path, log: Log) -> dict[str, Any]:
    """The part's results (the shape `bench/run.py` parts return)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return {"config": asdict(config),
            "report_vs_fleet": run_report_vs_fleet(config, workdir, log),
            "many": run_many(config, workdir, log)}


def markdown(result: dict[str, Any]) -> str:
    """The part's tables, for docs/benchmarks.md."""
    one = result["report_vs_fleet"]
    lines = [f"#### Report over {one['exchanges']:,} exchanges: today vs the engine", "",
             "Today's Python pass beside the engine (DuckDB aggregates, stored verdicts), "
             "in the same run:", "",
             "| command | seconds | peak MB | vs today |", "|---|---:|---:|---:|"]
    for name, label in (("report", "report (today)"), ("engine", "report (engine)"),
                        ("fleet", "fleet, same file")):
        r = one.get(name)
        if not r:
            continue
        vs = "" if name == "report" else (
            f"time {_x(_ratio(r['seconds'], one['report']['seconds']))}, memory "
            f"{_x(_ratio(r['peak_rss_mb'], one['report']['peak_rss_mb']))}")
        lines.append(f"| {label} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {vs} |")
    many = result["many"]
    lines += ["", f"#### Fleet over many recordings ({many['per_file']:,} exchanges each)", "",
              "| recordings | exchanges | seconds | peak MB |", "|---:|---:|---:|---:|"]
    for n, r in many["runs"].items():
        lines.append(f"| {n} | {int(n) * many['per_file']:,} | {r['seconds']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    for name in ("export", "parquet"):
        r = many[name]
        lines.append(f"| {many['files']} ({name}) | {many['files'] * many['per_file']:,} | "
                     f"{r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--smoke", action="store_true")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    config = SMOKE if args.smoke else QUICK if args.quick else Config()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mpsdproxy-bench-fleet-"))
    workdir.mkdir(parents=True, exist_ok=True)
    result = run(config, workdir, lambda m: print(m, file=sys.stderr, flush=True))
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
