"""The sweep's state file: which cells are done, shared by every proxy run that names it.

A QA pass is several sessions, or several testers on several consoles, so the
matrix is filled by more than one proxy run. The file is small JSON::

    {"format": "mpsdproxy-sweep", "version": 1,
     "cells": {NAME: {"at": ..., "seed": ..., "run": ...}},
     "claims": {NAME: {"run": ..., "at": EPOCH}}}

written whole through a temporary file and a rename (`safefiles.atomic_output`),
and re-read before every write and whenever it changed on disk.

Two runs sharing it could both pick the same cell between reading and writing
it, so a run *claims* a cell before injecting it: under an operating-system
lock on a side file (`filelock.locked`, `STATE.lock`) it re-reads the file, and
takes the cell only when no run did it and no other run holds a fresh claim on
it, writing its claim in the same locked step. Injected, the cell moves from
`claims` to `cells`; not injected after all, the claim is given back. A claim
older than `CLAIM_TTL_S` (its run died mid-request) no longer holds. To run a
cell again, delete its entry (or the file).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from mpsdproxy import safefiles
from mpsdproxy.sweep.filelock import locked

__all__ = ["CLAIM_TTL_S", "FORMAT", "VERSION", "BadState", "SweepState"]

FORMAT = "mpsdproxy-sweep"
VERSION = 1
#: A claim is held at most this long: one request's time, hung connections included.
CLAIM_TTL_S = 300.0

Entries = dict[str, dict[str, Any]]


class BadState(ValueError):
    """A state file that is not one (one line naming the file)."""


def _entries(data: dict[str, Any], key: str, path: str) -> Entries:
    found = data.get(key, {})
    if not isinstance(found, dict) or not all(isinstance(v, dict) for v in found.values()):
        raise BadState(f"{path}:1: {key}: expected an object of cell name -> object")
    return found


def _read(path: str) -> tuple[Entries, Entries]:
    """The cells done and the claims a state file holds ({} when there is no file yet)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}, {}
    except OSError as e:
        raise BadState(f"{path}: cannot be read ({e.strerror or e})") from None
    if not text.strip():
        return {}, {}
    try:
        data = json.loads(text)
    except ValueError as e:
        raise BadState(f"{path}:{getattr(e, 'lineno', 1)}: not a sweep state file "
                       f"(not JSON: {e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadState(f"{path}:1: not a sweep state file (no \"format\": \"{FORMAT}\")")
    if not isinstance(data.get("cells"), dict):
        raise BadState(f"{path}:1: cells: expected an object of cell name -> object")
    return _entries(data, "cells", path), _entries(data, "claims", path)


def _fresh(claim: dict[str, Any], now: float) -> bool:
    at = claim.get("at")
    return isinstance(at, int | float) and now - at < CLAIM_TTL_S


class SweepState:
    """The cells done, in memory and (with a path) on disk, and the claims of other runs."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.run = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.cells: Entries = {}
        self.claims: Entries = {}  # every run's, as last read
        if path:
            self.cells, self.claims = _read(path)
        self._stamp = self._look()

    def _look(self) -> tuple[int, int] | None:
        if not self.path:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def refresh(self) -> None:
        """Take in what another run wrote since (a broken file keeps what we had)."""
        stamp = self._look()
        if stamp == self._stamp or not self.path:
            return
        self._stamp = stamp
        try:
            cells, self.claims = _read(self.path)
        except BadState:
            return
        self.cells = {**cells, **self.cells}

    def done(self, name: str) -> bool:
        """Done by any run, or claimed by another run that is still at it."""
        if name in self.cells:
            return True
        claim = self.claims.get(name)
        return claim is not None and claim.get("run") != self.run and _fresh(claim, time.time())

    def claim(self, name: str) -> bool:
        """Take a cell for this run, in one locked step; False when another run did it or
        holds it."""
        with locked(self.path):
            self._load()
            if self.done(name):
                return False
            self.claims[name] = {"run": self.run, "at": time.time()}
            self._write()
        return True

    def release(self, name: str) -> None:
        """Give a claimed cell back (it was not injected after all)."""
        with locked(self.path):
            self._load()
            if (self.claims.get(name) or {}).get("run") == self.run:
                del self.claims[name]
                self._write()

    def mark(self, name: str, **facts: Any) -> None:
        """A cell done: kept, and the file rewritten whole with every cell any run did."""
        with locked(self.path):
            self._load()
            self.cells[name] = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "run": self.run, **facts}
            self.claims.pop(name, None)
            self._write()

    def save(self) -> None:
        with locked(self.path):
            self._load()
            self._write()

    # -- under the lock ------------------------------------------------------------------

    def _load(self) -> None:
        """Merge what is on disk: its cells with ours, its claims as they are."""
        if not self.path:
            return
        try:
            cells, claims = _read(self.path)
        except BadState:
            cells, claims = {}, {}
        self.cells = {**cells, **self.cells}
        now = time.time()
        self.claims = {n: c for n, c in claims.items() if n not in self.cells and _fresh(c, now)}

    def _write(self) -> None:
        if not self.path:
            return
        document = {"format": FORMAT, "version": VERSION,
                    "cells": dict(sorted(self.cells.items())),
                    "claims": dict(sorted(self.claims.items()))}
        with safefiles.atomic_output(self.path) as f:
            json.dump(document, f, indent=1, ensure_ascii=False)
            f.write("\n")
        self._stamp = self._look()
