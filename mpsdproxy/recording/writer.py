"""Appending records to a recording: one line per exchange, written as it completes.

Each line goes to the operating system in one unbuffered write, so a killed
proxy loses at most the exchange in flight. A line is encoded before its
sequence number is taken: whatever an exchange carried, it gets the next
number and the numbers stay contiguous.

A writer holds an exclusive lock on its file (`fcntl.flock`, where the platform
has it) for as long as it is open: a second writer, in this process or another,
is refused with `LockedError` instead of both numbering from the same last seq.

Run metadata (`tags`) lives in the header line. Tags given for a file that already
has records are merged into its header by `set_tags`, which rewrites the file
through a temporary copy (one pass, renamed into place): rare, and never on the
per-exchange path.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import IO
from typing import Any

from mpsdproxy.recording import codec
from mpsdproxy.recording.reader import foreign_file
from mpsdproxy.recording.reader import iter_records
from mpsdproxy.recording.reader import read_tags

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, no refusal
    fcntl = None  # type: ignore[assignment]

__all__ = ["Writer", "LockedError", "ForeignFileError", "set_tags", "being_written"]


class LockedError(OSError):
    """Another writer holds the recording; names the file."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: another mpsdproxy process is writing this recording; "
                         "stop it or choose another file")
        self.path = path


class ForeignFileError(ValueError):
    """The file to append to exists and is no recording (a scenario, a README): records
    appended to it, or a header put in it, would change someone else's file."""

    def __init__(self, problem: str, path: str) -> None:
        super().__init__(f"{problem}; records are only added to a recording: "
                         "choose another file")
        self.path = path


class Writer:
    """Appends records as JSON lines, one write each.

    Sequence numbers continue from the last record of an existing file, so
    appending to a recording keeps them unique and contiguous. A new or empty
    file starts with the format's header line; an existing file that is plainly
    not a recording is refused (`ForeignFileError`), never appended to.
    """

    def __init__(self, path: str | os.PathLike[str],
                 tags: Mapping[str, str] | None = None) -> None:
        self.path = os.fspath(path)
        problem = foreign_file(self.path)
        if problem is not None:
            raise ForeignFileError(problem, self.path)
        if tags and os.path.exists(self.path) and os.path.getsize(self.path) \
                and read_tags(self.path) != {**read_tags(self.path), **tags}:
            set_tags(self.path, tags)  # appending under new tags: the header says them
        self._file: IO[bytes] = open(self.path, "ab", buffering=0)  # noqa: SIM115
        try:
            _lock(self._file, self.path)
        except BaseException:
            self._file.close()
            raise
        # Read only once the lock is held: the last seq cannot move under us now.
        self.seq = _last_seq(self.path)
        if self._file.tell() == 0:
            self._write_all(codec.encode_line(codec.header_line(tags)))
        elif not _ends_with_newline(self.path):
            # A killed writer left half a line: end it, or the next record would be
            # glued onto it and lost with it.
            self._write_all(b"\n")

    def write(self, record: Mapping[str, Any]) -> int:
        """Stamp the next sequence number on `record`, write it. Returns the seq."""
        line = codec.encode_line({"seq": self.seq + 1, **record})
        self._write_all(line)
        self.seq += 1
        return self.seq

    def _write_all(self, data: bytes) -> None:
        """`data` in one write as a rule; the rest of a short one is written after it."""
        written = self._file.write(data)
        if written == len(data):
            return
        view = memoryview(data)
        while written != len(view):
            if not written:
                raise OSError(f"could not write to {self.path}")
            view = view[written:]
            written = self._file.write(view)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def being_written(path: str | os.PathLike[str]) -> bool:
    """Whether a writer (a running proxy, a resend) holds the recording now: what is read
    of it is a moment of a run still going, not the run. False where there are no locks."""
    if fcntl is None:
        return False
    try:
        with open(path, "rb") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False  # missing, unreadable or on a file system without locks: not known
    return False  # closing the file let the lock go


def _lock(file: IO[bytes], path: str) -> None:
    """Take the exclusive lock without waiting; LockedError when someone has it."""
    if fcntl is None:
        return
    try:
        descriptor = file.fileno()
    except (AttributeError, io.UnsupportedOperation):
        return  # a stream with no operating-system file behind it: nothing to lock
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise LockedError(path) from None
    except OSError as e:
        # A file system without locks (some network mounts): write unlocked, as
        # before locks existed, rather than refuse to record at all.
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
            raise


def _ends_with_newline(path: str) -> bool:
    """True for an empty file or one whose last byte ends a line."""
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _last_seq(path: str) -> int:
    """The highest seq of an existing recording (0 for a new or empty file)."""
    if not os.path.exists(path):
        return 0
    last = 0
    for item in iter_records(path):
        if isinstance(item, dict):
            last = max(last, int(item.get("seq") or 0))
    return last


def set_tags(path: str | os.PathLike[str], tags: Mapping[str, str]) -> dict[str, str]:
    """Merge `tags` into a recording's header (a version 1 file gets a header), keeping
    every other line byte for byte; returns the tags the header now holds.

    Written to a temporary file beside it and renamed while the lock is held, so a
    failure leaves the recording as it was and no writer can start appending to the
    file being replaced. A writer holding the file is refused (LockedError). A symlink
    is written through: its target gets the header and the link stays a link.
    """
    path = os.path.realpath(os.fspath(path))
    merged = {**read_tags(path), **tags}
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part",
                                     dir=folder)
    try:
        with open(path, "rb") as source, os.fdopen(fd, "wb") as out:
            _lock(source, path)
            first = source.readline()
            out.write(codec.encode_line(codec.header_line(merged)))
            if not _is_header(first):
                out.write(first)
            shutil.copyfileobj(source, out, 1 << 20)
            out.flush()
            shutil.copymode(path, temporary)
            os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return merged


def _is_header(line: bytes) -> bool:
    try:
        item = json.loads(line)
    except ValueError:
        return False
    return isinstance(item, dict) and codec.is_header_line(item)
