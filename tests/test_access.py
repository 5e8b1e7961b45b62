"""Listening beyond loopback needs --allow-remote, and the stand-in's control API a token
beyond loopback: through the commands, refused before anything binds."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from conftest import Launcher
from conftest import free_port


def _mpsdproxy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mpsdproxy", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("args", "said"), [
    (["run", "--listen-host", "0.0.0.0"], "--listen-host 0.0.0.0"),
    (["run", "--mode", "regular@0.0.0.0:8080"], "--mode regular@0.0.0.0:8080"),
    (["run", "--mode", "reverse:http://127.0.0.1:8081@0.0.0.0:8080"],
     "--mode reverse:http://127.0.0.1:8081@0.0.0.0:8080"),
    (["run", "--set", "listen_host=0.0.0.0"], "--set listen_host=0.0.0.0"),
    (["run", "--set", "mode=regular@10.1.2.3:8080"], "--set mode=regular@10.1.2.3:8080"),
    (["emulate", "--listen-host", "0.0.0.0"], "--listen-host 0.0.0.0"),
])
def test_beyond_loopback_without_allow_remote_is_refused(args: list[str], said: str) -> None:
    done = _mpsdproxy(*args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert said in lines[0] and "--allow-remote" in lines[0]
    assert "Traceback" not in done.stderr


def test_loopback_in_a_mode_spec_needs_nothing(launch: Launcher) -> None:
    port = free_port()
    proxy = launch.spawn(["run", "--confdir", str(launch.confdir), "--set",
                           "listen_host=0.0.0.0", "--mode", f"regular@127.0.0.1:{port}"], port)
    assert "Reachable from other machines" not in proxy.output()


def test_allow_remote_says_who_can_reach_the_proxy(launch: Launcher) -> None:
    port = free_port()
    proxy = launch.spawn(["run", "--confdir", str(launch.confdir), "--listen-host", "0.0.0.0",
                           "--listen-port", str(port), "--allow-remote"], port)
    out = proxy.wait_output("Reachable from other machines", "Anyone on that network")
    assert f"Reachable from other machines: 0.0.0.0:{port} (every interface)" in out
    assert "Anyone on that network" in out
    proxy.stop()


def test_remote_standin_control_api_needs_the_printed_token(launch: Launcher) -> None:
    port = free_port()
    standin = launch.spawn(["emulate", "--listen-host", "0.0.0.0", "--listen-port", str(port),
                             "--allow-remote"], port)
    out = standin.wait_output("Reachable from other machines", "Control API token: ")
    assert "Reachable from other machines" in out
    token = out.split("Control API token: ")[1].split()[0]
    url = f"{standin.url}/_emulator/sessions"
    assert httpx.get(url, timeout=5).status_code == 403
    assert httpx.get(url, headers={"X-Emulator-Token": "wrong"}, timeout=5).status_code == 403
    assert httpx.get(url, headers={"X-Emulator-Token": token}, timeout=5).status_code == 200
    standin.stop()


def test_control_token_given_is_required_and_loopback_stays_open(launch: Launcher) -> None:
    guarded = launch.standin("--control-token", "s3cret")
    url = f"{guarded.url}/_emulator/reset"
    assert httpx.post(url, timeout=5).status_code == 403
    assert httpx.post(url, headers={"X-Emulator-Token": "s3cret"}, timeout=5).status_code == 200
    assert "s3cret" not in guarded.output()
    open_one = launch.standin()
    assert httpx.post(f"{open_one.url}/_emulator/reset", timeout=5).status_code == 200
