"""Part 3, long runs: does memory stay flat over 1,000,000 exchanges?

- recorder: the router, classifier and recorder addons, driven in-process
  with synthetic flows (a pool of realistic session lifecycles, users and
  timestamps rotating), writing a real recording;
- verdicts: the live verdict addon over the same flows, with its one-second ticker
  emulated in record time and 30,000 distinct users, three times the engine's
  per-rule key limit, so its eviction is exercised;
- report: `mpsdproxy report` over a recording of 100,000 and of 1,000,000
  exchanges (time and peak memory).

Each driver runs in its own process (`python -m bench.longrun drive ...`) so
its peak resident memory (VmHWM) is its own; "flat" means the peak after all
exchanges is within 10 % of the peak after the first tenth.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import common
from bench import replay

FLAT_LIMIT = 1.10  # peak after all / peak after the first tenth
POOL_SESSIONS = 250  # x 8 exchanges: the flows the drivers rotate over
USERS = 30_000
STEP_S = 0.002  # record time between exchanges: 500 a second, a busy playtest
TICK_EVERY = 500  # exchanges between ticks of the verdict ticker (once a record-second)

Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    count: int = 1_000_000
    checkpoint: int = 100_000  # "the peak after 100k"
    report: bool = True


QUICK = Config(count=200_000, checkpoint=20_000)
SMOKE = Config(count=1_000, checkpoint=500)


# --- synthetic flows -------------------------------------------------------------------------

def flow_pool() -> list[tuple[Any, Any]]:
    """(request-only flow, response) pairs for the session lifecycles of replay.py."""
    from mitmproxy.test import tflow
    from mitmproxy.test import tutils

    from mpsdproxy import faults
    from mpsdproxy import model

    pool = []
    for n in range(POOL_SESSIONS):
        for step in replay.lifecycle(n):
            raw = common.compact_json(step.body) if step.body is not None else b""
            headers = [(b"Host", replay.HOST.encode()), (b"Authorization", b"XBL3.0 x=0;t"),
                       (b"Signature", b"AAAAAQHZ3jzNhd5OaR5+PjQ8Wg=="),
                       (b"x-xbl-contract-version", b"107")]
            headers += [(k.encode(), v.encode()) for k, v in step.headers]
            request = tutils.treq(method=step.method.encode(), scheme=b"https",
                                  host=replay.HOST, port=443, authority=b"",
                                  path=step.path.encode(), headers=headers, content=raw)
            answer = faults.build(step.entry, **step.args)
            response = tutils.tresp(status_code=answer.status,
                                    reason=model.to_bytes(answer.reason),
                                    headers=list(answer.headers.raw()), content=answer.body)
            pool.append((tflow.tflow(req=request), response))
    return pool


def tokens() -> list[str]:
    return [f"XBL3.0 x={2814600000000000 + u};token-{u:06d}" for u in range(USERS)]


def drive(chain: list[Any], count: int, checkpoint: int, tick: Callable[[float], None] | None,
          start: float = 1_790_000_000.0, loop: asyncio.AbstractEventLoop | None = None
          ) -> dict[str, Any]:
    """Run `count` exchanges through the chain's request and response hooks, reading the
    process's memory every `checkpoint` exchanges.

    mitmproxy hands every log record to its event loop (`call_soon_threadsafe`); in a
    proxy the loop runs them at once, here `loop` is run briefly at every tick so they
    do not pile up and pass for the addons' memory.
    """
    pool = flow_pool()
    users = tokens()
    marks: list[dict[str, Any]] = []
    started = time.perf_counter()
    for i in range(count):
        flow, response = pool[i % len(pool)]
        now = start + i * STEP_S
        flow.metadata.clear()
        flow.response = None
        flow.request.headers["Authorization"] = users[(i * 7919) % USERS]
        flow.request.timestamp_start = now
        for addon in chain:
            if hasattr(addon, "request"):
                addon.request(flow)
        response.timestamp_end = now + 0.005
        flow.response = response
        for addon in chain:
            if hasattr(addon, "response"):
                addon.response(flow)
        if i % TICK_EVERY == 0:
            if tick is not None:
                tick(now)
            if loop is not None:
                loop.run_until_complete(asyncio.sleep(0))
        if (i + 1) % checkpoint == 0 or i + 1 == count:
            marks.append({"exchanges": i + 1, "rss_mb": common.rss_mb(os.getpid()),
                          "peak_rss_mb": common.peak_rss_mb(os.getpid()),
                          "seconds": time.perf_counter() - started})
    elapsed = time.perf_counter() - started
    return {"exchanges": count, "seconds": elapsed, "us_per_exchange": elapsed * 1e6 / count,
            "checkpoints": marks}


def recorder_chain() -> list[Any]:
    from mpsdproxy.addons import classifier
    from mpsdproxy.addons import recorder
    from mpsdproxy.addons import router

    return [router.Router(), classifier.StatusClassifier(), recorder.Recorder()]


def run_recorder(count: int, checkpoint: int, path: Path) -> dict[str, Any]:
    from mitmproxy.test import taddons

    chain = recorder_chain()
    with taddons.context(*chain) as tctx:
        tctx.configure(chain[-1], mpsd_record=str(path))
        result = drive(chain, count, checkpoint, None, loop=tctx.master.event_loop)
        chain[-1].done()
    result["recording_mb"] = path.stat().st_size / 2**20
    return result


def run_verdicts(count: int, checkpoint: int) -> dict[str, Any]:
    """The live verdict addon behind the router and the classifier, its ticker emulated."""
    from mitmproxy.test import taddons

    from mpsdproxy.addons import verdictlog

    addon = verdictlog.VerdictLog()
    chain = [*recorder_chain()[:2], addon]
    with taddons.context(*chain) as tctx:
        result = drive(chain, count, checkpoint, addon.tick, loop=tctx.master.event_loop)
        addon.done()
    return result | {"driver": "VerdictLog addon", "engine_counts": _counts(addon.engine)}


def _counts(engine: Any) -> dict[str, int]:
    if engine is None:
        return {}
    return {f"{rule}:{status}": n for (rule, status), n in sorted(engine.counts.items())}


# --- report over big recordings ----------------------------------------------------------

_PREFIX = re.compile(r'^\{"seq":(\d+),"start":"([^"]+)","end":"([^"]+)"')


def repeat_recording(source: Path, target: Path, times: int) -> int:
    """`target` = `source` `times` over, each copy with its own sessions (renamed), later
    times and continued seq numbers: a long recording without generating every line.
    The format's header line, if `source` has one, is written once, first."""
    from mpsdproxy import recording

    header, lines = _split_header(source.read_text(encoding="utf-8").splitlines())
    first = _PREFIX.match(lines[0])
    last = _PREFIX.match(lines[-1])
    assert first and last, "a recording written by recording.Writer"
    span = recording.parse_timestamp(last[3]) - recording.parse_timestamp(first[2]) + 1.0
    written = 0
    with open(target, "w", encoding="utf-8") as out:
        out.writelines(line + "\n" for line in header)
        for copy in range(times):
            shift = copy * span
            for line in lines:
                written += 1
                out.write(_shifted(line, written, shift, copy))
    return written


