"""What every command shares: the group, its exit-code rule, and the parameter types."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable
from typing import Any
from typing import TextIO

import click

from mpsdproxy import safefiles

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

PROGRESS_EVERY = 0.5
"""Seconds between two progress lines: often enough to see it move, rarely enough to cost
nothing on a 50k-exchange file."""

#: Where a server listens (`run`, `emulate`): loopback unless told otherwise.
LISTEN_HOST = click.option("--listen-host", default="127.0.0.1", show_default=True,
                           help="Address to listen on. Anything but loopback needs "
                                "--allow-remote.")

QUIET = click.option("--quiet", "-q", is_flag=True,
                     help="No progress counter on stderr (it is off anyway when stderr is "
                          "not a terminal).")

class BadInput(click.ClickException):
    """Bad input: exit 2 with one line naming the file."""

    exit_code = 2


class InputFile(click.ParamType):
    """An existing file; a missing one is bad input in one line (click's own check
    prints the usage text too)."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        path = os.fspath(value)
        if not os.path.exists(path):
            raise BadInput(f"{path}: no such file")
        if os.path.isdir(path):
            raise BadInput(f"{path}: is a folder, not a file")
        return path


class FormatChoice(click.Choice):
    """The interchange formats (`flowfile.FORMATS`), listed only when asked: the list
    includes mitmproxy's flow files, and loading it is not free."""

    def __init__(self) -> None:
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        from mpsdproxy.addons import flowfile

        return tuple(flowfile.FORMATS)


def one_line(error: BaseException | str) -> str:
    """An error as one printable line (several problems are joined with '; ')."""
    from mpsdproxy import model

    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    joined = "".join(f"{line} " if line.endswith(":") else f"{line}; " for line in lines)
    return model.terminal_safe(joined.rstrip("; ") or type(error).__name__)


#: A note on one item a reader or writer left out: `session 3: CONNECT`.
_SKIP = re.compile(r"(record|session|entry|line) (\d+): (.+)", re.DOTALL)
_PLURAL = {"record": "records", "session": "sessions", "entry": "entries", "line": "lines"}


def skip_lines(notes: Iterable[str]) -> list[str]:
    """The `skipped ...` lines for what a command left out, one per reason: the items
    left out for the same reason are named on one line as the report names the records
    a verdict looked at (`verdicts.engine.LookedAt`: `skipped 37 sessions 1, 3, 5..9 and
    20 more up to 102: CONNECT`), so a Fiddler capture's every tunnel does not take a
    line of its own. A note of another shape keeps its line."""
    groups: dict[tuple[str, str] | str, list[int]] = {}
    for note in notes:
        found = _SKIP.fullmatch(note)
        if found is None:
            groups.setdefault(note, [])
        else:
            groups.setdefault((found[1], found[3]), []).append(int(found[2]))
    lines = []
    for key, numbers in groups.items():
        if isinstance(key, str):
            lines.append(one_line(f"skipped {key}"))
        elif len(numbers) == 1:
            lines.append(one_line(f"skipped {key[0]} {numbers[0]}: {key[1]}"))
        else:
            from mpsdproxy.verdicts.engine import LookedAt  # only when something was left out

            named = LookedAt()
            for number in sorted(set(numbers)):
                named.add(number)
            more = f" and {named.unlisted} more up to {named.last}" if named.unlisted else ""
            lines.append(one_line(f"skipped {len(numbers)} {_PLURAL[key[0]]} "
                                  f"{named.records}{more}: {key[1]}"))
    return lines


def about(path: str, error: BaseException) -> str:
    """`error` as one line that names `path` (once); an error about another file (the
    output, say) that names it (its `path`) is left as it is."""
    text = one_line(error)
    named = getattr(error, "path", None)
    return text if path in text or (isinstance(named, str) and named in text) \
        else f"{path}: {text}"


def emit(text: str, output: str | None, what: str) -> None:
    """`text` to stdout, or written whole to `output` (never half a file) with one line on
    stderr naming `what` was written: every command's output goes out this way."""
    if not output or output == safefiles.STDOUT:
        click.echo(text, nl=False)
        return
    try:
        with safefiles.atomic_output(output, "w") as f:
            f.write(text)
    except OSError as e:
        raise BadInput(about(output, e)) from None
    click.echo(f"Wrote {what} to {output}", err=True)


class Progress:
    """A counter on stderr for long work (`import: 12,345 exchanges`), redrawn in place at
    most every PROGRESS_EVERY seconds. Silent with `quiet` or when stderr is not a terminal,
    so CI logs and pipes never see it; the first line waits PROGRESS_EVERY, so small files
    never show one."""

    def __init__(self, what: str, unit: str = "exchanges", quiet: bool = False,
                 total: int | None = None) -> None:
        self.what = what
        self.unit = unit
        self.total = total
        self.stream: TextIO | None = None if quiet else _terminal_stderr()
        self.next_at = time.monotonic() + PROGRESS_EVERY
        self.shown = False
        self.count = 0

    def __call__(self, count: int) -> None:
        """`count` items done so far (a callback for the long-running functions)."""
        self.count = count
        if self.stream is None or time.monotonic() < self.next_at:
            return
        self.next_at = time.monotonic() + PROGRESS_EVERY
        of = f"/{self.total:,}" if self.total else ""
        self.stream.write(f"\r\x1b[K{self.what}: {count:,}{of} {self.unit}")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        """Take the counter off its line, before other output or at the end."""
        if self.stream is not None and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()


def _terminal_stderr() -> TextIO | None:
    stream = sys.stderr
    try:
        return stream if stream is not None and stream.isatty() else None
    except (AttributeError, ValueError):  # a closed or odd stream: no progress
        return None


def validate_port(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if not 0 <= value <= 65535:
        raise click.BadParameter(f"should be in range [0, 65535], not {value}")
    return value


class Commands(click.Group):
    """The command group: a file a command refuses (safefiles.BadFile) is bad input."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except safefiles.BadFile as e:
            raise BadInput(one_line(e)) from None


@click.group(cls=Commands, context_settings=CONTEXT)
@click.version_option(package_name="mpsdproxy")
def cli() -> None:
    """Record, replay and fault-inject Xbox Multiplayer Session Directory (MPSD) traffic.

    Start with `mpsdproxy demo`, then put a title behind `mpsdproxy run`. Every
    command's --help has an example.

    \b
    Example:
      mpsdproxy demo --record demo.jsonl
      mpsdproxy report demo.jsonl --fail-on fail
    """
