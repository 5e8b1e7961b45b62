"""An operating-system file lock on a side file, so two proxies never claim one sweep cell.

Two proxy runs sharing a `--sweep-state` file each read it, pick a cell and
write it back; without a lock both can pick the same cell between the read
and the write. `locked(path)` holds an exclusive lock on `PATH.lock` (a file
that is never renamed, unlike the state file, which is replaced whole) for the
read-pick-write, blocking until the other run lets go. The lock is the
system's, so it goes when a process dies: a crashed run never wedges the pass.

Portable: `fcntl.lockf` where there is one (POSIX), `msvcrt.locking` on
Windows; each import is guarded, and with neither the lock is a no-op (one run
at a time still works; the state file's merge keeps the rest).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None  # type: ignore[assignment]

__all__ = ["SUFFIX", "lock_path", "locked"]

SUFFIX = ".lock"
#: How long a Windows run waits between tries (msvcrt's own blocking mode gives up after 10 s).
_WINDOWS_RETRY_S = 0.05
#: What a file system without locks answers (the state file's merge is then all there is).
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


def lock_path(path: str) -> str:
    """The side file the lock of `path` lives on."""
    return path + SUFFIX


def _acquire(fd: int) -> None:
    if fcntl is not None:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        return
    if msvcrt is not None:
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                time.sleep(_WINDOWS_RETRY_S)


def _release(fd: int) -> None:
    if fcntl is not None:
        fcntl.lockf(fd, fcntl.LOCK_UN)
    elif msvcrt is not None:
        os.lseek(fd, 0, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


@contextlib.contextmanager
def locked(path: str | None) -> Iterator[None]:
    """Hold the exclusive lock of `path` (nothing to lock when there is no path)."""
    if not path:
        yield
        return
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            _acquire(fd)
        except OSError as e:
            if e.errno not in _NO_LOCKS:
                raise
            yield  # a file system without locks (some network mounts): go on unlocked
            return
        try:
            yield
        finally:
            _release(fd)
    finally:
        os.close(fd)
