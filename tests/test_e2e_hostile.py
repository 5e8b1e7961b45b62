"""End to end, over real sockets: the defects hostile input used to find.

- a scenario header glob with a non-ASCII character matches the UTF-8 header it
  names (one decoding rule, everywhere);
- an injected 429 and the stand-in's 429 agree on Retry-After for the same
  calls (one FGRL window);
- a body nested 1,000 deep, a path byte 0xE9 and a header byte 0xFF are each
  recorded with the next sequence number, and every reader of recordings
  (report in all formats, diff, resend, every export) reads the file back.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Launcher
from conftest import Process
from conftest import read_records

from mpsdproxy import recording
from mpsdproxy import title

SESSION = title.session_path("hostile-lobby")
AUTH = ("Authorization", "XBL3.0 x=1001;secret-token")


def send(proxy: Process, method: str, path: bytes | str, headers: list[tuple[str, bytes | str]],
         body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request with exactly these bytes on the request line and in the headers
    (http.client would refuse a byte that is not ASCII in the path)."""
    target = path if isinstance(path, bytes) else path.encode()
    fields = [title.CONTRACT, AUTH, ("Host", f"127.0.0.1:{proxy.port}"), *headers,
              ("Content-Length", str(len(body)))]
    if body:
        fields.append(("Content-Type", "application/json"))
    head = method.encode() + b" " + target + b" HTTP/1.1\r\n" + b"".join(
        name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
        + b"\r\n" for name, value in fields) + b"Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as sock:
        sock.sendall(head + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, \
            response.read()


def mpsdproxy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mpsdproxy", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, errors="replace")


def test_a_non_ascii_header_glob_matches_the_utf8_header(launch: Launcher,
                                                         tmp_path: Path) -> None:
    rule = tmp_path / "cafe.yaml"
    rule.write_text(
        "name: cafe\nrules:\n  - name: cafe-outage\n"
        "    match: {headers: {X-Title: \"Café*\"}}\n"
        "    fault: {status: 503, retry_after: 7}\n", encoding="utf-8")
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--scenario", str(rule), "--quiet")
    status, headers, _ = send(proxy, "GET", SESSION, [("X-Title", "Café Racer".encode())])
    assert (status, headers.get("retry-after")) == (503, "7")
    status, _, _ = send(proxy, "GET", SESSION, [("X-Title", "Cafe Racer")])
    assert status != 503
    proxy.stop()
    first = read_records(proxy.record)[0]
    assert first["provenance"]["source"] == "injected"
    assert ["X-Title", "Café Racer"] in first["request"]["headers"]


def test_injected_and_emulated_429s_agree_on_retry_after(launch: Launcher,
                                                         tmp_path: Path) -> None:
    throttle = tmp_path / "throttle.yaml"
    throttle.write_text("name: t\nrules:\n  - name: budget\n    fault:\n"
                        "      throttle: {burst: 2, sustained: 100}\n", encoding="utf-8")
    config = tmp_path / "standin.yaml"
    default = (Path(recording.__file__).parent.parent / "data" / "emulator.yaml")
    config.write_text(default.read_text(encoding="utf-8").replace(
        "rate_limit: {burst: 30, sustained: 300}", "rate_limit: {burst: 2, sustained: 100}"),
        encoding="utf-8")
    limited = launch.standin("--config", str(config))
    plain = launch.standin()
    injecting = launch.proxy("--mode", f"reverse:{plain.url}", "--scenario", str(throttle),
                             "--quiet")
    emulating = launch.proxy("--mode", f"reverse:{limited.url}", "--quiet")
    answers: dict[str, list[tuple[int, str | None]]] = {"injected": [], "emulated": []}
    for i in range(3):
        if i:
            time.sleep(1.0)
        for name, proxy in (("injected", injecting), ("emulated", emulating)):
            status, headers, _ = send(proxy, "GET", SESSION + "x", [])
            answers[name].append((status, headers.get("retry-after")))
    assert [s for s, _ in answers["injected"]][2] == 429
    assert answers["injected"][2] == answers["emulated"][2] == (429, "13")


@pytest.fixture
def hostile_recording(launch: Launcher) -> Process:
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--quiet")
    deep = b"[" * 1000 + b"]" * 1000
    send(proxy, "PUT", SESSION, [], deep)
    send(proxy, "GET", SESSION.encode() + b"\xe9", [])
    send(proxy, "GET", SESSION, [("X-Odd", b"\xffodd")])
    proxy.stop()
    return proxy


def test_hostile_bytes_are_each_recorded_with_the_next_seq(hostile_recording: Process) -> None:
    records = read_records(hostile_recording.record)
    assert [r["seq"] for r in records] == [1, 2, 3]
    exchanges = [recording.to_exchange(r) for r in records]
    assert exchanges[0].request.body == b"[" * 1000 + b"]" * 1000
    assert recording.decode_body(records[0]["request"]["body"]).startswith(b"[[[")
    assert exchanges[1].request.url.endswith("\udce9")
    assert exchanges[2].request.headers.get("X-Odd") == "\udcffodd"


@pytest.mark.parametrize("fmt", ["text", "json", "html", "junit"])
def test_every_report_format_reads_hostile_bytes(hostile_recording: Process, tmp_path: Path,
                                                 fmt: str) -> None:
    out = tmp_path / f"report.{fmt}"
    done = mpsdproxy("report", str(hostile_recording.record), "--format", fmt, "-o", str(out),
                     cwd=tmp_path)
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr
    text = out.read_text(encoding="utf-8")  # strict UTF-8
    if fmt == "json":
        assert json.loads(text)["exchanges"] == 3
    elif fmt == "text":
        assert "3 exchanges" in text


def test_diff_reads_hostile_bytes(hostile_recording: Process, tmp_path: Path) -> None:
    path = str(hostile_recording.record)
    done = mpsdproxy("diff", path, path, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("fmt", ["har", "mitm", "saz"])
def test_every_export_reads_hostile_bytes(hostile_recording: Process, tmp_path: Path,
                                          fmt: str) -> None:
    out = tmp_path / f"export.{fmt}"
    done = mpsdproxy("export", str(hostile_recording.record), "--format", fmt, "-o", str(out),
                     cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    back = tmp_path / f"back-{fmt}.jsonl"
    done = mpsdproxy("import", str(out), "-o", str(back), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(read_records(back)) == 3


def test_resend_reads_hostile_bytes(hostile_recording: Process, launch: Launcher,
                                    tmp_path: Path) -> None:
    standin = launch.standin()
    out = tmp_path / "resent.jsonl"
    done = mpsdproxy("resend", str(hostile_recording.record), "--to", standin.url,
                     "--record", str(out), cwd=tmp_path)
    assert "Traceback" not in done.stderr, done.stderr
    assert len(read_records(out)) == 3
