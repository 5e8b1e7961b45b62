"""Fixtures that start real processes on loopback: the stand-in and `mpsdproxy run`.

End-to-end tests talk to them over real sockets with a real HTTP client.
Every process started here is stopped by its PID when the test ends.
"""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from mpsdproxy import title

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PYTHONUNBUFFERED", "1")
sys.path.insert(0, str(ROOT))  # the benchmark harness, whose loopback ports the tests share

from bench.common import free_port  # noqa: E402


def parse_python(source: str) -> ast.Module:
    """`ast.parse`, once more after the spurious SystemError CPython 3.11 can raise ("AST
    constructor recursion depth mismatch", python/cpython#106905): its AST builder keeps
    its depth count in the interpreter, not the thread, and a pytest worker still runs
    other tests' server threads. Seen once in a parallel run; the source is the same, so
    a second parse gives the true tree."""
    try:
        return ast.parse(source)
    except SystemError:
        return ast.parse(source)


def pytest_configure(config: pytest.Config) -> None:
    """Make mitmproxy's default CA (`~/.mitmproxy`) once, before any test or worker runs:
    the demo and a few commands start proxies on it, and two pytest workers creating it
    at the same moment on a fresh machine could read each other's half-written files."""
    if hasattr(config, "workerinput"):  # a worker: the controller made it already
        return
    from mitmproxy import certs

    certs.CertStore.from_store(Path("~/.mitmproxy").expanduser(), "mitmproxy", 2048)


def _taddons_contexts_clean_up() -> None:
    """mitmproxy's `taddons.context` leaves behind what its master set up: an event loop
    of its own when none runs (three descriptors), and a log handler that posts every
    log record to that loop until the test ends. A hypothesis test making hundreds of
    contexts took a worker past 1,500 open files (a laptop's limit is often 256 or
    1,024). Here each context, when its `with` ends, takes its handler off the root
    logger and then closes the loop it made."""
    import asyncio
    import logging

    from mitmproxy import log
    from mitmproxy.test import taddons

    made = taddons.context.__init__

    def __init__(self: taddons.context, *args: object, **kwargs: object) -> None:
        try:
            asyncio.get_running_loop()
            self.made_loop = False
        except RuntimeError:
            self.made_loop = True
        made(self, *args, **kwargs)

    def __exit__(self: taddons.context, *exc: object) -> bool:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, log.LegacyLogEvents) and handler.master is self.master:
                root.removeHandler(handler)
        loop = self.master.event_loop
        if getattr(self, "made_loop", False) and not loop.is_running():
            loop.close()
        return False

    taddons.context.__init__ = __init__  # type: ignore[method-assign]
    taddons.context.__exit__ = __exit__  # type: ignore[method-assign]


_taddons_contexts_clean_up()


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A threaded http.server on a free loopback port for the test's duration; yields it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class ManualClock:
    """A clock the test moves by hand (`clock.now = ...`), for code that takes `clock=`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path,
                  timeout: float = 20.0) -> None:
    """Wait until something accepts on 127.0.0.1:port, failing fast if proc died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = log.read_text(errors="replace")
            raise RuntimeError(f"process exited with {proc.returncode} before listening:\n{out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout} s")


@dataclass
class Process:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    record: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")

    def wait_output(self, *texts: str, count: int = 1, timeout: float = 10.0) -> str:
        """The output once it holds each of `texts` (`count` times each), or as it is after
        `timeout` seconds: a running process prints a line a moment after what it is
        about (its banner after it listens, a log line after the answer), so a test that
        looks at once can miss it on a busy machine."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.output()
            if all(out.count(text) >= count for text in texts) or time.monotonic() > deadline:
                return out
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


class Launcher:
    """Starts `python -m mpsdproxy ...` processes and stops them all afterwards."""

    def __init__(self, tmp_path: Path, confdir: Path) -> None:
        self.tmp_path = tmp_path
        self.confdir = confdir
        self.started: list[Process] = []

    def spawn(self, args: list[str], port: int, record: Path | None = None) -> Process:
        log = self.tmp_path / f"{args[0]}-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mpsdproxy", *args],
                cwd=self.tmp_path, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(port, proc, log, record)
        self.started.append(process)
        wait_for_port(port, proc, log)
        return process

    def standin(self, *args: str) -> Process:
        port = free_port()
        return self.spawn(["emulate", "--listen-port", str(port), *args], port)

    def proxy(self, *args: str, record: bool = True) -> Process:
        port = free_port()
        path = self.tmp_path / f"proxy-{port}.jsonl" if record else None
        cli = ["run", "--listen-port", str(port), "--confdir", str(self.confdir), *args]
        if path:
            cli += ["--record", str(path)]
        return self.spawn(cli, port, path)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


@pytest.fixture(scope="session")
def confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mitmproxy confdir (and so one CA) for the whole run."""
    return tmp_path_factory.mktemp("mitmproxy-conf")


@pytest.fixture
def launch(tmp_path: Path, confdir: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path, confdir)
    try:
        yield launcher
    finally:
        launcher.stop_all()


def httpx_sender(client: httpx.Client, base: str, admin_base: str) -> title.Sender:
    """A title.Sender on httpx, for end-to-end tests."""

    def send(method: str, path: str, headers: list[tuple[str, str]], body: bytes,
             admin: bool) -> tuple[int, dict[str, str], bytes]:
        url = (admin_base if admin else base) + path
        if admin:
            response = httpx.request(method, url, content=body, headers=headers, timeout=10)
        else:
            response = client.request(method, url, content=body, headers=headers)
        return response.status_code, {k.lower(): v for k, v in response.headers.items()}, \
            response.content

    return send


def read_records(path: Path) -> list[dict]:
    from mpsdproxy import recording

    issues: list[recording.ReadIssue] = []
    records = list(recording.read(path, issues=issues))
    assert not issues, [str(i) for i in issues]
    return records

