"""Reverse mode's own credential check, over real sockets: `run --client-header` and
`--allow-client` in front of the stand-in (and an echo server that shows the headers the
upstream got). The title's Authorization reaches the upstream unchanged."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import httpx
from conftest import Launcher
from conftest import http_server

AUTH = "XBL3.0 x=1234;token-of-alice"
HEADERS = {"Authorization": AUTH, "x-xbl-contract-version": "107"}
PATH = "/serviceconfigs/00000000-0000-0000-0000-000000000000/sessiontemplates/t/sessions/s"


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps(dict(self.headers.items())).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_client_header_is_required_and_stripped(launch: Launcher) -> None:
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--client-header", "X-Studio-Key=k1")
    with httpx.Client(timeout=10) as client:
        refused = client.get(proxy.url + PATH, headers=HEADERS)
        wrong = client.get(proxy.url + PATH, headers={**HEADERS, "X-Studio-Key": "nope"})
        passed = client.get(proxy.url + PATH, headers={**HEADERS, "X-Studio-Key": "k1"})
    assert refused.status_code == 403 and "Refused by mpsdproxy" in refused.text
    assert wrong.status_code == 403 and "Refused by mpsdproxy" in wrong.text
    assert passed.status_code == 404, passed.text  # the stand-in's: no such session, authorized
    assert "Refused by mpsdproxy" not in passed.text
    log = proxy.wait_output("Refused 127.0.0.1", count=2)
    assert log.count("Refused 127.0.0.1") == 2 and "k1" not in log and "nope" not in log


def test_authorization_reaches_the_upstream_unchanged(launch: Launcher) -> None:
    with http_server(_Echo) as port:
        proxy = launch.proxy("--mode", f"reverse:http://127.0.0.1:{port}",
                             "--client-header", "X-Studio-Key=k1", record=False)
        got = httpx.get(proxy.url + PATH, headers={**HEADERS, "X-Studio-Key": "k1"}, timeout=10)
        seen = {k.lower(): v for k, v in got.json().items()}
        proxy.stop()
    assert seen["authorization"] == AUTH
    assert "x-studio-key" not in seen


def test_allow_client_refuses_other_sources(launch: Launcher) -> None:
    standin = launch.standin()
    outside = launch.proxy("--mode", f"reverse:{standin.url}", "--allow-client", "10.0.0.0/8")
    inside = launch.proxy("--mode", f"reverse:{standin.url}", "--allow-client", "127.0.0.0/8",
                          "--allow-client", "10.0.0.0/8")
    refused = httpx.get(outside.url + PATH, headers=HEADERS, timeout=10)
    passed = httpx.get(inside.url + PATH, headers=HEADERS, timeout=10)
    assert refused.status_code == 403 and "source address" in refused.text
    assert "Refused 127.0.0.1" in outside.wait_output("Refused 127.0.0.1")
    assert passed.status_code == 404 and "Refused" not in passed.text


def test_bad_values_are_one_line_naming_the_flag() -> None:
    import subprocess
    import sys

    for args, flag in ((["--client-header", "novalue"], "--client-header"),
                       (["--allow-client", "10.0.0.0/99"], "--allow-client")):
        done = subprocess.run([sys.executable, "-m", "mpsdproxy", "run", "--listen-port", "0",
                               *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert flag in done.stderr and len(done.stderr.strip().splitlines()) == 1
