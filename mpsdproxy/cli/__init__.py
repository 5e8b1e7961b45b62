"""The `mpsdproxy` command line: assembles addons and options, holds no logic of its own.

Exit codes, the same for every command, so a CI gate can trust them:

- 0: pass;
- 1: a finding (a failed verdict under `--fail-on`, a regression, a credential
  found by `scan`, a request that got no answer);
- 2: bad input: a missing, empty or unreadable file, a file that is not a
  recording, a recording with more than `safefiles.UNREADABLE_LIMIT` (10%) of its lines
  unreadable (a cut last line, what a stopped proxy leaves, aside), an output
  that is one of the inputs, bad options. Always one line naming the file,
  never a traceback.

The commands live by job: `base` (the group and the parameter types every command
shares), `live` (run, demo, check), `standin` (emulate), `files` (report, diff, resend,
export, import, scan), `fleet` (many recordings at once, Parquet) and `conformance`.
"""

from __future__ import annotations

from mpsdproxy.cli import conformance as _conformance  # noqa: F401 - registers its command
from mpsdproxy.cli import files as _files  # noqa: F401 - registers its commands
from mpsdproxy.cli import fleet as _fleet  # noqa: F401 - registers its command
from mpsdproxy.cli import live as _live  # noqa: F401 - registers its commands
from mpsdproxy.cli import standin as _standin  # noqa: F401 - registers its command
from mpsdproxy.cli.base import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="mpsdproxy")