def _split_header(lines: list[str]) -> tuple[list[str], list[str]]:
    """([the header line] or [], the record lines): a header names the format and has
    no seq."""
    if lines and not _PREFIX.match(lines[0]):
        item = json.loads(lines[0])
        if isinstance(item, dict) and "format" in item and "seq" not in item:
            return lines[:1], lines[1:]
    return [], lines


def _shifted(line: str, seq: int, shift: float, copy: int) -> str:
    from mpsdproxy import recording

    if copy:
        line = line.replace("bench-lobby-", f"bench-lobby-c{copy}-")
    match = _PREFIX.match(line)
    assert match
    start = recording.timestamp(recording.parse_timestamp(match[2]) + shift)
    end = recording.timestamp(recording.parse_timestamp(match[3]) + shift)
    return f'{{"seq":{seq},"start":"{start}","end":"{end}"' + line[match.end():] + "\n"


@functools.cache
def _report_help() -> str | None:
    """`mpsdproxy report --help`, or None when the CLI has no report command."""
    done = subprocess.run([common.PYTHON, "-m", "mpsdproxy", "report", "--help"],
                          capture_output=True, text=True, timeout=60, cwd=common.ROOT)
    return done.stdout if done.returncode == 0 else None


def report_argv(path: Path) -> list[str]:
    """`mpsdproxy report FILE --format json` when the CLI has it, else the same engine
    (report.build_report and render) called directly."""
    usage = _report_help()
    if usage is not None:
        fmt = ["--format", "json"] if "--format" in usage else []
        return [common.PYTHON, "-m", "mpsdproxy", "report", str(path), *fmt]
    code = ("import sys; from mpsdproxy import report; "
            "sys.stdout.write(report.render(report.build_report(sys.argv[1]), 'json'))")
    return [common.PYTHON, "-c", code, str(path)]


