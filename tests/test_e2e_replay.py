"""End to end: record a session lifecycle through `mpsdproxy run` in front of the stand-in,
stop the stand-in, and replay the recording to the same client script over real sockets.

The replaying proxy points at a listener that only counts connections: a replay
(and an unmatched request under `error` or `emulate`) must never open one.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import Launcher
from conftest import free_port
from conftest import httpx_sender
from conftest import read_records

from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import title


def _replay_wired() -> bool:
    from mpsdproxy.addons import default_addons
    from mpsdproxy.addons.replayer import Replayer

    return any(isinstance(a, Replayer) for a in default_addons())


pytestmark = pytest.mark.skipif(
    not _replay_wired(), reason="the Replayer is not in the addon chain (addons.default_addons)")


@dataclass
class Recorded:
    path: Path
    results: list[title.Result]

    @property
    def title_results(self) -> list[title.Result]:
        return [r for r in self.results if not r.step.admin]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, confdir: Path) -> Recorded:
    """The lifecycle recorded once through the proxy in front of the stand-in, which is
    then stopped."""
    launcher = Launcher(tmp_path_factory.mktemp("record"), confdir)
    try:
        standin = launcher.standin()
        proxy = launcher.proxy("--mode", f"reverse:{standin.url}", "--quiet")
        with httpx.Client(timeout=10) as client:
            results = title.run(title.lifecycle("replayed-lobby"),
                                httpx_sender(client, proxy.url, standin.url))
    finally:
        launcher.stop_all()
    assert proxy.record is not None
    return Recorded(proxy.record, results)


class Listener:
    """A TCP port that accepts and counts connections, and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def service() -> Iterator[Listener]:
    listener = Listener()
    try:
        yield listener
    finally:
        listener.close()


def offline_sender(client: httpx.Client, base: str) -> title.Sender:
    """The title's sender, with the stand-in's admin switches dropped: it is gone, and
    the recording already holds what they caused."""
    send = httpx_sender(client, base, "http://127.0.0.1:9")

    def sender(method: str, path: str, headers: list[tuple[str, str]], body: bytes,
               admin: bool) -> tuple[int, dict[str, str], bytes]:
        if admin:
            return 200, {}, b""
        return send(method, path, headers, body, admin)

    return sender


def replay_proxy(launch: Launcher, recorded: Recorded, target: str, *options: str):
    sets = [f"mpsd_replay={recorded.path}", "mpsd_replay_ignore_host=true", *options]
    args = ["--quiet"] + [a for s in sets for a in ("--set", s)]
    if target:
        args = ["--mode", f"reverse:{target}", *args]
    return launch.proxy(*args)


def _same_answers(replayed: list[title.Result], recorded: Recorded) -> None:
    original = recorded.title_results
    mine = [r for r in replayed if not r.step.admin]
    assert [r.status for r in mine] == [r.status for r in original]
    for a, b in zip(mine, original, strict=True):
        assert a.body == b.body, a.step.says  # byte for byte
        assert a.headers.get("etag") == b.headers.get("etag"), a.step.says


def test_replay_reproduces_the_recorded_lifecycle(launch: Launcher, recorded: Recorded,
                                                  service: Listener) -> None:
    proxy = replay_proxy(launch, recorded, f"http://127.0.0.1:{service.port}")
    with httpx.Client(timeout=10) as client:
        results = title.run(title.lifecycle("replayed-lobby"), offline_sender(client, proxy.url))
    _same_answers(results, recorded)
    assert service.connections == 0
    # the replay, recorded again: every exchange says which record answered it, in order
    records = read_records(proxy.record)
    assert [r["provenance"] for r in records] == [
        {"source": "replayed", "record": n, "file": str(recorded.path)}
        for n in range(1, len(recorded.title_results) + 1)
    ]


