"""How every figure is measured: bounded load runs, and interleaved rounds of them.

These machines are noisy (the CPU clock flips between two speeds; two identical
mitmdumps differ by up to 15 % in separate runs), so every proxy under
comparison is up at once, short load runs alternate between them in rotating
order, and each figure is the median of per-round ratios, beside an A/A
control that shows how large the noise is. CPU cost per request is read from
/proc before and after each run (PERF.md has the method).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from bench import common

# --- load -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Load:
    """One load run against one target."""

    requests: int
    seconds: float
    errors: int  # connect, read, write and timeout errors plus non-2xx/3xx answers
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


WRK_SCRIPT = """\
local paths = {{ {paths} }}
local i = 0
{request}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {{"requests": %.0f, "duration_us": %.0f, "errors": %.0f, "non2xx": %.0f, '
    .. '"p50_us": %.0f, "p99_us": %.0f}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""

WRK_REQUEST = """\
request = function()
  i = i + 1
  if i > #paths then i = 1 end
  return wrk.format("GET", paths[i])
end
"""


def load_tool(preference: str = "auto") -> str:
    """wrk when installed (auto or wrk), else the asyncio client bench/loadgen.py."""
    if preference == "wrk" or (preference == "auto" and shutil.which("wrk")):
        if not shutil.which("wrk"):
            raise RuntimeError("wrk is not installed (apt-get install wrk)")
        return "wrk"
    return "python"


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of printable ASCII is a valid Lua string


@dataclass
class LoadGenerator:
    """Runs bounded load runs with one tool; scripts are written once into `workdir`."""

    workdir: Path
    tool: str = "auto"
    _scripts: dict[tuple[str, ...], Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tool = load_tool(self.tool)

    def run(self, url: str, connections: int, seconds: float,
            paths: Sequence[str] = ()) -> Load:
        """Keep-alive GETs for `seconds` over `connections` connections, rotating `paths`."""
        script = self._script(tuple(paths))
        if self.tool == "wrk":
            # wrk takes whole seconds only
            argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                    "--timeout", "5s", "-s", str(script), url]
        else:
            argv = [common.PYTHON, str(common.BENCH / "loadgen.py"), "--url", url,
                    "--connections", str(connections), "--seconds", str(seconds),
                    "--paths", str(script)]
        done = subprocess.run(argv, capture_output=True, text=True,
                              preexec_fn=common.pin_to(common.LOAD_CORES),
                              timeout=max(1, seconds) + common.LOAD_GRACE_S)
        return parse_load_output(done.stdout, done.stderr)

    def _script(self, paths: tuple[str, ...]) -> Path:
        """The wrk Lua script (or, for the asyncio client, a JSON list of paths)."""
        if paths in self._scripts:
            return self._scripts[paths]
        path = self.workdir / f"load-{len(self._scripts)}.{'lua' if self.tool == 'wrk' else 'json'}"
        if self.tool == "wrk":
            path.write_text(WRK_SCRIPT.format(paths=", ".join(map(_lua_string, paths)),
                                              request=WRK_REQUEST if paths else ""))
        else:
            path.write_text(json.dumps(list(paths)))
        self._scripts[paths] = path
        return path


def parse_load_output(stdout: str, stderr: str = "") -> Load:
    """The BENCH-JSON line both load tools print; RuntimeError with their output if none."""
    for line in stdout.splitlines():
        if line.startswith("BENCH-JSON "):
            data = json.loads(line[len("BENCH-JSON "):])
            return Load(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                errors=int(data["errors"]) + int(data["non2xx"]),
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
            )
    raise RuntimeError(f"the load generator printed no result:\n{stdout[-2000:]}\n{stderr[-2000:]}")


# --- interleaved pairs ------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """One load run and the CPU the target spent serving it."""

    load: Load
    cpu_us_per_request: float | None


def measured_run(generator: LoadGenerator, target: common.Service, connections: int, seconds: float,
                 paths: Sequence[str] = ()) -> Run:
    before = target.cpu_seconds()
    load = generator.run(target.url, connections, seconds, paths)
    spent = target.cpu_seconds() - before
    return Run(load, spent * 1e6 / load.requests if load.requests else None)


def interleave(generator: LoadGenerator,
               targets: Sequence[common.Service | Sequence[common.Service]],
               connections: int, rounds: int, seconds: float,
               paths: Sequence[str] = ()) -> dict[str, list[Run]]:
    """`rounds` rounds; each runs every target once, the order rotating by one each round,
    so no target always runs first (warm) or last (after the others heated the CPU).

    A target may be several processes of the same command (instances): round `i` runs
    instance `i % n`, and the runs are filed under the first one's name. Identical
    processes differ here by up to a fifth in CPU per request (memory layout, hash
    seed), so one process per variant would make every ratio a draw of that luck;
    rotating spreads it over the rounds, whose median then sets it aside.
    """
    groups = [[t] if isinstance(t, common.Service) else list(t) for t in targets]
    runs: dict[str, list[Run]] = {g[0].name: [] for g in groups}
    for i in range(rounds):
        shift = i % len(groups)
        for group in [*groups[shift:], *groups[:shift]]:
            target = group[i % len(group)]
            runs[group[0].name].append(
                measured_run(generator, target, connections, seconds, paths))
    return runs


def median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def metric(run: Run, name: str) -> float | None:
    if name == "cpu_us":
        return run.cpu_us_per_request
    return {"rps": run.load.rps, "p50": run.load.p50_ms, "p99": run.load.p99_ms}[name]


def pair_ratios(runs: dict[str, list[Run]], test: str, base: str, name: str) -> list[float]:
    """Per-round ratios test/base of one metric (rounds where either is missing or 0 drop)."""
    out = []
    for a, b in zip(runs[test], runs[base], strict=True):
        x, y = metric(a, name), metric(b, name)
        if x is not None and y:
            out.append(x / y)
    return out


def median_ratio(runs: dict[str, list[Run]], test: str, base: str, name: str) -> float | None:
    return median(pair_ratios(runs, test, base, name))


def median_metric(runs: dict[str, list[Run]], name: str, metric_name: str) -> float | None:
    return median(metric(r, metric_name) for r in runs[name])


def total_errors(runs: dict[str, list[Run]], name: str) -> int:
    return sum(r.load.errors for r in runs[name])