def measure_process(argv: list[str], timeout: float = 3600.0) -> dict[str, Any]:
    """Wall time, exit status and peak RSS (this child's own, from wait4) of one command."""
    started = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        proc = subprocess.Popen(argv, stdout=devnull, stderr=subprocess.PIPE, cwd=common.ROOT)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{argv[:4]} did not finish within {timeout:.0f} s")
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    return {"seconds": time.perf_counter() - started, "exit": proc.returncode,
            "peak_rss_mb": usage.ru_maxrss / 1024, "stderr": stderr[-500:]}


def run_reports(config: Config, workdir: Path, log: Log) -> dict[str, Any]:
    """Report over a checkpoint-sized recording and one `count / checkpoint` times longer."""
    try:
        import mpsdproxy.report  # noqa: F401
    except ImportError:
        return {"available": False}
    small, big = workdir / "report-small.jsonl", workdir / "report-big.jsonl"
    replay.write_recording(small, config.checkpoint)
    times = max(1, config.count // config.checkpoint)
    exchanges = repeat_recording(small, big, times)
    result: dict[str, Any] = {"available": True, "runs": {}}
    for path, n in ((small, config.checkpoint), (big, exchanges)):
        argv = report_argv(path)
        result["command"] = ("mpsdproxy report" if argv[2] == "mpsdproxy"
                             else "report.build_report + render json (no report command yet)")
        log(f"  report over {n} exchanges ({path.stat().st_size / 2**20:.0f} MB)")
        result["runs"][n] = measure_process(argv)
    big.unlink()
    small.unlink()
    return result


# --- the benchmark -----------------------------------------------------------------------

def _drive_subprocess(kind: str, config: Config, workdir: Path) -> dict[str, Any]:
    argv = [common.PYTHON, "-m", "bench.longrun", "drive", kind, "--count", str(config.count),
            "--checkpoint", str(config.checkpoint), "--workdir", str(workdir)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=common.ROOT,
                          timeout=7200)
    if done.returncode != 0:
        raise RuntimeError(f"longrun {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def flatness(result: dict[str, Any], checkpoint: int) -> float | None:
    """Peak after all exchanges / peak after `checkpoint` exchanges."""
    marks = {m["exchanges"]: m["peak_rss_mb"] for m in result.get("checkpoints", [])}
    if checkpoint not in marks or not marks[checkpoint]:
        return None
    return marks[max(marks)] / marks[checkpoint]


def run(config: Config, workdir: Path | None = None, log: Log = print) -> dict[str, Any]:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bench-longrun-"))
    result: dict[str, Any] = {"config": asdict(config), "flat_limit": FLAT_LIMIT}
    for kind in ("recorder", "verdicts"):
        log(f"  {kind}: {config.count} exchanges in-process")
        part = _drive_subprocess(kind, config, workdir)
        part["flatness"] = flatness(part, config.checkpoint)
        result[kind] = part
    if config.report:
        result["report"] = run_reports(config, workdir, log)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one long-run driver, in its own process")
    parser.add_argument("command", choices=["drive"])
    parser.add_argument("kind", choices=["recorder", "verdicts"])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--checkpoint", type=int, required=True)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args(argv)
    if args.kind == "recorder":
        path = Path(args.workdir) / "longrun.jsonl"
        try:
            result = run_recorder(args.count, args.checkpoint, path)
        finally:
            path.unlink(missing_ok=True)
    else:
        result = run_verdicts(args.count, args.checkpoint)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
