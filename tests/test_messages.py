"""Messages a new user reads: the flags they typed, the values that are valid, one line
per problem, and an example in every command's help."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mpsdproxy.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "recordings" / "sample-lobby.jsonl"


def mpsdproxy(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, in its own process (the proxy sets process-wide
    logging; a bounded wait: every case here fails before listening)."""
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "mpsdproxy", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


# --- 1. flag names, not option names ------------------------------------------------------

@pytest.mark.parametrize(("args", "flag", "option"), [
    (("--upstream", "notaurl"), "--upstream notaurl", "mpsd_upstream"),
    (("--limits", "/etc/hostname"), "--limits /etc/hostname", "mpsd_limits"),
    (("--record", "/nonexistent-dir/x.jsonl"), "--record file", "mpsd_record"),
    (("--scenario", "README.md"), "--scenario README.md", "mpsd_scenario"),
])
def test_run_errors_name_the_flag_the_user_typed(args: tuple[str, ...], flag: str,
                                                 option: str) -> None:
    done = mpsdproxy("run", "--listen-port", "0", *args)
    assert done.returncode == 2, done
    assert flag in done.stderr and option not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_an_option_set_with_set_keeps_its_name() -> None:
    done = mpsdproxy("run", "--listen-port", "0", "--set", "mpsd_upstream=notaurl")
    assert done.returncode == 2
    assert "mpsd_upstream" in done.stderr and "--upstream" not in done.stderr


# --- 2. --mode and a busy port ------------------------------------------------------------

def test_a_bad_mode_is_echoed_with_the_valid_ones() -> None:
    result = CliRunner().invoke(cli, ["run", "--mode", "garbage"])
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert "'garbage'" in line and "--mode" in line
    for mode in ("regular", "reverse:URL", "upstream:URL", "socks5", "wireguard", "local"):
        assert mode in line


def test_a_busy_port_names_listen_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = mpsdproxy("run", "--listen-port", str(port))
    assert done.returncode == 2, done
    assert done.stderr.strip().splitlines() == [
        f"Error: port {port} on 127.0.0.1 is already in use: choose another with "
        "--listen-port (0 picks a free one)"]
    assert "--mode regular@" not in done.stderr + done.stdout


@pytest.mark.parametrize(("command", "flag"), [
    (("run", "--mode", "regular@{port}"), "--mode regular@PORT"),
    (("run", "--mode", "socks5", "--listen-port", "{port}"), "--listen-port"),
    (("emulate", "--listen-port", "{port}"), "--listen-port"),
])
def test_a_busy_port_names_the_flag_that_chose_it(command: tuple[str, ...], flag: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = mpsdproxy(*(word.format(port=port) for word in command))
    assert done.returncode == 2, done
    assert done.stderr.strip().splitlines() == [
        f"Error: port {port} on 127.0.0.1 is already in use: choose another with {flag} "
        "(0 picks a free one)"]


@pytest.mark.parametrize(("args", "says"), [
    (("--listen-host", "nope.invalid"), "--listen-host nope.invalid: cannot be resolved"),
    (("--listen-host", "192.0.2.1", "--allow-remote"),
     "--listen-host 192.0.2.1: not an address of this machine"),
    (("--confdir", "/proc/no/such/dir"), "--confdir /proc/no/such/dir: "),
])
def test_where_the_proxy_cannot_listen_is_one_line_naming_the_flag(
        args: tuple[str, ...], says: str) -> None:
    done = mpsdproxy("run", "--listen-port", "0", *args)
    if "--allow-remote" in args and "no such option" in done.stderr.lower():  # not there yet
        done = mpsdproxy("run", "--listen-port", "0", *args[:2])
    assert done.returncode == 2, done
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and says in errors[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


# --- 3. resend stops on a dead target -----------------------------------------------------

def test_resend_to_a_dead_target_stops_after_three_failures(dead_port: int) -> None:
    result = CliRunner().invoke(cli, ["resend", str(SAMPLE), "--to",
                                      f"http://127.0.0.1:{dead_port}", "--timeout", "2"])
    assert result.exit_code == 1
    failures = [line for line in result.stdout.splitlines() if "failed: " in line]
    assert len(failures) == 3 and len(set(failures)) == 3
    assert result.stderr.count("ConnectionRefusedError") == 1  # the summary, only once
    summary = [line for line in result.stderr.splitlines() if "stopped after" in line]
    assert len(summary) == 1
    assert "3 connection failures in a row" in summary[0] and "19 not sent" in summary[0]


def test_resend_max_failures(dead_port: int) -> None:
    url = f"http://127.0.0.1:{dead_port}"
    result = CliRunner().invoke(cli, ["resend", str(SAMPLE), "--to", url, "--max-failures", "5"])
    assert sum("failed: " in line for line in result.stdout.splitlines()) == 5
    result = CliRunner().invoke(cli, ["resend", str(SAMPLE), "--to", url, "--max-failures", "0"])
    assert result.exit_code == 1
    assert sum("failed: " in line for line in result.stdout.splitlines()) == 22
    assert "stopped after" not in result.stderr and "ConnectionRefused" not in result.stderr


# --- 4. an example in every help ----------------------------------------------------------

def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("words", [(), *_commands(cli)], ids=lambda w: " ".join(w) or "group")
def test_every_help_has_an_example(words: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*words, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output
    assert f"mpsdproxy {' '.join(words)}".strip() in result.output.split("Example", 1)[1]


def test_run_help_says_what_run_does_now() -> None:
    result = CliRunner().invoke(cli, ["run", "--help"])
    assert "later inject" not in result.output
    assert "inject" in result.output.split("Options:")[0]
