"""The README's commands work as written: every `mpsdproxy` line in its shell blocks names a
real command and only flags that command has, and the self-contained ones run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from mpsdproxy.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(?:sh|bash)\n(.*?)```", README, re.DOTALL)


def _lines() -> list[str]:
    """Each `mpsdproxy ...` command of the shell blocks, continuation lines joined and
    comments and trailing `&` dropped."""
    out = []
    for block in BLOCKS:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip().rstrip("&").strip()
            if line.startswith("mpsdproxy "):
                out.append(line)
    return out


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
