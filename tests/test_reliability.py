"""Reliability: kills, upstream faults, secrets, access control, on real processes.

Every load here is bounded in count and time, on 127.0.0.1 only.
"""

from __future__ import annotations

import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import Launcher
from conftest import free_port
from conftest import read_records

from mpsdproxy import recording
from mpsdproxy import title

TOKEN = "eyJhbGciOiJSUzI1NiJ9.SECRET-TOKEN-PAYLOAD.c2lnbmF0dXJl"
SIGNATURE = "AAAAAQHZ2SECRETSIGNATUREBYTESx8Q=="
HEADERS = [title.CONTRACT, ("Authorization", f"XBL3.0 x=4242;{TOKEN}"), ("Signature", SIGNATURE)]


def _answered_paths(records: Iterator[dict]) -> set[str]:
    return {urlsplit(rec["request"]["url"]).path for rec in records}


def test_sigkill_with_50_clients_mid_session(launch: Launcher) -> None:
    """50 clients each walk sessions (create, read, leave); kill -9 mid-run. Every exchange a
    client got an answer for is in the recording, which loads; a cut last line is named."""
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--quiet")
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        headers = [title.CONTRACT, ("Authorization", f"XBL3.0 x=user{n};t{n}")]
        with httpx.Client(base_url=proxy.url, timeout=5, headers=headers) as http:
            for i in range(200):  # bounded; the kill ends it sooner
                path = title.session_path(f"c{n}-s{i}")
                for method, body in (("PUT", b'{"members":{"me":{}}}'), ("GET", b""),
                                     ("PUT", b'{"members":{"me":null}}')):
                    if stop.is_set():
                        return
                    try:
                        http.request(method, path, content=body)
                    except httpx.HTTPError:
                        return
                    with lock:
                        answered.append(f"{method} {path}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(answered) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    proxy.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert len(answered) >= 300
    issues: list[recording.ReadIssue] = []
    recorded = {f"{rec['request']['method']} {urlsplit(rec['request']['url']).path}"
                for rec in recording.read(proxy.record, issues=issues)}
    assert all(i.truncated for i in issues), [str(i) for i in issues]
    assert [a for a in answered if a not in recorded] == []


class _Upstream:
    """A misbehaving upstream on loopback: each connection gets `behaviour(conn)`."""

    def __init__(self, behaviour: Callable[[socket.socket], None]) -> None:
        self.behaviour = behaviour
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(65536)
                self.behaviour(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        self.thread.join(timeout=5)


def _reset_mid_response(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"partial\":")
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def _garbage(conn: socket.socket) -> None:
    conn.sendall(b"THIS IS NOT HTTP AT ALL\r\n\r\n")


def _unlisted_status(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: 4\r\n\r\noops")


def _hang(conn: socket.socket) -> None:
    time.sleep(4)


@pytest.fixture
def upstream() -> Iterator[Callable[[Callable[[socket.socket], None]], _Upstream]]:
    made: list[_Upstream] = []

    def make(behaviour: Callable[[socket.socket], None]) -> _Upstream:
        server = _Upstream(behaviour)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


@pytest.mark.parametrize(
    "behaviour,client_timeout,expect_status",
    [
        ("refuse", 10, 502),
        (_reset_mid_response, 10, None),
        (_garbage, 10, 502),
        (_hang, 1, None),
    ],
    ids=["refused", "reset-mid-response", "garbage", "hang-past-client-timeout"],
)
def test_upstream_failures_are_answered_recorded_and_survived(
    launch: Launcher, upstream: Callable, behaviour: object, client_timeout: float,
    expect_status: int | None,
) -> None:
    if behaviour == "refuse":
        port = free_port()  # nothing listens there, and nothing else is handed it
    else:
        port = upstream(behaviour).port
    proxy = launch.proxy("--mode", f"reverse:http://127.0.0.1:{port}")
    path = title.session_path("upstream-fault")
    try:
        response = httpx.get(proxy.url + path, headers=HEADERS, timeout=client_timeout)
        status: int | None = response.status_code
    except httpx.HTTPError:
        status = None
    if expect_status is not None:
        assert status == expect_status  # mitmproxy's usual error answer
    deadline = time.monotonic() + 10
    records = read_records(proxy.record)
    while time.monotonic() < deadline and not records:
        time.sleep(0.05)
        records = read_records(proxy.record)
    assert len(records) == 1
    record = records[0]
    assert record["response"] is None
    assert record["error"]
    assert record["classification"]["id"] is None
    assert [a["code"] for a in record["classification"]["anomalies"]] == ["no-response"]
    assert proxy.proc.poll() is None, "the proxy must stay up"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=2):
        pass


def test_unlisted_upstream_status_is_forwarded_and_flagged(launch: Launcher,
                                                            upstream: Callable) -> None:
    port = upstream(_unlisted_status).port
    proxy = launch.proxy("--mode", f"reverse:http://127.0.0.1:{port}")
    response = httpx.get(proxy.url + title.session_path("s"), headers=HEADERS, timeout=10)
    assert response.status_code == 500
    assert response.text == "oops"
    (record,) = read_records(proxy.record)
    assert record["classification"]["id"] is None
    assert record["classification"]["anomalies"][0]["code"] == "unlisted-status"


def test_secrets_never_reach_disk_or_logs(launch: Launcher, tmp_path: Path) -> None:
    """A token and a signature sent through the proxy appear in no recording, export or log."""
    from click.testing import CliRunner

    from mpsdproxy.cli import cli

    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}")
    with httpx.Client(base_url=proxy.url, headers=HEADERS, timeout=10) as http:
        http.put(title.session_path("secret"), content=b'{"members":{"me":{}}}')
        http.get(title.session_path("secret"), headers={"Cookie": f"session={TOKEN}"})
    proxy.stop()
    outputs = [proxy.record, proxy.log]
    for fmt in ("har", "mitm", "saz"):
        out = tmp_path / f"export.{fmt}"
        result = CliRunner().invoke(cli, ["export", str(proxy.record), "--format", fmt,
                                          "-o", str(out)])
        assert result.exit_code == 0, result.output
        outputs.append(out)
    for path in outputs:
        data = path.read_bytes()
        assert TOKEN.encode() not in data, path
        assert SIGNATURE.encode() not in data, path
    assert b"redacted:" in proxy.record.read_bytes()


def test_proxyauth_through_the_cli(launch: Launcher, confdir: Path) -> None:
    standin = launch.standin()
    proxy = launch.proxy("--upstream", standin.url, "--set", "proxyauth=qa:s3cret")
    ca = ssl.create_default_context(cafile=str(confdir / "mitmproxy-ca-cert.pem"))
    url = "https://sessiondirectory.xboxlive.com" + title.session_path("auth")
    good = f"http://qa:s3cret@127.0.0.1:{proxy.port}"
    with httpx.Client(proxy=good, verify=ca, timeout=10) as http:
        assert http.get(url, headers=HEADERS).status_code == 204
    bad = f"http://qa:wrong@127.0.0.1:{proxy.port}"
    with httpx.Client(proxy=bad, verify=ca, timeout=10) as http, \
            pytest.raises(httpx.ProxyError, match="407"):
        http.get(url, headers=HEADERS)
