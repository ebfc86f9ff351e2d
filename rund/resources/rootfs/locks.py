"""flock(2) on lock files that may be unlinked by whoever holds them exclusively (eviction, temp sweeping).

A waiter that wakes up on a lock file someone unlinked meanwhile holds a lock nobody else can see; so after every
flock we check the path still names the inode we locked, and start over if not.
"""

from __future__ import annotations

import fcntl
import os


def open_locked(path: str, exclusive: bool, blocking: bool = True, create: bool = True) -> int | None:
    """An fd holding the lock on `path`; None if not blocking and someone else holds it (or, without
    `create`, if the file is gone)."""
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    while True:
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            if create:
                raise
            return None
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)
        if not create:
            return None


def _same_file(fd: int, path: str) -> bool:
    held = os.fstat(fd)
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)


class FileLock:
    """`with FileLock(path, exclusive=...)`: a blocking lock for the duration of the block."""

    def __init__(self, path: str, exclusive: bool) -> None:
        self._path = path
        self._exclusive = exclusive
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        self._fd = open_locked(self._path, self._exclusive)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last fd of the open file releases the flock
            self._fd = None
