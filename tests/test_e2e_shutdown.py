"""End to end: stopping `mpsdproxy run` with exchanges in flight, over real sockets.

A slow upstream (an http.server that sleeps before it answers) holds requests
in flight while the test signals the proxy process. The first SIGTERM must stop
new connections, let every exchange in flight get its answer and be recorded,
and exit 0; the grace is bounded; a second signal stops at once.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from conftest import Launcher
from conftest import Process
from conftest import http_server
from conftest import read_records

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/"


class Slow:
    """A slow upstream: every GET waits `delay` seconds, then answers 200 with a session."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrived = threading.Semaphore(0)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        slow = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                slow.arrived.release()
                time.sleep(slow.delay)
                body = b'{"constants": {}, "properties": {}, "members": {}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("ETag", '"e1"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def slow_upstream() -> Iterator[tuple[Slow, int]]:
    slow = Slow(1.5)
    with http_server(slow.handler()) as port:
        yield slow, port


def _in_flight(proxy: Process, slow: Slow, count: int) -> tuple[list[threading.Thread], dict]:
    """`count` GETs through the proxy, each on its own connection and thread; returns once
    the upstream holds all of them."""
    results: dict[int, int | str] = {}

    def get(i: int) -> None:
        try:
            results[i] = httpx.get(f"{proxy.url}{LOBBY}lobby-{i}", timeout=20).status_code
        except httpx.HTTPError as e:
            results[i] = f"{type(e).__name__}: {e}"

    threads = [threading.Thread(target=get, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for _ in range(count):
        assert slow.arrived.acquire(timeout=10), "the requests never reached the upstream"
    return threads, results


def _refuses_connections(port: int, within: float = 1.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_sigterm_lets_five_exchanges_in_flight_finish_and_records_them(
        launch: Launcher, slow_upstream: tuple[Slow, int]) -> None:
    slow, port = slow_upstream
    proxy = launch.proxy("--mode", f"reverse:http://127.0.0.1:{port}", "--quiet")
    threads, results = _in_flight(proxy, slow, 5)
    started = time.monotonic()
    proxy.proc.send_signal(signal.SIGTERM)
    assert _refuses_connections(proxy.port), "the proxy kept accepting after SIGTERM"
    for t in threads:
        t.join(timeout=15)
    assert results == {i: 200 for i in range(5)}, results
    assert proxy.proc.wait(timeout=15) == 0, proxy.output()
    assert time.monotonic() - started < 8
    assert proxy.record is not None
    records = read_records(proxy.record)
    assert sorted(r["request"]["url"].rsplit("/", 1)[-1] for r in records) == \
        [f"lobby-{i}" for i in range(5)]
    assert all(r["response"]["status"] == 200 for r in records)
    assert "Stopping" in proxy.output()


def test_the_grace_is_bounded(launch: Launcher, tmp_path: Path) -> None:
    slow = Slow(6)
    with http_server(slow.handler()) as port:
        proxy = launch.proxy("--mode", f"reverse:http://127.0.0.1:{port}", "--quiet",
                             "--set", "mpsd_shutdown_grace=1")
        threads, results = _in_flight(proxy, slow, 1)
        started = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(timeout=10) == 0, proxy.output()
        assert time.monotonic() - started < 4
        threads[0].join(timeout=10)
    assert results[0] != 200
    assert "still in flight after 1 s" in proxy.output()


def test_a_second_signal_stops_at_once(launch: Launcher) -> None:
    slow = Slow(6)
    with http_server(slow.handler()) as port:
        proxy = launch.proxy("--mode", f"reverse:http://127.0.0.1:{port}", "--quiet")
        threads, _ = _in_flight(proxy, slow, 1)
        started = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        proxy.proc.send_signal(signal.SIGINT)
        proxy.proc.wait(timeout=10)
        assert time.monotonic() - started < 3, proxy.output()
        threads[0].join(timeout=10)
    assert "Stopping now" in proxy.output()


def test_sigterm_with_nothing_in_flight_stops_promptly(launch: Launcher) -> None:
    proxy = launch.proxy("--quiet")
    started = time.monotonic()
    assert proxy.stop() == 0, proxy.output()
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("request_bytes", [
    # mitmproxy's reader gives up on trailers with no hook: the flow never ends.
    b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
    b"X-Trailer: 1\r\n\r\n",
    # the client leaves halfway through its body: mitmproxy's error hook ends it.
    b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n{}",
], ids=["trailers", "half-a-body"])
def test_a_request_its_client_gave_up_on_is_not_waited_for(
        launch: Launcher, slow_upstream: tuple[Slow, int], request_bytes: bytes) -> None:
    _, port = slow_upstream
    proxy = launch.proxy("--mode", f"reverse:http://127.0.0.1:{port}", "--quiet",
                         "--set", "mpsd_shutdown_grace=3")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
        client.sendall(request_bytes)
        client.shutdown(socket.SHUT_WR)
        while client.recv(4096):  # until the proxy closes the connection
            pass
    assert proxy.stop() == 0, proxy.output()
    assert "Stopping" in proxy.output()
    assert "still in flight" not in proxy.output(), proxy.output()
