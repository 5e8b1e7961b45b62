"""`make bench`: run the benchmarks against plain mitmproxy, print the tables, write the doc.

    python bench/run.py                      # everything (about 32 minutes on 2 cores)
    python bench/run.py --quick              # shorter runs, smaller counts
    python bench/run.py --part replay        # one part; the doc keeps the others' figures
    python bench/run.py --smoke --out X.md   # seconds; what the test suite runs

Parts: overhead (plain mitmdump vs mpsdproxy run, at 1, 16 and 64
connections), replay (mpsdproxy vs mitmproxy --server-replay on the same
100,000 exchanges), longrun (memory over 1,000,000 exchanges), fleet (report
on 1,000,000 exchanges, today's Python pass beside the DuckDB engine; fleet over
1, 10 and 100 recordings totalling 10,000,000 exchanges, and from Parquet). Results go to
docs/benchmarks.md between generated markers; the prose around them stays.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="fewer rounds, 10,000 replayed and 200,000 long-run exchanges")
    size.add_argument("--smoke", action="store_true",
                      help="tiny counts and the pure-Python load tool: checks the harness only")
    parser.add_argument("--part", action="append",
                        choices=["overhead", "replay", "longrun", "fleet"],
                        help="run only this part (repeatable); default: all")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="markdown file to write (default: docs/benchmarks.md)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--render", action="store_true",
                        help="run nothing: rewrite the document's tables from the results "
                             "already in it")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--workdir", type=Path, help="where processes and files go "
                        "(default: a new temporary directory)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per measurement")
    parser.add_argument("--seconds", type=float, help="seconds per load run (wrk: whole)")
    parser.add_argument("--replay-count", type=int, help="exchanges to replay")
    parser.add_argument("--long-count", type=int, help="exchanges for the long runs")
    parser.add_argument("--fleet-count", type=int,
                        help="exchanges in the one recording report and fleet read")
    parser.add_argument("--fleet-files", type=int, help="recordings for the many-files runs")
    parser.add_argument("--fleet-per-file", type=int, help="exchanges in each of them")
    parser.add_argument("--tool", choices=["auto", "wrk", "python"],
                        help="load generator (auto: wrk when installed)")
    parser.add_argument("--upstream", choices=["auto", "nginx", "python"],
                        help="upstream for the overhead part (auto: nginx when installed)")
    parser.add_argument("--instances", type=int,
                        help="processes of each proxy in the throughput rounds, taking "
                             "them in turn (default: 3 for overhead, 2 for replay)")
    parser.add_argument("--before", metavar="REV",
                        help="also run the full proxy at this git revision beside today's "
                             "in the overhead part (the before/after of a change)")
    return parser.parse_args(argv)


def configs(args: argparse.Namespace) -> dict[str, Any]:
    """Each part's Config for the chosen size, with the command-line overrides applied."""
    from bench import fleet
    from bench import longrun
    from bench import overhead
    from bench import replay

    size = "SMOKE" if args.smoke else "QUICK" if args.quick else None
    pick = {m: getattr(m, size) if size else m.Config()
            for m in (overhead, replay, longrun, fleet)}
    common_overrides = {k: v for k, v in (("rounds", args.rounds), ("seconds", args.seconds),
                                          ("tool", args.tool)) if v is not None}
    over = dataclasses.replace(pick[overhead], **common_overrides,
                               **({"upstream": args.upstream} if args.upstream else {}),
                               **({"instances": args.instances} if args.instances else {}),
                               **({"before": args.before} if args.before else {}))
    rep = dataclasses.replace(pick[replay], **common_overrides,
                              **({"count": args.replay_count} if args.replay_count else {}),
                              **({"instances": args.instances} if args.instances else {}))
    long = pick[longrun]
    if args.long_count:
        long = dataclasses.replace(long, count=args.long_count,
                                   checkpoint=max(1, args.long_count // 10))
    sizes = {k: v for k, v in (("count", args.fleet_count), ("files", args.fleet_files),
                               ("per_file", args.fleet_per_file)) if v}
    many = dataclasses.replace(pick[fleet], **sizes)
    return {"overhead": over, "replay": rep, "longrun": long, "fleet": many}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_parts(parts: list[str], cfg: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from bench import fleet
    from bench import longrun
    from bench import overhead
    from bench import replay

    modules = {"overhead": overhead, "replay": replay, "longrun": longrun, "fleet": fleet}
    results: dict[str, Any] = {}
    for part in parts:
        started = time.monotonic()
        log(f"== {part}")
        directory = workdir / part
        directory.mkdir(parents=True, exist_ok=True)
        results[part] = modules[part].run(cfg[part], directory, log)
        results[part]["wall_s"] = time.monotonic() - started
        results[part]["ran"] = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg())}
        log(f"   {part} took {results[part]['wall_s']:.0f} s")
    return results


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from bench import common
    from bench import results as render

    args = parse_args(argv)
    if args.render:
        previous = render.previous_data(_read(args.out))
        fresh: dict[str, Any] = {}
        machine = previous.get("machine", {})
        command = previous.get("command", "python bench/run.py")
    else:
        parts = args.part or list(render.PARTS)
        cfg = configs(args)
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mpsdproxy-bench-"))
        machine = common.machine()
        log("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
        fresh = run_parts(parts, cfg, workdir)
        machine["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        command = "python bench/run.py " + shlex.join(argv if argv is not None
                                                      else sys.argv[1:])
    existing = _read(args.out)  # read now: the prose may have been edited during the run
    merged = {**render.previous_results(existing), **fresh}
    body = render.generated(merged, machine, command.strip())
    print(body.split("<!-- bench:data")[0].replace(render.BEGIN, "").strip())
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render.document(existing, body), encoding="utf-8")
        log(f"wrote {args.out}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": merged}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
