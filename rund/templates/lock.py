"""One template build at a time across processes: an flock on <dir>/<key>.lock.

flock is released by the kernel when the holder dies, so a crashed builder never wedges the others. Waiting polls
try-locks rather than blocking a thread in flock(), so a waiter can be cancelled.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path

from rund.templates.errors import TemplateBusy

POLL = 0.1


class BuildLock:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    async def acquire(self, timeout: float) -> None:
        """Wait up to `timeout` s for the lock; TemplateBusy if another process still holds it."""
        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise TemplateBusy(f"{self.path} is held by another builder for more than {timeout:.0f} s")
            await asyncio.sleep(POLL)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)   # closing the only descriptor drops the flock

    def __enter__(self) -> "BuildLock":
        if not self.try_acquire():
            raise TemplateBusy(f"{self.path} is held by another builder")
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
