"""Stored verdicts: a sidecar file next to a recording, `<recording>.verdicts`.

Why a sidecar and not lines in the recording: a recording's lines are written one
exchange at a time by the recorder, on the per-request path, and its seq numbers
must stay contiguous; verdicts are decided later (after the answer, on a ticker,
at shutdown) by another addon. A file of their own keeps the recording format and
every reader of it unchanged, and lets `report` add verdicts to an imported file
without rewriting it. The fleet reads both side by side.

Why `.verdicts` and not `.verdicts.jsonl` (it is JSON Lines all the same): a glob
for recordings (`nightly/*.jsonl`, `recordings/sample-*.jsonl`) must not pick up
the verdicts of the recordings it names.

Format (JSON Lines): a header line, then one verdict per line as
`verdicts.Verdict.to_dict()` writes it::

    {"format": "mpsdproxy-verdicts", "version": 1, "recording": "run.jsonl",
     "source": "proxy" | "report"}
    {"rule": "412-handled", "title": "...", "status": "fail", "reason": "...",
     "records": [7, 9], "gaps_ms": [12.0], "client": "...", "resource": "...",
     "time": "2026-11-25T09:37:44.123456Z"}

Writes are buffered (flushed once a second by the proxy's ticker, and at close):
a killed proxy loses at most the last second of verdicts, never a recording line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from collections.abc import Mapping
from typing import IO
from typing import Any

from mpsdproxy import jsonbody

__all__ = ["SUFFIX", "FORMAT", "VERSION", "sidecar_of", "has_sidecar", "VerdictFile",
           "read_verdicts", "is_sidecar"]

SUFFIX = ".verdicts"
FORMAT = "mpsdproxy-verdicts"
VERSION = 1


def sidecar_of(recording: str | os.PathLike[str]) -> str:
    """`run.jsonl` -> `run.jsonl.verdicts`, beside it."""
    return os.fspath(recording) + SUFFIX


def is_sidecar(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).endswith(SUFFIX)


def has_sidecar(recording: str | os.PathLike[str]) -> bool:
    """True when the recording's verdicts were stored (a non-empty sidecar)."""
    path = sidecar_of(recording)
    return os.path.isfile(path) and os.path.getsize(path) > 0


class VerdictFile:
    """Appends verdict dicts to a recording's sidecar, buffered."""

    def __init__(self, recording: str | os.PathLike[str], source: str,
                 path: str | None = None) -> None:
        self.path = path or sidecar_of(recording)
        self.recording = os.path.basename(os.fspath(recording))
        self.source = source
        self.count = 0
        # Opened at the first verdict: a run that judged nothing leaves no file behind.
        self._file: IO[bytes] | None = None

    def write(self, verdict: Mapping[str, Any]) -> None:
        if self._file is None:
            self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()
            if self._file.tell() == 0:
                self._line({"format": FORMAT, "version": VERSION,
                            "recording": self.recording, "source": self.source})
        self._line(verdict)
        self.count += 1

    def _line(self, item: Mapping[str, Any]) -> None:
        assert self._file is not None
        self._file.write(jsonbody.dumps_line(dict(item), newline=True))

    def flush(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()

    def __enter__(self) -> VerdictFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_verdicts(recording: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The stored verdict dicts of a recording (none when it has no sidecar); a line that
    is not a verdict (a header, a cut last line) is skipped."""
    path = sidecar_of(recording)
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict) and "rule" in item and "status" in item:
                yield item
