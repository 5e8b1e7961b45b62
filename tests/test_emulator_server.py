"""The stand-in over HTTP/1.1 on real loopback sockets: keep-alive, garbage, the
switches, bytes that are not UTF-8, FGRL with an injected clock, and `run`/`running`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ManualClock

from mpsdproxy import emulator
from mpsdproxy import fgrl
from mpsdproxy import model

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby"
LOBBY_KEY = f"{SCID}~lobbysession~lobby"
CONFIG = emulator.default_config()
ROOT = Path(__file__).resolve().parent.parent


def auth(user: str = "alice") -> list[tuple[str, str]]:
    return [("x-xbl-contract-version", "107"),
            ("Authorization", f"XBL3.0 x={user};token-of-{user}")]


def me(xuid: str) -> dict[str, Any]:
    return {"members": {"me": {"constants": {"system": {"xuid": xuid, "initialize": True}},
                               "properties": {"system": {"active": True}}}}}


def send(emu: emulator.Emulator, method: str, target: str, body: bytes = b"",
         headers: list[tuple[str, str]] | None = None) -> model.Response:
    """One request as the server answers it (switches included), without a socket."""
    asked = model.Request(method, f"http://127.0.0.1{target}",
                          auth() if headers is None else headers, body)
    return emulator.answer(emu, asked)




def _read_until_closed(sock: socket.socket, limit: float = 5.0) -> bytes:
    sock.settimeout(limit)
    data = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_serve_keep_alive_with_httpx() -> None:
    headers = dict(auth())
    with emulator.running(CONFIG) as (emu, port), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        created = client.put(LOBBY, headers=headers, content=json.dumps(me("1001")))
        assert created.status_code == 201
        assert created.headers["etag"] == (emu.session(LOBBY_KEY) or ({}, ""))[1]
        statuses = [client.get(LOBBY, headers=headers).status_code for _ in range(3)]
        not_modified = client.get(LOBBY, headers={**headers, "If-None-Match":
                                                  created.headers["etag"]})
        gone = client.put(LOBBY, headers=headers, content=b'{"members":{"me":null}}')
        responses = [created, not_modified, gone]
        ports = {r.extensions["network_stream"].get_extra_info("client_addr")[1]
                 for r in responses}
        assert statuses == [200, 200, 200]
        assert (not_modified.status_code, gone.status_code) == (304, 204)
        assert len(ports) == 1, "one keep-alive connection served every request"
        head = client.head(LOBBY, headers=headers)
        assert head.status_code == 405 and head.content == b""


def test_serve_garbage_gets_400_and_close() -> None:
    with emulator.running(CONFIG) as (_, port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"HELLO THERE\r\n\r\n")
            answer = _read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"Connection: close" in answer and b"text/plain" in answer
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
            assert _read_until_closed(sock).startswith(b"HTTP/1.1 400 ")


def test_serve_switches_over_http() -> None:
    with emulator.running(CONFIG) as (emu, port), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        switched = client.post("/_emulator/overload", content=b'{"retry_after": 2, "requests": 1}')
        assert switched.json() == {"overload": {"retry_after": 2, "requests": 1}}
        outage = client.get(LOBBY, headers=dict(auth()))
        assert (outage.status_code, outage.headers["Retry-After"]) == (503, "2")
        assert client.get(LOBBY, headers=dict(auth())).status_code == 204
        assert client.get("/_emulator/sessions").json() == []
        assert not emu.overloaded


def test_serve_bytes_that_are_not_utf8() -> None:
    """A header byte 0xFF is read by the one rule and answered; a path byte 0xE9 (which
    HTTP/1.1 does not allow on the request line) gets a clean 400."""
    head = (b"PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: XBL3.0 x=alice;t\r\n"
            b"x-xbl-contract-version: 107\r\nX-Title: Caf\xff\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n")
    body = json.dumps(me("1001")).encode()
    with emulator.running(CONFIG) as (emu, port):
        for path, status in ((LOBBY.encode(), b"201 Created"),
                             (LOBBY.encode() + b"\xe9", b"400 Bad Request")):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(head % (path, len(body)) + body)
                answer = _read_until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 " + status + b"\r\n"), answer
        assert [s["path"] for s in emu.sessions()] == [LOBBY]


def test_serve_many_concurrent_connections() -> None:
    request = (f"GET {LOBBY} HTTP/1.1\r\nHost: x\r\nAuthorization: XBL3.0 x={{user}};t\r\n"
               "x-xbl-contract-version: 107\r\nConnection: close\r\n\r\n")
    with emulator.running(CONFIG) as (_, port):
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
        try:
            for i, sock in enumerate(socks):
                sock.sendall(request.format(user=f"u{i}").encode())
            answers = [_read_until_closed(sock) for sock in socks]
        finally:
            for sock in socks:
                sock.close()
    assert all(a.startswith(b"HTTP/1.1 204 No Content\r\n") for a in answers)


def test_running_stops_cleanly_and_leaves_nothing_behind() -> None:
    threads = threading.active_count()
    fds = len(os.listdir("/proc/self/fd"))
    with emulator.running(CONFIG) as (_, port):
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)
        idle.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(100).startswith(b"HTTP/1.1 403")
        assert threading.active_count() == threads + 1
    _read_until_closed(idle)  # the rest of the answer, then the server's close (or timeout)
    idle.close()
    assert threading.active_count() == threads
    assert len(os.listdir("/proc/self/fd")) == fds
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_run_blocks_until_sigterm() -> None:
    code = ("import logging, sys\n"
            "from mpsdproxy import emulator\n"
            "emulator.run('127.0.0.1', 0, None, ready=lambda p: print(p, flush=True))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        answer = httpx.get(f"http://127.0.0.1:{port}{LOBBY}", headers=dict(auth()), timeout=5)
        assert answer.status_code == 204
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert (proc.returncode, out, err) == (0, b"", b"")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def test_run_rejects_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nrate_limit: {burst: 0}\n")
    with pytest.raises(ValueError, match=r"bad.yaml:2:21: rate_limit.burst"):
        emulator.run("127.0.0.1", 0, path)


def test_burst_of_two_over_http_agrees_with_the_fgrl_window() -> None:
    """Burst limit 2, requests at 0, 1 and 2 s: the third is 429, Retry-After 13, and its
    body is the FGRL message the one window gives (as an injected 429's is)."""
    clock = ManualClock(1000.0)
    config = emulator.EmulatorConfig(CONFIG.scids, rate_limit=emulator.RateLimit(2, 300))
    stand_in = emulator.Emulator(config, clock=clock)
    with emulator.running(emulator=stand_in) as (_, port), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        answers = []
        for _ in range(3):
            answers.append(client.get(LOBBY, headers=dict(auth())))
            clock.now += 1
    assert [a.status_code for a in answers] == [204, 204, 429]
    throttled = answers[-1]
    assert throttled.headers["Retry-After"] == "13"
    caller = fgrl.Caller(fgrl.Budget(2, 300))
    decision = [caller.admit(t) for t in (0, 1, 2)][-1]
    assert decision.retry_after == 13
    assert throttled.json() == fgrl.message(decision)
    assert (throttled.json()["maxRequests"], throttled.json()["periodInSeconds"]) == (2, 15)


# -- the switches below /_emulator/ ----------------------------------------------------------


def test_overload_switch() -> None:
    emu = emulator.Emulator(CONFIG)
    control = send(emu, "POST", "/_emulator/overload", b'{"retry_after": 2, "requests": 1}', [])
    assert control.status == 200 and emu.overloaded
    outage = send(emu, "GET", LOBBY)
    assert (outage.status, outage.header("Retry-After")) == (503, "2")
    assert send(emu, "GET", LOBBY).status == 204, "only the next request was overloaded"

    send(emu, "POST", "/_emulator/overload", b'{"retry_after": 4}', [])
    assert [send(emu, "GET", LOBBY).status for _ in range(3)] == [503] * 3
    assert send(emu, "POST", "/_emulator/recover", b"", []).status == 200
    assert send(emu, "GET", LOBBY).status == 204

    bad = send(emu, "POST", "/_emulator/overload", b'{"retry_after": 0}', [])
    assert bad.status == 400 and not emu.overloaded
    for sent, said in ((b"true", b"not true"), (b'"2"', b"not '2'"), (b"1.5", b"not 1.5")):
        bad = send(emu, "POST", "/_emulator/overload", b'{"retry_after": ' + sent + b"}", [])
        assert bad.status == 400 and said in bad.body, bad.body  # yamlfile.show: true, not True
    unknown = send(emu, "POST", "/_emulator/overload", b'{"retry": 1}', [])
    assert unknown.status == 400 and b"retry_after and requests" in unknown.body
    wrong_verb = send(emu, "GET", "/_emulator/overload", b"", [])
    assert (wrong_verb.status, wrong_verb.header("Allow")) == (405, "POST")
    assert send(emu, "GET", "/_emulator/nothing", b"", []).status == 404


def test_switches_are_never_throttled_or_overloaded() -> None:
    emu = emulator.Emulator(CONFIG)
    emu.overload(3)
    assert send(emu, "GET", "/_emulator/sessions", b"", []).status == 200
    assert send(emu, "POST", "/_emulator/recover", b"", []).status == 200


def test_sessions_listing_and_reset() -> None:
    emu = emulator.Emulator(CONFIG)
    etag = send(emu, "PUT", LOBBY, json.dumps(me("1001")).encode()).header("ETag")
    listing = json.loads(send(emu, "GET", "/_emulator/sessions", b"", []).body)
    assert listing == [{"key": LOBBY_KEY, "path": LOBBY, "changeNumber": 1, "etag": etag}]
    assert send(emu, "POST", "/_emulator/reset", b"", []).status == 200
    assert emu.sessions() == []
    assert send(emu, "GET", LOBBY).status == 204


def test_change_switch_moves_the_session_on_as_another_client_would() -> None:
    emu = emulator.Emulator(CONFIG)
    old = send(emu, "PUT", LOBBY, json.dumps(me("1001")).encode()).header("ETag")
    changed = send(emu, "POST", "/_emulator/change",
                   json.dumps({"session": LOBBY}).encode(), [])
    assert changed.status == 200
    assert changed.header("ETag") not in (None, old)
    assert json.loads(changed.body)["changeNumber"] == 2
    # The title's old ETag is stale now; the new one writes.
    write = json.dumps({"properties": {"custom": {"map": "dunes"}}}).encode()
    stale = send(emu, "PUT", LOBBY, write, [*auth(), ("If-Match", old)])
    assert stale.status == 412 and stale.header("ETag") == changed.header("ETag")
    assert send(emu, "PUT", LOBBY, write,
                [*auth(), ("If-Match", changed.header("ETag"))]).status == 200
    missing = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/none"
    assert send(emu, "POST", "/_emulator/change",
                json.dumps({"session": missing}).encode(), []).status == 404
    assert send(emu, "POST", "/_emulator/change", b'{"other": 1}', []).status == 400
