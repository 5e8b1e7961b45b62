"""End to end: the verdicts pass a title that behaves as the client library does, and fail one
that breaks one of its rules.

The title is `library_client.LibraryClient` (its rules are written down there,
from the library's source); the proxy runs the shipped scenarios in front of
the stand-in, on real sockets, and `mpsdproxy report --fail-on fail` judges the
recording as CI would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import Launcher
from library_client import LibraryClient
from scenario_kit import SHIPPED
from scenario_kit import me

from mpsdproxy import title

PLAYER = "2533274800000001"
#: The first write with an ETag to each lobby gets a forced 412.
FORCED_412 = SHIPPED / "stale-etag-on-join.yaml"


def report(record: Path) -> tuple[int, dict[str, Any]]:
    """`mpsdproxy report --fail-on fail --format json` on a recording: exit code and report."""
    done = subprocess.run([sys.executable, "-m", "mpsdproxy", "report", str(record),
                           "--fail-on", "fail", "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def verdicts(data: dict[str, Any], rule: str) -> list[str]:
    return [v["status"] for v in data["verdicts"]["items"] if v["rule"] == rule]


def lifecycle(client: LibraryClient, name: str) -> None:
    """Create a lobby, read it, write it twice with its ETag, and hand it out."""
    path = title.session_path(name)
    client.write_session(path, me(client.user))
    client.read_session(path)
    client.write_session(path, {"properties": {"custom": {"map": "dunes"}}})
    client.write_session(path, {"properties": {"custom": {"mode": "ffa"}}})
    client.create_handle(title.SCID, "LobbySession", name)
    client.read_session(path)


def run_title(launch: Launcher, scenario: Path, **behaviour: bool) -> Path:
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--quiet",
                         "--scenario", str(scenario))
    client = LibraryClient(proxy.url, PLAYER, **behaviour)
    try:
        lifecycle(client, "lobby-a")
    finally:
        client.close()
    proxy.stop()
    assert proxy.record is not None
    return proxy.record


def test_a_title_that_adopts_the_412_passes(launch: Launcher) -> None:
    code, data = report(run_title(launch, FORCED_412))
    assert verdicts(data, "412-handled") == ["pass"]
    assert code == 0


def test_a_title_that_resends_the_stale_etag_fails(launch: Launcher) -> None:
    code, data = report(run_title(launch, FORCED_412, blind_resend=True))
    assert "fail" in verdicts(data, "412-handled")
    assert code == 1


def test_the_shipped_scenarios_pass_a_title_that_behaves_as_the_library(
        launch: Launcher) -> None:
    judged = {}
    for path in sorted(SHIPPED.glob("*.yaml")):
        code, data = report(run_title(launch, path))
        failed = [v for v in data["verdicts"]["items"] if v["status"] == "fail"]
        assert (code, failed) == (0, []), path.name
        judged[path.stem] = data
    # The faults the lifecycle meets were judged, not merely absent.
    assert "pass" in verdicts(judged["retry-after-drill"], "retry-after")
    assert "pass" in verdicts(judged["stale-etag-on-join"], "412-handled")


def test_an_early_retry_of_the_same_api_fails_retry_after(launch: Launcher) -> None:
    code, data = report(run_title(launch, SHIPPED / "retry-after-drill.yaml", early_retry=True))
    assert "fail" in verdicts(data, "retry-after")
    assert code == 1


def test_another_api_during_the_wait_passes(launch: Launcher) -> None:
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--quiet",
                         "--scenario", str(SHIPPED / "retry-after-drill.yaml"))
    client = LibraryClient(proxy.url, PLAYER)
    path = title.session_path("lobby-b")
    try:
        client.write_session(path, me(PLAYER))
        # The read gets 503 with Retry-After 1; the library waits, but only for that API:
        # a write and a handle go out at once, then the read's retry after its wait.
        first = client.send_once("GET", path, None, ())  # one attempt, as the library's first
        assert first is not None and first.status_code == 503
        started = time.monotonic()
        client.write_session(path, {"properties": {"custom": {"map": "dunes"}}})
        client.create_handle(title.SCID, "LobbySession", "lobby-b")
        time.sleep(max(0.0, 2.0 - (time.monotonic() - started)))
        assert client.read_session(path) is not None
    finally:
        client.close()
    proxy.stop()
    assert proxy.record is not None
    code, data = report(proxy.record)
    assert "fail" not in verdicts(data, "retry-after")
    assert "pass" in verdicts(data, "retry-after")
    assert code == 0
