"""Which files a fleet reads: recordings, their verdict sidecars, or Parquet exports.

PATH arguments are files, folders (every `*.jsonl` recording under them, recursively)
or globs (`nightly/**/*.jsonl`). Sidecars (`*.verdicts`) are never read as
recordings: each recording's sidecar is found beside it. A `.parquet` path, or a
folder holding Parquet files, is an export (`export --format parquet`) and is read
as one. Nothing here opens a recording beyond its first bytes: DuckDB reads them.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field

from mpsdproxy.recording import reader
from mpsdproxy.recording import verdictfile

__all__ = ["FleetError", "Sources", "find"]


class FleetError(ValueError):
    """Bad input for the fleet: one line naming the path, flag or query."""


@dataclass
class Sources:
    recordings: list[str] = field(default_factory=list)
    sidecars: list[str] = field(default_factory=list)
    parquet: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.recordings and not self.parquet


def _is_parquet(path: str) -> bool:
    return path.endswith(".parquet")


def _under(folder: str) -> list[str]:
    """Recordings and Parquet files under a folder, sorted (hidden files and folders and
    temporary `.part` files left out)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, n) for n in sorted(files)
                  if not n.startswith(".") and (n.endswith(".jsonl") or _is_parquet(n))]
    return found


def _expand(path: str) -> list[str]:
    if os.path.isdir(path):
        return _under(path)
    if os.path.exists(path):
        return [path]
    if glob.has_magic(path):
        matched = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        if not matched:
            raise FleetError(f"{path}: no file matches")
        return matched
    raise FleetError(f"{path}: no such file or folder")


def find(paths: Iterable[str]) -> Sources:
    """The recordings (with the sidecars that exist) and Parquet files `paths` name.
    FleetError names the first path that names nothing readable."""
    sources = Sources()
    seen: set[str] = set()
    for path in paths:
        for found in _expand(path):
            real = os.path.realpath(found)
            if real in seen:
                continue
            seen.add(real)
            if _is_parquet(found):
                sources.parquet.append(found)
            elif verdictfile.is_sidecar(found):
                continue  # read beside its recording
            else:
                _check_readable(found)
                sources.recordings.append(found)
                if verdictfile.has_sidecar(found):
                    sources.sidecars.append(verdictfile.sidecar_of(found))
    if sources.empty:
        raise FleetError(f"{', '.join(paths) or 'no path'}: no recording or Parquet file found")
    return sources


def _check_readable(path: str) -> None:
    """A file that is not a recording fails here, named, not deep in the engine
    (`reader.foreign_file`: a first line that is no JSON object, or a header naming
    another format, such as a sidecar or a report's JSON Lines)."""
    try:
        problem = reader.foreign_file(path)
    except OSError as e:
        raise FleetError(f"{path}: {e.strerror or e}") from None
    if problem is not None:
        raise FleetError(problem)
