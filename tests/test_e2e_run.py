"""End to end: a real HTTP client through `mpsdproxy run` in front of the stand-in.

Every row of the status table is produced by a real request, and the
recording then holds one correct, classified, redacted line per exchange.
"""

from __future__ import annotations

import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import HTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import Launcher
from conftest import httpx_sender
from conftest import read_records

from mpsdproxy import catalog
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import title

SECRET_TOKEN = "token-of-alice"


def _check_lifecycle(results: list[title.Result]) -> None:
    """Each step got the status of the row it expects."""
    for r in results:
        if r.step.expect:
            assert r.status == catalog.get(r.step.expect).status, (r.step.says, r.body)
    produced = {r.step.expect for r in results if r.step.expect}
    assert produced == set(catalog.BY_ID), "the lifecycle must produce every row of the table"


def _check_recording(path: Path, results: list[title.Result]) -> list[dict]:
    """One classified, conformant, redacted line per title exchange, in order."""
    title_steps = [r for r in results if not r.step.admin]
    records = read_records(path)
    assert [rec["seq"] for rec in records] == list(range(1, len(title_steps) + 1))
    for rec, r in zip(records, title_steps, strict=True):
        assert rec["request"]["method"] == r.step.method
        assert rec["response"]["status"] == r.status
        assert rec["classification"]["id"] == r.step.expect, rec
        assert rec["classification"]["anomalies"] == [], rec
        assert rec["provenance"] == {"source": "forwarded"}
    raw = path.read_bytes()
    assert SECRET_TOKEN.encode() not in raw
    assert b"redacted:" in raw
    return records


def test_reverse_mode_produces_every_row(launch: Launcher) -> None:
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}")
    with httpx.Client(timeout=10) as client:
        results = title.run(title.lifecycle(), httpx_sender(client, proxy.url, standin.url))
    _check_lifecycle(results)
    records = _check_recording(proxy.record, results)
    assert records[0]["resource"]["kind"] == "session"
    output = proxy.wait_output("201 Created", "412.if-match-session")
    assert "201 Created" in output and "412.if-match-session" in output


def test_regular_mode_https_through_mitm_ca_to_upstream(launch: Launcher, confdir: Path) -> None:
    """HTTPS to sessiondirectory.xboxlive.com, decrypted with the proxy's CA, sent to the
    stand-in with --upstream: no network, request bytes unchanged."""
    standin = launch.standin()
    proxy = launch.proxy("--upstream", standin.url)
    ca = confdir / "mitmproxy-ca-cert.pem"
    assert ca.exists()
    base = "https://sessiondirectory.xboxlive.com"
    verify = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(proxy=proxy.url, verify=verify, timeout=10) as client:
        results = title.run(title.lifecycle("https-lobby"), httpx_sender(client, base, standin.url))
    _check_lifecycle(results)
    records = _check_recording(proxy.record, results)
    assert all(rec["request"]["url"].startswith(base + "/") for rec in records)


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b"hello from elsewhere"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS server on loopback with its own self-signed certificate for `localhost`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from mitmproxy import certs

    store = certs.CertStore.from_store(tmp_path / "other-ca", "other", 2048)
    entry = store.get_cert("localhost", [x509.DNSName("localhost")])
    key = entry.privatekey.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_file = tmp_path / "server.pem"
    cert_file.write_bytes(entry.cert.to_pem() + key)
    ca_file = tmp_path / "other-ca" / "other-ca-cert.pem"
    server = HTTPServer(("127.0.0.1", 0), _Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], ca_file
    finally:
        server.shutdown()
        server.server_close()


def test_other_hosts_pass_through_undecrypted(launch: Launcher, tls_server: tuple[int, Path]
                                              ) -> None:
    """A host that is not the session directory keeps its own certificate end to end
    (the client trusts only that server's CA) and is never recorded."""
    port, other_ca = tls_server
    proxy = launch.proxy()
    verify = ssl.create_default_context(cafile=str(other_ca))
    with httpx.Client(proxy=proxy.url, verify=verify, timeout=10) as client:
        response = client.get(f"https://localhost:{port}/")
    assert response.status_code == 200
    assert response.text == "hello from elsewhere"
    assert read_records(proxy.record) == []


