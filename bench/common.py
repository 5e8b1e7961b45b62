"""What every benchmark shares: processes, /proc readings, upstream, load, interleaved pairs.

The method is the one in PERF.md, because these machines are noisy (the CPU
clock flips between two speeds; two identical mitmdumps differ by up to 15 %
in separate runs): every proxy under comparison is up at once, short load runs
alternate between them in rotating order, and each figure is the median of
per-round ratios, beside an A/A control (two identical plain mitmdumps) that
shows how large the noise is. CPU cost is read from /proc/<pid>/stat before
and after each run and divided by the requests served, which is steadier than
throughput for small effects. Everything listens on 127.0.0.1, every run is
bounded in time, and every process is stopped by its PID.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
MITMDUMP = str(Path(PYTHON).parent / "mitmdump")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
#: What `--mode reverse:` points at when no request may ever reach a service (replay).
NOWHERE = "https://sessiondirectory.xboxlive.com"
#: A run whose load generator has not finished this long after its duration is killed.
LOAD_GRACE_S = 20.0


# --- machine ----------------------------------------------------------------------------

def _first_line(argv: Sequence[str]) -> str:
    """First line a tool prints about itself (wrk and nginx print to stderr), or ''."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_revision() -> str:
    rev = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    if not rev:
        return "unknown"
    # docs/ is where the benchmark writes: a run after a run finds it changed.
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", ".",
                            ":(exclude)docs"],
                           capture_output=True, text=True, timeout=30).stdout.strip()
    return rev + (" (with uncommitted changes)" if dirty else "")


def _core_split() -> tuple[frozenset[int], frozenset[int]]:
    """(cores for the proxies, cores for the load tool and the upstream), or two empty
    sets (no pinning) with fewer than two cores or no sched_setaffinity.

    With two cores and one connection, where the scheduler happens to put a proxy
    (beside wrk or nginx, or alone) moved one of two identical mitmdumps 20-40 % away
    from the other; giving every proxy the same core of its own removes that luck.
    """
    if not hasattr(os, "sched_getaffinity"):
        return frozenset(), frozenset()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return frozenset(), frozenset()
    return frozenset(cores[-1:]), frozenset(cores[:-1])


PROXY_CORES, LOAD_CORES = _core_split()


def _pin(cores: frozenset[int]) -> Callable[[], None] | None:
    """A preexec_fn that keeps the child on `cores` (None: leave it to the scheduler)."""
    if not cores:
        return None
    return lambda: os.sched_setaffinity(0, cores)


def pinning() -> str:
    if not PROXY_CORES:
        return "none"
    return (f"proxies on core {','.join(map(str, sorted(PROXY_CORES)))}; load tool and "
            f"upstream on core {','.join(map(str, sorted(LOAD_CORES)))}")


def machine() -> dict[str, Any]:
    """The facts a reader needs to weigh the numbers: cores, clock, versions, load."""
    from mitmproxy import version as mitmproxy_version

    mem_kb = _proc_field("/proc/meminfo", "MemTotal")
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mitmproxy": mitmproxy_version.VERSION,
        "mpsdproxy": _git_revision(),
        "wrk": _first_line(["wrk", "--version"]).split(" Copyright")[0]
        if shutil.which("wrk") else "not installed",
        "nginx": _first_line(["nginx", "-v"]).replace("nginx version: ", "")
        if shutil.which("nginx") else "not installed",
        "pinning": pinning(),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# --- /proc ------------------------------------------------------------------------------

