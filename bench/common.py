"""What every benchmark shares: the machine, processes, /proc readings, proxies, upstream.

How the figures are taken from these (load runs in interleaved rounds, medians
of per-round ratios) is bench/measure.py. CPU cost is read from
/proc/<pid>/stat before and after each run and divided by the requests served,
which is steadier than throughput for small effects. Everything listens on
127.0.0.1, every run is bounded in time, and every process is stopped by its
PID.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import re
import shutil
import signal
import socket
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


def pin_to(cores: frozenset[int]) -> Callable[[], None] | None:
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

def _port_band() -> range:
    """The loopback ports this process hands out to the servers it starts (the benchmark's,
    the tests'): below the kernel's ephemeral range, which every outgoing connection takes
    its local port from (a port picked there can be taken by a client before the server
    binds it), and a slice of its own for each pytest-xdist worker (two workers never
    pick the same one)."""
    low, high = 10_000, 32_768
    with contextlib.suppress(OSError, ValueError):
        ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        start, end = int(ephemeral[0]), int(ephemeral[1])
        low, high = (10_000, start) if start - 10_000 >= 4_000 else (end + 1, 65_536)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = (high - low) // max(workers, 1)
    return range(low + worker * size, low + (worker + 1) * size)


_PORTS = _port_band()
#: The next port to try: processes sharing a band (a test and the benchmark it runs) start
#: far apart in it.
_next_port = [_PORTS.start + (os.getpid() * 7919) % len(_PORTS)]


def free_port() -> int:
    """A loopback port nothing listens on, from this process's band (`_port_band`), each
    handed out once before the band wraps around."""
    for _ in range(len(_PORTS)):
        port = _next_port[0]
        _next_port[0] = port + 1 if port + 1 < _PORTS.stop else _PORTS.start
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free loopback port in {_PORTS.start}-{_PORTS.stop - 1}")


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
              cores: frozenset[int] | None = None,
              env: dict[str, str] | None = None) -> Service:
        """Start a process (a proxy unless told otherwise: on PROXY_CORES), with `env`
        added to this one's environment."""
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(list(argv), cwd=self.workdir, stdout=out,
                                    env={**os.environ, **env} if env else None,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True,
                                    preexec_fn=pin_to(PROXY_CORES if cores is None else cores))
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

def tree_at(revision: str, into: Path) -> Path | None:
    """This repository's files at `revision` (`git archive`, the checkout left alone),
    to run that version's proxy beside today's; None when git or the revision is missing."""
    into.mkdir(parents=True, exist_ok=True)
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", revision],
                                 capture_output=True, timeout=120, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, capture_output=True,
                       timeout=120, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return into if (into / "mpsdproxy" / "__init__.py").exists() else None


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