def test_sigkill_loses_no_answered_exchange(launch: Launcher) -> None:
    """Kill -9 the proxy while a client is mid-stream: every exchange the client got an
    answer for is in the recording, which still loads."""
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--quiet")
    answered: list[str] = []
    headers = [title.CONTRACT, ("Authorization", "XBL3.0 x=k;t")]

    def client_loop() -> None:
        with httpx.Client(timeout=5) as client:
            for i in range(5000):  # bounded; the kill ends it long before
                path = title.session_path(f"kill-{i}")
                try:
                    response = client.get(proxy.url + path, headers=headers)
                except httpx.HTTPError:
                    return
                if response.status_code == 204:
                    answered.append(path)

    thread = threading.Thread(target=client_loop)
    thread.start()
    deadline = time.monotonic() + 20
    while len(answered) < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    proxy.stop(signal.SIGKILL)
    thread.join(timeout=10)
    assert len(answered) >= 30
    issues: list[recording.ReadIssue] = []
    recorded = {urlsplit(rec["request"]["url"]).path
                for rec in recording.read(proxy.record, issues=issues)}
    assert all(issue.truncated for issue in issues), [str(i) for i in issues]
    assert [p for p in answered if p not in recorded] == []


def test_listens_on_loopback_only_by_default(launch: Launcher) -> None:
    proxy = launch.proxy(record=False)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=2):
        pass
    addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    for address in addresses - {"127.0.0.1", "127.0.1.1", "::1"}:
        with pytest.raises(OSError), socket.create_connection((address, proxy.port), timeout=1):
            pass


def test_mitmdump_loads_the_same_addons_and_options(launch: Launcher, tmp_path: Path) -> None:
    """`mitmdump -s addons/mpsdproxy.py` works even though the script shares the package's
    name, and takes the same `mpsd_` options as `mpsdproxy run`."""
    import subprocess
    import sys

    from conftest import ROOT
    from conftest import free_port
    from conftest import wait_for_port

    standin = launch.standin()
    port, record, log = free_port(), tmp_path / "mitmdump.jsonl", tmp_path / "mitmdump.log"
    mitmdump = Path(sys.executable).parent / "mitmdump"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(mitmdump), "-s", str(ROOT / "addons" / "mpsdproxy.py"), "-p", str(port),
             "--mode", f"reverse:{standin.url}", "--set", f"mpsd_record={record}",
             "--set", f"confdir={tmp_path}"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for_port(port, proc, log)
        headers = [title.CONTRACT, ("Authorization", f"XBL3.0 x=a;{SECRET_TOKEN}")]
        response = httpx.get(f"http://127.0.0.1:{port}{title.session_path('via-mitmdump')}",
                             headers=headers, timeout=10)
        assert response.status_code == 204
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    (rec,) = read_records(record)
    assert rec["classification"]["id"] == "204.get-session"
    assert SECRET_TOKEN.encode() not in record.read_bytes()


def _send_raw(port: int, head: bytes, body: bytes = b"") -> bytes:
    """One HTTP/1.1 request written byte for byte (a client library would clean it up);
    returns the status line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                  + b"Connection: close\r\n\r\n" + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_odd_bytes_are_answered_and_recorded_with_the_next_seq(launch: Launcher) -> None:
    """A 1,000-deep JSON body, a path byte 0xE9 and a header byte 0xFF: each exchange gets
    the next record, and every record reads back as the exchange it was."""
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}")
    session = title.session_path("odd-bytes").encode()
    auth = b"Authorization: XBL3.0 x=1;" + SECRET_TOKEN.encode() + b"\r\n"
    host = b"Host: sessiondirectory.xboxlive.com\r\n"
    deep = b"[" * 1000 + b"1" + b"]" * 1000
    sent = [
        (b"GET " + session + b" HTTP/1.1\r\n" + host + auth, b""),
        (b"PUT " + session + b" HTTP/1.1\r\n" + host + auth
         + b"Content-Type: application/json\r\n", deep),
        (b"GET " + session + b"/caf\xe9 HTTP/1.1\r\n" + host + auth, b""),
        (b"GET " + session + b" HTTP/1.1\r\n" + host + auth + b"X-Title: Caf\xff Racer\r\n", b""),
        (b"GET " + session + b" HTTP/1.1\r\n" + host + auth, b""),
    ]
    for head, body in sent:
        assert _send_raw(proxy.port, head, body).startswith(b"HTTP/1.1 ")
    deadline = time.monotonic() + 10
    records = read_records(proxy.record)
    while len(records) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)
        records = read_records(proxy.record)
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    exchanges = [recording.to_exchange(r) for r in records]
    assert exchanges[1].request.body == deep
    assert model.to_bytes(exchanges[2].request.path) == session + b"/caf\xe9"
    assert exchanges[3].request.headers.get("X-Title") == "Caf\udcff Racer"
    assert all(e.response is not None for e in exchanges)
    assert SECRET_TOKEN.encode() not in proxy.record.read_bytes()

