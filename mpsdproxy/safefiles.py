"""Writing files without losing any: outputs that are inputs are refused, and an
output appears whole or not at all.

A command that truncates its output before reading its input empties that input
when both are the same file (`export R -o R`); one that appends to its input
reads its own writes forever (`resend R --record R`); one killed or failing half
way leaves a partial file that looks like a result. These three helpers are what
every command that writes a file uses instead of a bare `open(path, "w")`.

The `refuse_*` checks are the other half: a command that reads an empty file, or
one that is not a recording, must say so (BadFile, one line naming the file)
rather than judge nothing and pass.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable
from collections.abc import Iterator
from typing import IO
from typing import Any

__all__ = ["BadFile", "SameFileError", "UNREADABLE_LIMIT", "same_file",
           "refuse_overwrite_of_inputs", "atomic_path", "atomic_output", "refuse_empty",
           "refuse_unreadable", "refuse_unreadable_recording", "refuse_no_records",
           "refuse_not_regular", "refuse_being_written", "STDOUT"]

PathLike = str | os.PathLike[str]

#: What `-o -` names, as in every Unix tool: standard output, not a file called "-".
STDOUT = "-"

#: Over this share of unreadable lines (a cut last line aside) a recording is not
#: judged: a report or diff of what is left would pass on garbage.
UNREADABLE_LIMIT = 0.10


class BadFile(ValueError):
    """A file a command will not use; the message is one line that names it (`path`,
    when given, so a caller reporting on another file does not name that one too)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class SameFileError(BadFile):
    """An output that is one of the command's inputs; names both."""

    def __init__(self, output: PathLike, source: PathLike, *, sidecar: bool = False) -> None:
        output, source = os.fspath(output), os.fspath(source)
        if sidecar:
            what = f"holds the verdicts stored beside the input {source}"
        elif os.path.abspath(output) == os.path.abspath(source):
            what = "is also an input"
        else:
            what = f"is the same file as the input {source}"
        super().__init__(f"{output}: {what}; writing it would destroy it, choose another output")
        self.output = output
        self.source = source


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when `a` and `b` name one file: same inode when both exist (hard links,
    symlinks, `./x` and `x`), else the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_overwrite_of_inputs(outputs: Iterable[PathLike | None],
                               inputs: Iterable[PathLike]) -> None:
    """Raise SameFileError when any output is one of the inputs, or the verdicts stored
    beside one (a live run's sidecar holds the verdicts its live log showed). None
    outputs are ignored, so optional `-o` values can be passed as they come."""
    from mpsdproxy.recording import verdictfile

    sources = [os.fspath(i) for i in inputs]
    sidecars = [(source, verdictfile.sidecar_of(source)) for source in sources
                if os.path.exists(verdictfile.sidecar_of(source))]
    for output in outputs:
        if output is None or os.fspath(output) == "":
            continue
        for source in sources:
            if same_file(output, source):
                raise SameFileError(output, source)
        for source, sidecar in sidecars:
            if same_file(output, sidecar):
                raise SameFileError(output, source, sidecar=True)


