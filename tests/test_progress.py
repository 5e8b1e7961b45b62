"""Progress on stderr for long work: import, export, report and resend show a counter on a
terminal, and nothing with --quiet or when stderr is a pipe or a file."""

from __future__ import annotations

import io
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpsdproxy.cli import base
from mpsdproxy.cli import cli

SAMPLE = Path(__file__).resolve().parent.parent / "recordings" / "sample-lobby.jsonl"


class Terminal(io.StringIO):
    """stderr as a terminal: what the command checks before drawing a counter."""

    def isatty(self) -> bool:
        return True


class Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def run(monkeypatch: pytest.MonkeyPatch, stderr: io.StringIO, *args: str) -> str:
    """Run the command as `mpsdproxy` would, with `stderr` as its stderr; what it wrote."""
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    with pytest.raises(SystemExit) as done:
        cli.main(list(args), prog_name="mpsdproxy")
    assert done.value.code in (0, 1, None), stderr.getvalue()
    return stderr.getvalue()


@pytest.fixture(autouse=True)
def every_item(monkeypatch: pytest.MonkeyPatch) -> None:
    """A counter line for every item, so a small file shows what a big one would."""
    monkeypatch.setattr(base, "PROGRESS_EVERY", 0.0)


@pytest.fixture
def big(tmp_path: Path) -> str:
    """A recording of 10 copies of the sample (220 exchanges)."""
    path = tmp_path / "big.jsonl"
    path.write_bytes(SAMPLE.read_bytes() * 10)
    return str(path)


@pytest.fixture
def dead_url() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def commands(big: str, tmp_path: Path, dead_url: str) -> dict[str, list[str]]:
    har = str(tmp_path / "big.har")
    return {
        "export": ["export", big, "--format", "har", "-o", har],
        "import": ["import", har, "-o", str(tmp_path / "back.jsonl"), "--append"],
        "report": ["report", big],
        "resend": ["resend", str(SAMPLE), "--to", dead_url, "--timeout", "1",
                   "--max-failures", "0"],
    }


@pytest.mark.parametrize("name", ["export", "import", "report", "resend"])
def test_a_counter_on_a_terminal(name: str, big: str, tmp_path: Path, dead_url: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    args = commands(big, tmp_path, dead_url)
    if name == "import":
        run(monkeypatch, Pipe(), *args["export"])
    shown = run(monkeypatch, Terminal(), *args[name])
    assert f"\r\x1b[K{name}: 1 " in shown
    counts = [int(part.split(": ", 1)[1].split()[0].replace(",", ""))
              for part in shown.split("\r\x1b[K") if part.startswith(f"{name}: ")]
    assert counts == sorted(counts) and counts[-1] >= 22
    assert "\r\x1b[K" in shown.rsplit(f"{name}: ", 1)[1]  # taken off its line at the end


@pytest.mark.parametrize("name", ["export", "import", "report", "resend"])
def test_no_counter_with_quiet_or_off_a_terminal(name: str, big: str, tmp_path: Path,
                                                 dead_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    args = commands(big, tmp_path, dead_url)
    if name == "import":
        run(monkeypatch, Pipe(), *args["export"])
    assert "\r" not in run(monkeypatch, Terminal(), *args[name], "--quiet")
    if name == "export":
        (tmp_path / "big.har").unlink()
    assert "\r" not in run(monkeypatch, Pipe(), *args[name])


def test_a_counter_waits_before_its_first_line(big: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """At the default pace a file read in well under half a second shows no counter."""
    monkeypatch.setattr(base, "PROGRESS_EVERY", 60.0)
    assert "\r" not in run(monkeypatch, Terminal(), "report", big)