def test_repeated_identical_requests_come_back_in_order(launch: Launcher, recorded: Recorded,
                                                        service: Listener) -> None:
    """The lifecycle reads its lobby three times with the same request (200, then 403
    without a token, then 503 in the outage); asked three times, the replay answers in
    that order, then repeats the last."""
    lobby = title.session_path("replayed-lobby")
    gets = [r for r in recorded.title_results if r.step.method == "GET" and r.step.path == lobby
            and not r.step.headers]
    assert [r.status for r in gets] == [200, 403, 503]
    proxy = replay_proxy(launch, recorded, f"http://127.0.0.1:{service.port}")
    headers = [title.CONTRACT, ("Authorization", "XBL3.0 x=alice;token-of-alice")]
    with httpx.Client(timeout=10) as client:
        answers = [client.get(proxy.url + lobby, headers=headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 403, 503, 503]
    assert [a.content for a in answers[:3]] == [r.body for r in gets]
    assert service.connections == 0


def test_regular_mode_https_replay_needs_no_network(launch: Launcher, recorded: Recorded,
                                                    confdir: Path) -> None:
    """A title aimed at the real host through the proxy (HTTPS, decrypted with the
    proxy's CA): answered from the recording, with no route to the service at all."""
    proxy = replay_proxy(launch, recorded, "")
    base = "https://sessiondirectory.xboxlive.com"
    with httpx.Client(proxy=proxy.url, verify=str(confdir / "mitmproxy-ca-cert.pem"),
                      timeout=10) as client:
        results = title.run(title.lifecycle("replayed-lobby"), offline_sender(client, base))
    _same_answers(results, recorded)


def test_unmatched_error_names_the_near_miss(launch: Launcher, recorded: Recorded,
                                             service: Listener) -> None:
    proxy = replay_proxy(launch, recorded, f"http://127.0.0.1:{service.port}",
                         "mpsd_replay_unmatched=error")
    path = title.session_path("replayed-lobby") + "/members/9"
    with httpx.Client(timeout=10) as client:
        response = client.get(proxy.url + path, headers=[title.CONTRACT])
    assert response.status_code == 502
    assert response.text.startswith("mpsdproxy replay: no recorded answer for GET ")
    assert "closest recorded request is #7" in response.text  # GET .../members/7
    assert "path (" in response.text
    assert service.connections == 0
    assert "closest recorded request is #7" in proxy.wait_output("closest recorded request")


def test_unmatched_emulate_answers_from_the_stand_in(launch: Launcher, recorded: Recorded,
                                                     service: Listener) -> None:
    """Drift after the first read: the in-process stand-in, seeded with the session as
    the title last saw it, takes the write the recording lacks."""
    proxy = replay_proxy(launch, recorded, f"http://127.0.0.1:{service.port}",
                         "mpsd_replay_unmatched=emulate")
    lobby = proxy.url + title.session_path("replayed-lobby")
    headers = [title.CONTRACT, ("Authorization", "XBL3.0 x=alice;token-of-alice"),
               ("Content-Type", "application/json; charset=utf-8")]
    with httpx.Client(timeout=10) as client:
        client.put(lobby, headers=headers, content=json.dumps(title._me("1001")))  # 201 replayed
        read = client.get(lobby, headers=headers)  # 200 replayed
        drift = client.put(lobby, headers=[*headers, ("If-Match", read.headers["etag"])],
                           content=b'{"properties":{"custom":{"mode":"e2e"}}}')
    assert read.status_code == 200
    assert drift.status_code == 200, drift.text
    document = drift.json()
    assert document["properties"]["custom"]["mode"] == "e2e"
    assert document["changeNumber"] == read.json()["changeNumber"] + 1
    assert service.connections == 0
    provenance = [r["provenance"]["source"] for r in read_records(proxy.record)]
    assert provenance == ["replayed", "replayed", "emulated"]


def test_unmatched_forward_reaches_the_service(launch: Launcher, recorded: Recorded) -> None:
    standin = launch.standin()
    proxy = replay_proxy(launch, recorded, standin.url, "mpsd_replay_unmatched=forward")
    headers = [title.CONTRACT, ("Authorization", "XBL3.0 x=alice;token-of-alice")]
    with httpx.Client(timeout=10) as client:
        response = client.get(proxy.url + title.session_path("never-recorded"), headers=headers)
    assert response.status_code == 204  # the stand-in's answer: no such session
    assert "x-xblcorrelationid" in response.headers
    (record,) = read_records(proxy.record)
    assert record["provenance"]["source"] == "forwarded"
    assert record["provenance"]["replay"] == "unmatched"


def test_faults_on_top_of_a_replay(launch: Launcher, recorded: Recorded, service: Listener,
                                   tmp_path: Path) -> None:
    """`--replay` with `--scenario`: a request-phase rule answers instead of the recorded
    answer, which the replay still counts as served; nothing reaches the service."""
    scenario = tmp_path / "on-top.yaml"
    scenario.write_text(
        "version: 1\nname: on-top\nseed: 3\nrules:\n"
        "  - name: first-read-fails\n    match: {method: GET}\n    when: {nth: 1}\n"
        "    fault: {status: 503, retry_after: 1}\n"
    )
    proxy = launch.proxy("--mode", f"reverse:http://127.0.0.1:{service.port}", "--quiet",
                         "--replay", str(recorded.path), "--scenario", str(scenario),
                         "--set", "mpsd_replay_ignore_host=true")
    lobby = title.session_path("replayed-lobby")
    headers = [title.CONTRACT, ("Authorization", "XBL3.0 x=alice;token-of-alice")]
    with httpx.Client(timeout=10) as client:
        answers = [client.get(proxy.url + lobby, headers=headers) for _ in range(2)]
    assert [a.status_code for a in answers] == [503, 403]
    assert answers[0].headers["retry-after"] == "1"
    assert service.connections == 0
    provenance = [r["provenance"] for r in read_records(proxy.record)]
    assert provenance[0]["source"] == "injected" and provenance[0]["rule"] == "first-read-fails"
    assert provenance[1]["source"] == "replayed"


def _write_bad(path: Path, spoil: str) -> None:
    """A recording of two exchanges whose second holds what no wire could carry."""
    request = model.Request("GET", "https://sessiondirectory.xboxlive.com" +
                            title.session_path("bad-lobby"), [title.CONTRACT])
    response = model.Response(200, "OK", [("Content-Type", "application/json")], b"{}")
    record = recording.to_record(model.Exchange(request, response), recording.Redactor())
    bad = json.loads(json.dumps(record))
    if spoil == "header":
        bad["response"]["headers"].append(["X-Title", "a\r\nSet-Cookie: injected=1"])
    elif spoil == "reason":
        bad["response"]["reason"] = "OK\r\n\r\n<early body>"
    else:
        bad["response"]["status"] = int(spoil)
    with recording.Writer(path) as writer:
        writer.write(record)
        writer.write(bad)


@pytest.mark.parametrize("spoil", ["header", "0", "99999", "reason"])
def test_a_recording_no_wire_could_carry_stops_run_replay(tmp_path: Path, confdir: Path,
                                                          spoil: str) -> None:
    """`mpsdproxy run --replay bad.jsonl` refuses to start, naming the file and line (the
    header line is 1, the good record 2, the bad one 3); nothing ever listens."""
    _write_bad(tmp_path / "bad.jsonl", spoil)
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "mpsdproxy", "run", "--replay", "bad.jsonl", "--listen-port",
         str(port), "--confdir", str(confdir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "bad.jsonl:3: " in output, output
    assert "Cannot read --replay file" in output
