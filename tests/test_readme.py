"""The README's commands work as written: every `mpsdproxy` line in its shell blocks names a
real command and only flags that command has, and the walkthrough runs copy-pasted.

How the README marks its code blocks (the fenced block's info string; the first word is
the language, so GitHub highlights them as usual):

- ```` ```sh tested ````: run by `test_the_walkthrough_runs`, in README order, in one
  fresh folder that looks like a clone (the checkout's code, scenarios and venv linked
  in, its own `recordings/`, its own HOME so `~/.mitmproxy` and its config.yaml are the
  test's). Ports 8080 and 8081 are mapped to free loopback ports (in the text, and for
  `run`'s default through that HOME's `~/.mitmproxy/config.yaml`). A `mpsdproxy run` or
  `mpsdproxy emulate` line is a server: started, waited for until it listens, and
  stopped (by its pid) at the end of its block, or at the end of the walkthrough when
  the line ends in `&`. Every other line must exit 0 or 1 (1 is a finding: a
  regression, a failed verdict), without a traceback. Files the walkthrough assumes the
  reader has (their own recordings and captures: `WALKTHROUGH_INPUTS`) are made from
  the shipped samples first.
- ```` ```sh manual ````: not run here (a device, another machine, an install, the test
  suite itself); its `mpsdproxy` lines are still checked for commands and flags.
- ```` ```powershell ````: Windows; not run.

Until the README carries these marks the walkthrough test skips (it runs only blocks
marked `tested`); once any block is marked, every shell block must be.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from conftest import free_port

from mpsdproxy.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README_PATH = Path(os.environ.get("MPSDPROXY_README", ROOT / "README.md"))
README = README_PATH.read_text(encoding="utf-8")
SHELLS = ("sh", "bash", "shell", "console")
MARKS = ("tested", "manual")


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, its mark, its first line number and text."""

    language: str
    mark: str
    line: int
    text: str


def blocks(readme: str) -> list[Block]:
    """Every fenced block (indented ones in lists too), dedented."""
    found = []
    fence = re.compile(r"^( *)```([^\n`]*)\n(.*?)^\1```", re.DOTALL | re.MULTILINE)
    for m in fence.finditer(readme):
        indent, info = len(m[1]), m[2].split()
        text = "\n".join(line[indent:] for line in m[3].splitlines())
        found.append(Block(info[0] if info else "", info[1] if len(info) > 1 else "",
                           readme.count("\n", 0, m.start()) + 1, text))
    return found


BLOCKS = [b for b in blocks(README) if b.language in SHELLS]


