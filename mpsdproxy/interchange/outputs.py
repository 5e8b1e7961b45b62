"""Outputs that never cost a file: written beside the target and renamed into place.

A command that fails half way (a bad capture, a full disk, Ctrl-C) leaves the
old file as it was, or no file at all, never a partial one; and a command never
writes over one of its own inputs, however the two paths are spelt (a symlink,
a hard link, `./x` and `x`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from collections.abc import Iterator
from typing import IO

__all__ = ["refuse_same_file", "atomic_path", "atomic_output"]


def refuse_same_file(inputs: Iterable[str | os.PathLike[str]],
                     target: str | os.PathLike[str]) -> None:
    """ValueError (one line) when `target` is one of `inputs`: the same resolved path
    or the same inode."""
    for source in inputs:
        same = os.path.realpath(source) == os.path.realpath(target)
        if not same and os.path.exists(target) and os.path.exists(source):
            same = os.path.samefile(source, target)
        if same:
            raise ValueError(f"{os.fspath(target)} is the file being read: "
                             "choose another output")


def _mode_for(target: str) -> int:
    """The mode the output gets: the old file's, else what a new file would get."""
    if os.path.exists(target):
        return os.stat(target).st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, append: bool = False) -> Iterator[str]:
    """A temporary path beside `target` to write; renamed to `target` when the block
    ends without an exception, removed when it raises. With `append`, it starts as a
    copy of `target` (when there is one)."""
    target = os.fspath(target)
    directory = os.path.dirname(os.path.abspath(target))
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.",
                                     suffix=".part", dir=directory)
    os.close(fd)
    try:
        if append and os.path.exists(target):
            shutil.copyfile(target, temporary)
        yield temporary
        os.chmod(temporary, _mode_for(target))
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file to write, put in place as `target` only when the block ends
    without an exception (see `atomic_path`)."""
    with atomic_path(target) as temporary, open(temporary, "wb") as f:
        yield f
