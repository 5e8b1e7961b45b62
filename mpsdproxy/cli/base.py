"""What every command shares: the group, its exit-code rule, and the parameter types."""

from __future__ import annotations

import os
from typing import Any

import click

from mpsdproxy import safefiles

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

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
    return model.printable("; ".join(lines) or type(error).__name__)


def about(path: str, error: BaseException) -> str:
    """`error` as one line that names `path` (once)."""
    text = one_line(error)
    return text if path in text else f"{path}: {text}"


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

    Start with `mpsdproxy demo`, then put a title behind `mpsdproxy run`.
    """