def commands(text: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _lines() -> list[str]:
    """Each `mpsdproxy ...` command of the shell blocks, trailing `&` dropped."""
    return [line.rstrip("&").strip() for block in BLOCKS for line in commands(block.text)
            if line.startswith("mpsdproxy ")]


COMMANDS = _lines()


def test_the_readme_shows_commands() -> None:
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("line", COMMANDS)
def test_each_readme_command_and_flag_exists(line: str) -> None:
    words = shlex.split(line)[1:]
    command = cli.commands.get(words[0]) if words else None
    assert isinstance(command, click.Command), f"{line}: no command {words[:1]}"
    flags = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for word in words[1:]:
        flag = word.split("=", 1)[0]
        if flag.startswith("-"):
            assert flag in flags, f"{line}: {command.name} has no {flag}"


#: README commands that need nothing running and no file the walkthrough makes first.
RUNNABLE = [line for line in COMMANDS
            if line.split()[1] == "check" or line.endswith("--help")]


@pytest.mark.parametrize("line", RUNNABLE or ["mpsdproxy check scenarios/outage.yaml"])
def test_self_contained_readme_commands_run(line: str) -> None:
    words = shlex.split(line)[1:]
    expanded = [str(p) for w in words
                for p in (sorted(ROOT.glob(w)) if "*" in w else [w])]  # the shell's glob
    done = subprocess.run([sys.executable, "-m", "mpsdproxy", *expanded], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_shell_block_is_marked() -> None:
    marked = [b for b in BLOCKS if b.mark]
    if not marked:
        pytest.skip("the README marks no block `tested` or `manual` yet")
    unmarked = [f"README.md:{b.line}" for b in BLOCKS if b.mark not in MARKS]
    assert unmarked == [], f"shell blocks without `sh tested` or `sh manual`: {unmarked}"


def test_the_walkthrough_is_most_of_the_readme() -> None:
    """The marks are not a way out: the blocks a user copies first stay tested."""
    if not any(b.mark for b in BLOCKS):
        pytest.skip("the README marks no block `tested` or `manual` yet")
    tested = [b for b in BLOCKS if b.mark == "tested"]
    assert len(tested) >= len(BLOCKS) // 2
    assert any("mpsdproxy emulate" in b.text for b in tested)
    assert any("mpsdproxy run" in b.text for b in tested)


# --------------------------------------------------------------------------------------
# The walkthrough, run


#: Files the walkthrough assumes the reader has, each made from the shipped samples:
#: name -> the mpsdproxy arguments that make it ({lobby}/{drill}: the samples), or None
#: for a plain copy of the first sample named.
WALKTHROUGH_INPUTS: dict[str, list[str] | None] = {
    "playtest.jsonl": None,
    "pass.jsonl": None,
    "playtest.saz": ["export", "{lobby}", "--format", "saz", "-o", "playtest.saz"],
    "trace.csv": ["export", "{lobby}", "--format", "csv", "-o", "trace.csv"],
}
_SAMPLES = {"playtest.jsonl": "sample-lobby.jsonl", "pass.jsonl": "sample-drill.jsonl"}
_LINKED = ("mpsdproxy", "scenarios", "addons", "pyproject.toml", "Makefile", "docs")
_SERVERS = {"run": 8080, "emulate": 8081}


def _clone_like(work: Path, confdir: Path) -> dict[str, str]:
    """A folder that looks like a fresh clone, and the environment to run in it."""
    for name in _LINKED:
        if (ROOT / name).exists():
            (work / name).symlink_to(ROOT / name)
    (work / ".venv").symlink_to(ROOT / ".venv")
    shutil.copytree(ROOT / "recordings", work / "recordings")
    home = work / "home"
    (home / ".mitmproxy").mkdir(parents=True)
    for ca in confdir.glob("mitmproxy-ca*"):  # the session's CA: none generated again
        shutil.copy(ca, home / ".mitmproxy" / ca.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPSDPROXY")}
    bin_dir = str(ROOT / ".venv" / ("Scripts" if os.name == "nt" else "bin"))
    env.update(HOME=str(home), PATH=bin_dir + os.pathsep + env.get("PATH", ""),
               PYTHONUNBUFFERED="1")
    return env


def _make_inputs(work: Path, env: dict[str, str]) -> None:
    samples = {"lobby": str(work / "recordings" / "sample-lobby.jsonl"),
               "drill": str(work / "recordings" / "sample-drill.jsonl")}
    for name, args in WALKTHROUGH_INPUTS.items():
        if args is None:
            shutil.copy(work / "recordings" / _SAMPLES[name], work / name)
            continue
        done = subprocess.run([sys.executable, "-m", "mpsdproxy",
                               *(a.format(**samples) for a in args)],
                              cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


def _server_port(words: list[str], defaults: dict[str, str]) -> int | None:
    """The port a `mpsdproxy run`/`emulate` line listens on (None: not a server)."""
    if len(words) < 2 or words[0] != "mpsdproxy" or words[1] not in _SERVERS:
        return None
    port = int(defaults[str(_SERVERS[words[1]])])
    for flag, value in zip(words, words[1:], strict=False):
        if flag == "--listen-port":
            port = int(value)
        elif flag == "--mode" and re.search(r"@(?:[^@]*:)?(\d+)$", value):
            port = int(value.rpartition(":")[2])
    return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited {proc.returncode} before listening:\n"
                        f"{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{what}: nothing listened on port {port} within 30 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class Walkthrough:
    """Runs tested blocks in order in one clone-like folder; stops what it started."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work, self.env = work, env
        self.ports = {"8080": str(free_port()), "8081": str(free_port())}
        self.background: list[subprocess.Popen[bytes]] = []
        # `run` without --listen-port listens on the mapped 8080: mitmproxy's config.yaml
        # in the walkthrough's own HOME says so (a typed --listen-port still wins).
        config = Path(env["HOME"]) / ".mitmproxy" / "config.yaml"
        config.write_text(f"listen_port: {self.ports['8080']}\n", encoding="utf-8")

    def run_block(self, block: Block) -> None:
        text = re.sub(r"\b(8080|8081)\b", lambda m: self.ports[m[1]], block.text)
        servers: list[subprocess.Popen[bytes]] = []
        try:
            for number, line in enumerate(commands(text)):
                where = f"README.md:{block.line} `{line}`"
                background = line.endswith("&")
                line = line.rstrip("&").strip()
                port = _server_port(shlex.split(line), self.ports)
                if port is None:
                    self._foreground(line, where)
                    continue
                proc = self._serve(line, port, where, block.line * 100 + number)
                (self.background if background else servers).append(proc)
        finally:
            for proc in reversed(servers):
                _stop(proc)

    def _foreground(self, line: str, where: str) -> None:
        done = subprocess.run(["bash", "-c", line], cwd=self.work, env=self.env,
                              capture_output=True, text=True, timeout=180)
        out = done.stdout + done.stderr
        assert done.returncode in (0, 1), f"{where}: exit {done.returncode}\n{out}"
        assert "Traceback" not in out, f"{where}:\n{out}"

    def _serve(self, line: str, port: int, where: str, tag: int) -> subprocess.Popen[bytes]:
        log = self.work / f"server-{tag}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=self.work, env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            _wait_listening(port, proc, log, where)
        except BaseException:
            _stop(proc)
            raise
        return proc

    def close(self) -> None:
        for proc in reversed(self.background):
            _stop(proc)


def test_the_walkthrough_runs(tmp_path: Path, confdir: Path) -> None:
    tested = [b for b in BLOCKS if b.mark == "tested"]
    if not tested:
        pytest.skip("the README marks no block `sh tested` yet")
    if shutil.which("bash") is None:
        pytest.skip("the README's shell blocks are POSIX shell; no bash here")
    work = tmp_path / "clone"
    work.mkdir()
    env = _clone_like(work, confdir)
    _make_inputs(work, env)
    walk = Walkthrough(work, env)
    try:
        for block in tested:
            walk.run_block(block)
    finally:
        walk.close()
