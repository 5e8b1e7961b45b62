"""The demo's third pass: two-console lobbies on shoulder taps, and a tap that never arrives.

The scripted consoles (`title.Console` on `title.RtaSocket`, wsproto over a socket) are
checked against the stand-in directly; the demo itself runs end to end in a child
process, and the command its last line suggests is run as printed.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from conftest import http_server

from mpsdproxy import emulator
from mpsdproxy import title


@pytest.fixture
def standin() -> Iterator[int]:
    with emulator.running() as (_, port):
        yield port


def _consoles(port: int, lobby: str, listens: title.Listens, stack: ExitStack,
              said: list[str]) -> list[title.Console]:
    consoles = []
    for who, xuid in (("host", "2533274800000201"), ("friend", "2533274800000202")):
        ws = title.RtaSocket("127.0.0.1", port, f"{lobby}-{who}")
        stack.callback(ws.close)
        send = title.HttpClientSender("127.0.0.1", port)
        stack.callback(send.close)
        consoles.append(title.Console(who, f"{lobby}-{who}", xuid, send, ws, listens,
                                      said.append))
    return consoles


def _open_websockets(port: int) -> list[object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/rta", timeout=10) as got:
        return json.load(got)["rta"]


@pytest.mark.parametrize("listens", [title.reads_newer, title.reads_next_only])
def test_the_host_learns_of_each_change_from_a_tap(standin: int,
                                                   listens: title.Listens) -> None:
    said: list[str] = []
    with ExitStack() as stack:
        host, friend = _consoles(standin, "tapped-lobby", listens, stack, said)
        assert title.rta_lobby(host, friend, "tapped-lobby")  # no tap lost: both keep up
        assert host.connection_id and host.connection_id != friend.connection_id
        assert host.change_number == friend.change_number == 4
        assert host.copy["properties"]["custom"] == {"map": "harbour", "mode": "ctf"}
        assert len(_open_websockets(standin)) == 2
    assert any("<- tap changeNumber 2 (has 1): reads the lobby -> 2 member(s)" in line
               for line in said), said
    deadline = time.monotonic() + 5
    while _open_websockets(standin):  # the close frames reached the stand-in
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_title_that_waits_for_the_next_change_number_ignores_a_later_one() -> None:
    assert title.reads_newer(4, 2) and not title.reads_newer(2, 2)
    assert title.reads_next_only(3, 2) and not title.reads_next_only(4, 2)


def test_a_refused_websocket_says_so() -> None:
    class NotHere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with http_server(NotHere) as port, pytest.raises(ConnectionError, match="404"):
        title.RtaSocket("127.0.0.1", port, "nobody", timeout=5)


def test_the_demo_tells_the_title_that_read_from_the_one_that_never_noticed(
        tmp_path: Path) -> None:
    record = tmp_path / "demo.jsonl"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mpsdproxy", "demo", "--record", str(record)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    third = out[out.index("== 3. "):]
    assert "rta-good-lobby host: read sessions/rta-good-lobby" in third
    assert "PASS rta-good-lobby host" in third and "FAIL rta-good-lobby host" not in third
    assert "FAIL rta-bad-lobby host: did not read sessions/rta-bad-lobby within 5 s of the " \
           "tap for changeNumber 4" in third
    assert "host   hears no tap for changeNumber 3" in third
    assert "STALE, the lobby is at 4" in third
    assert "missed-tap: " in third and "unexpected" not in third
    rta_record = tmp_path / "demo-rta.jsonl"
    assert rta_record.exists() and (tmp_path / "demo-rta.html").exists()
    assert took < 30, f"the demo took {took:.1f} s"
    last = out.strip().splitlines()[-1]
    assert last.startswith("Again, any time: mpsdproxy report ")
    command = shlex.split(last.split(": ", 1)[1])
    again = subprocess.run([sys.executable, "-m", "mpsdproxy", *command[1:]],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (tmp_path / "report.html").exists()