def _proc_field(path: str, name: str) -> int | None:
    """An integer field (first number) of a /proc status-like file, or None."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state) of proc(5): utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float | None:
    kb = _proc_field(f"/proc/{pid}/status", "VmRSS")
    return kb / 1024 if kb is not None else None


def peak_rss_mb(pid: int) -> float | None:
    """The high-water mark of the resident set (VmHWM): peak memory so far."""
    kb = _proc_field(f"/proc/{pid}/status", "VmHWM")
    return kb / 1024 if kb is not None else None


# --- processes --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Service:
    """A process listening on a loopback port, started and stopped by this harness."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    spawned: float  # time.monotonic() at spawn

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_mb(self) -> float | None:
        return rss_mb(self.pid)

    def peak_rss_mb(self) -> float | None:
        return peak_rss_mb(self.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_listening(self, timeout: float = 60.0) -> None:
        """Wait until the port accepts; a process that dies first fails with its output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before "
                                   f"listening:\n{self.output()[-3000:]}")
            if port_open(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {self.port} within {timeout:.0f} s")

    def stop(self) -> int | None:
        """SIGTERM by PID, then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


class Services:
    """Every process one benchmark starts; all are stopped (by PID) when it ends."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Service] = []

    def spawn(self, name: str, argv: Sequence[str], port: int,
              cores: frozenset[int] | None = None) -> Service:
        """Start a process (a proxy unless told otherwise: on PROXY_CORES)."""
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(list(argv), cwd=self.workdir, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True,
                                    preexec_fn=_pin(PROXY_CORES if cores is None else cores))
        service = Service(name, port, proc, log, time.monotonic())
        self.started.append(service)
        return service

    def stop_all(self) -> None:
        for service in reversed(self.started):
            service.stop()
        self.started.clear()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def wait_all(services: Iterable[Service], timeout: float = 60.0) -> None:
    for service in services:
        service.wait_listening(timeout)


# --- the proxies --------------------------------------------------------------------------

def prepare_confdir(path: Path) -> Path:
    """Create mitmproxy's CA in `path` once, before proxies sharing it start: several
    processes creating it at the same moment could read each other's half-written files."""
    from mitmproxy import certs

    path.mkdir(parents=True, exist_ok=True)
    certs.CertStore.from_store(path, "mitmproxy", 2048)
    return path


def mitmdump_argv(port: int, mode: str, confdir: Path, *extra: str) -> list[str]:
    """Plain mitmdump, quiet (`-q`: no per-flow output, as `mpsdproxy run --quiet`)."""
    return [MITMDUMP, "--mode", mode, "--listen-host", "127.0.0.1", "--listen-port", str(port),
            "-q", "--set", f"confdir={confdir}", *extra]


def _options_of(addons: Sequence[Any]) -> set[str]:
    from mitmproxy.test import taddons

    with taddons.context(*addons) as tctx:
        return set(tctx.options.keys())


def mpsdproxy_options() -> set[str]:
    """Every option the `mpsdproxy run` chain declares as installed right now."""
    from mpsdproxy.addons import default_addons

    return _options_of(default_addons())


def mpsdproxy_argv(port: int, mode: str, confdir: Path, *extra: str) -> list[str]:
    """`mpsdproxy run` in `mode`, quiet, on loopback."""
    return [PYTHON, "-m", "mpsdproxy", "run", "--mode", mode, "--listen-host", "127.0.0.1",
            "--listen-port", str(port), "--confdir", str(confdir), "--quiet", *extra]


@functools.cache
def run_help() -> str:
    """`mpsdproxy run --help`: which flags the CLI has (empty if it cannot start)."""
    done = subprocess.run([PYTHON, "-m", "mpsdproxy", "run", "--help"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    return done.stdout if done.returncode == 0 else ""


def option_args(flag: str, option: str, value: str) -> list[str]:
    """`--flag VALUE` when `mpsdproxy run` has the flag, else `--set option=VALUE`."""
    if f"{flag} " in run_help():
        return [flag, value]
    return ["--set", f"{option}={value}"]


def supported(option: str) -> bool:
    """Whether a proxy started by `mpsdproxy_argv` can take `option` at all."""
    return option in mpsdproxy_options()


def launcher(argv: Sequence[str]) -> str:
    """How a proxy was started, for the report: the command without the interpreter,
    ports and confdir, files by their names."""
    args = list(argv)
    if "run" in args and args[0] == PYTHON:
        args = ["mpsdproxy run", *args[args.index("run") + 1:]]
    else:
        args = [Path(args[0]).name, *args[1:]]
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--listen-host", "--listen-port", "--confdir"):
            skip = True
        elif arg.startswith("confdir="):
            out.pop()  # its --set
        else:
            out.append(Path(arg).name if arg.startswith("/") else
                       re.sub(r"=/\S*/", "=", arg))
    return " ".join(out)


# --- the upstream -----------------------------------------------------------------------

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fastcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    default_type "application/json; charset=utf-8";
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            add_header X-Xbl-Correlation-Id 4b1a7c3e-0000-4000-8000-00000000beef;
            try_files {files} =404;
        }}
    }}
}}
"""


def start_upstream(services: Services, body: bytes | Mapping[str, bytes],
                   kind: str = "auto") -> tuple[Service, str]:
    """A fast upstream answering with JSON: nginx when installed (kind auto or nginx),
    else bench/upstream.py. `body` is either what every request gets, or each path's
    own body (other paths get 404). Returns the service and what it is."""
    directory = services.workdir / "upstream"
    directory.mkdir(exist_ok=True)
    if isinstance(body, bytes):
        single = directory / "session.json"
        single.write_bytes(body)
        root, files, served = directory, "/session.json", ["--body", str(single)]
    else:
        docs = directory / "docs"
        for path, content in body.items():
            target = docs / (path.lstrip("/") + ".json")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        root, files, served = docs, "$uri.json", ["--dir", str(docs)]
    port = free_port()
    nginx = shutil.which("nginx")
    if kind == "nginx" or (kind == "auto" and nginx):
        if not nginx:
            raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
        conf = directory / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=directory, root=root, files=files, port=port))
        service = services.spawn("upstream-nginx", [nginx, "-c", str(conf), "-p", str(directory)],
                                 port, LOAD_CORES)
        what = _first_line([nginx, "-v"]).replace("nginx version: ", "") or "nginx"
    else:
        argv = [PYTHON, str(BENCH / "upstream.py"), "--port", str(port), *served]
        service = services.spawn("upstream-python", argv, port, LOAD_CORES)
        what = "bench/upstream.py (asyncio)"
    service.wait_listening(30)
    return service, what


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
            argv = [PYTHON, str(BENCH / "loadgen.py"), "--url", url, "--connections",
                    str(connections), "--seconds", str(seconds), "--paths", str(script)]
        done = subprocess.run(argv, capture_output=True, text=True, preexec_fn=_pin(LOAD_CORES),
                              timeout=max(1, seconds) + LOAD_GRACE_S)
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


def measured_run(generator: LoadGenerator, target: Service, connections: int, seconds: float,
                 paths: Sequence[str] = ()) -> Run:
    before = target.cpu_seconds()
    load = generator.run(target.url, connections, seconds, paths)
    spent = target.cpu_seconds() - before
    return Run(load, spent * 1e6 / load.requests if load.requests else None)


def interleave(generator: LoadGenerator, targets: Sequence[Service | Sequence[Service]],
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
    groups = [[t] if isinstance(t, Service) else list(t) for t in targets]
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


# --- realistic content ------------------------------------------------------------------

def session_path(name: str, template: str = "LobbySession") -> str:
    return f"/serviceconfigs/{SCID}/sessiontemplates/{template}/sessions/{name}"


def session_document(name: str, members: int = 3, seed: int = 0) -> dict[str, Any]:
    """An MPSD session document of about 1.5 KB with `members` members (as the service
    returns for a small lobby), deterministic for a given name and seed."""
    base = 2814600000000000 + seed * 1000
    return {
        "contractVersion": 107,
        "correlationId": f"4b1a7c3e-{seed % 10000:04d}-4000-8000-{zlib.crc32(name.encode()):012d}",
        "startTime": "2026-11-25T09:37:44.1234567Z",
        "nextTimer": "2026-11-25T09:39:44.1234567Z",
        "changeNumber": 12,  # a whole session (catalog note): the injector tracks it
        "constants": {
            "system": {"maxMembersCount": 8, "visibility": "open", "capabilities": {
                "connectivity": True, "gameplay": True, "crossPlay": True,
                "userAuthorizationStyle": True}, "inviteProtocol": "party",
                "reservedRemovalTimeout": 30000, "inactiveRemovalTimeout": 7200000,
                "readyRemovalTimeout": 180000, "sessionEmptyTimeout": 0},
            "custom": {"mode": "lobby", "map": "harbor"},
        },
        "properties": {
            "system": {"joinRestriction": "followed", "readRestriction": "followed",
                       "turn": [], "host": "0"},
            "custom": {"state": "waiting", "playlist": 4},
        },
        "servers": {},
        "members": {
            str(i): {
                "constants": {"system": {"xuid": str(base + i), "index": i}},
                "properties": {"system": {"active": True, "connection":
                                          f"{i:08x}-1c2d-4e5f-8a9b-0c1d2e3f4a5b"}},
                "gamertag": f"Player{seed % 1000:03d}x{i}",
                "joinTime": "2026-11-25T09:37:45.0000000Z",
            }
            for i in range(members)
        },
        "membersInfo": {"first": 0, "next": members, "count": members, "accepted": members},
        "name": name,
    }


def compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@contextmanager
def timed() -> Iterator[list[float]]:
    """`with timed() as t: ...` then t[0] is the elapsed wall time in seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)