@contextlib.contextmanager
def atomic_path(path: PathLike, *, append: bool = False) -> Iterator[str]:
    """A temporary path next to `path` to write; on a clean exit it replaces `path` in
    one rename, on an exception it is removed and `path` is untouched. With `append`
    it starts as a copy of `path` (when there is one).

    The temporary file lives in the same folder so the rename never crosses a file
    system. The result gets the permissions an ordinary `open` would give it (or
    those of the file it replaces). A symlink is written through: its target is
    replaced, the link stays.
    """
    path = os.fspath(path)
    if path == STDOUT or _special(path):  # a rename over it would replace the device itself
        refuse_not_regular(path, "file written whole")
    if os.path.islink(path):  # written through, as `>` would: the link stays a link
        path = os.path.realpath(path)
    refuse_being_written(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part",
                                     dir=folder)
    os.close(fd)
    try:
        if append and os.path.exists(path):
            shutil.copyfile(path, temporary)
        yield temporary
        os.chmod(temporary, _mode_for(path))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def atomic_output(path: PathLike, mode: str = "w", *,
                  encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """`path` opened for writing through `atomic_path`: it appears whole or not at all.

    `-` (`STDOUT`) is standard output. A path that is a device or a FIFO
    (`-o /dev/stdout`, a named pipe) is written straight to, as any Unix tool would:
    there is no file to replace, and a rename over it would replace the device node
    itself."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_output writes a new file: mode 'w' or 'wb', not {mode!r}")
    if os.fspath(path) == STDOUT:
        stream = sys.stdout.buffer if "b" in mode else sys.stdout
        yield stream
        stream.flush()
        return
    if _special(path):
        with open(path, mode, encoding=None if "b" in mode else encoding) as stream:
            yield stream
        return
    with atomic_path(path) as temporary, \
            open(temporary, mode, encoding=None if "b" in mode else encoding) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def refuse_being_written(path: PathLike) -> None:
    """`recording.LockedError` when a writer (a running proxy, a resend) holds `path`: a
    file renamed over it would leave that writer appending to a file no one can open,
    and every exchange it records from then on would be lost."""
    from mpsdproxy.recording import writer

    if writer.being_written(path):
        raise writer.LockedError(os.fspath(path))


def _special(path: PathLike) -> bool:
    """Whether `path` exists and is neither a regular file nor a folder (a device such as
    `/dev/stdout`, a FIFO, a socket); symlinks are followed."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def refuse_empty(path: PathLike, what: str = "recording") -> None:
    """BadFile when `path` holds nothing but whitespace or cannot be opened; `what`
    the file should have been, for the message."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 16):
                if chunk.strip():
                    return
    except OSError as e:
        raise BadFile(f"{path}: {e.strerror or e}") from None
    raise BadFile(f"{path}: empty file, not a {what}")


def refuse_unreadable(path: PathLike, records: int, unreadable: int,
                      first: tuple[int, str] | None = None) -> None:
    """BadFile when a file is not a recording (unreadable lines and no record) or
    more than UNREADABLE_LIMIT of its lines are unreadable. `first` is the first
    unreadable line and why, to name in the message."""
    lines = records + unreadable
    why = f" (line {first[0]}: {first[1]})" if first else ""
    if records == 0 and unreadable:
        raise BadFile(f"{os.fspath(path)}: not a recording: no readable record line{why}")
    if unreadable > UNREADABLE_LIMIT * lines:
        raise BadFile(f"{os.fspath(path)}: {unreadable} of {lines} lines unreadable, over "
                      f"the {UNREADABLE_LIMIT:.0%} a recording may have{why}")


def refuse_unreadable_recording(path: PathLike) -> int:
    """Read a recording through once: BadFile when it is not one or is mostly unreadable
    lines (`refuse_unreadable`, a cut last line aside); else how many HTTP exchange
    records it holds. For commands that stream the file afterwards (export, the sweep
    matrix) and so must refuse it before they write or judge anything."""
    from mpsdproxy import recording
    from mpsdproxy.recording import messages

    refuse_empty(path)
    issues: list[recording.ReadIssue] = []
    records = exchanges = 0
    try:
        for item in recording.read(path, issues=issues, messages=True):
            records += 1
            exchanges += not messages.is_message(item)
    except OSError as e:
        raise BadFile(f"{os.fspath(path)}: {e.strerror or e}") from None
    bad = [issue for issue in issues if not issue.truncated]
    refuse_unreadable(path, records, len(bad), (bad[0].line, bad[0].problem) if bad else None)
    return exchanges


def refuse_no_records(path: PathLike) -> None:
    """BadFile when a recording holds no exchange at all (reads up to the first one)."""
    from mpsdproxy import recording

    refuse_empty(path)
    first = None
    try:
        for _, item in recording.numbered(path):
            if not isinstance(item, recording.ReadIssue):
                return
            first = first or item
    except OSError as e:
        raise BadFile(f"{os.fspath(path)}: {e.strerror or e}") from None
    why = f" (line {first.line}: {first.problem})" if first else ""
    raise BadFile(f"{os.fspath(path)}: holds no exchange{why}")


def refuse_not_regular(path: PathLike, what: str = "file") -> None:
    """BadFile when `path` exists and is not a regular file (a FIFO, a device such as
    `/dev/stdout`, a socket, a folder). A path that does not exist yet passes: the
    command creates it.

    Opening a FIFO blocks until the other end opens it, so a command handed one would
    hang without a word; a device or a terminal is no file to read back. The check
    follows symlinks (`os.stat`) and never opens the path.
    """
    path = os.fspath(path)
    if not path:
        return
    if path == STDOUT:
        raise BadFile(f"{path}: names standard output here, not a file; a {what} must be "
                      "an ordinary file", path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing (created later) or unreadable: opening it says why
    if not stat.S_ISREG(mode):
        raise BadFile(f"{path}: not a regular file ({_kind(mode)}); a {what} must be "
                      "an ordinary file", path)


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISDIR, "a folder"))
    return next((name for test, name in kinds if test(mode)), "not a file")


def _mode_for(path: str) -> int:
    """The permission bits of the file being replaced, else the umask's default."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
