"""Node-wide admission for sandbox work: at most N container creations (a VM's start, a container's setup in its
guest) run at once on the node; the rest wait their turn.

A start costs ~2.8 core-seconds here (TCG), nearly all of it guest work. Fifty at once on two cores each get 1/25 of a
core, and every one of them runs into its agent call's deadline; admitted N at a time, each finishes in about its
own time and the burst in about the sum. Shims are separate processes, so the slots are files under the state dir,
each held with flock(2) by the shim using it: a shim that dies frees its slot with its file descriptors. Waiting is
bounded (ResourceExhausted after `max_wait_s`), and the wait shows in the start trace as its `admission` step.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import random
import time
from pathlib import Path
from typing import AsyncIterator

from rund.errors import ResourceExhausted

POLL_MIN_S, POLL_MAX_S = 0.02, 0.25


def slot_count(configured: int) -> int:
    """0 means one slot per host CPU."""
    return configured if configured > 0 else (os.cpu_count() or 1)


class Admission:
    def __init__(self, directory: str | Path, slots: int, max_wait_s: float):
        self.directory = Path(directory)
        self.slots = slots
        self.max_wait_s = max_wait_s

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        """Hold one slot for the duration; yields its number."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        deadline = time.monotonic() + self.max_wait_s
        poll = POLL_MIN_S
        while True:
            taken = self._try_any()
            if taken is not None:
                break
            if time.monotonic() > deadline:
                raise ResourceExhausted(f"no sandbox start slot free within {self.max_wait_s:.0f} s ({self.slots} "
                                        f"starts run at once on this node: [admission] max_starts)")
            await asyncio.sleep(poll * (0.5 + random.random()))      # jitter: waiters do not wake in lockstep
            poll = min(poll * 1.5, POLL_MAX_S)
        number, fd = taken
        try:
            yield number
        finally:
            os.close(fd)                   # the lock goes with the descriptor

    def in_use(self) -> int:
        """How many slots are held now, read from /proc/locks (taking no lock: a start is never delayed by it)."""
        inodes = set()
        for number in range(self.slots):
            try:
                st = os.stat(self.directory / f"slot-{number}")
            except FileNotFoundError:
                continue
            inodes.add(f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}")
        if not inodes:
            return 0
        with open("/proc/locks") as f:
            return sum(1 for line in f if (parts := line.split())[1:2] == ["FLOCK"] and len(parts) > 5
                       and parts[5] in inodes)

    def _try_any(self) -> tuple[int, int] | None:
        for number in random.sample(range(self.slots), self.slots):
            fd = os.open(self.directory / f"slot-{number}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                continue
            return number, fd
        return None
