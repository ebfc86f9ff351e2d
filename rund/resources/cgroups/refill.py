"""Keeps the pool full in the background: an owned asyncio task that creates cgroups off the event loop."""

from __future__ import annotations

import asyncio
import logging

from .errors import CgroupError
from .pool import CgroupPool

log = logging.getLogger(__name__)


class PoolRefiller:
    """`async with PoolRefiller(pool):` reconciles once, then refills whenever an acquire drained the pool.

    mkdir is the slow, kernel-serialized step the pool exists to hide, so it runs in a worker thread.
    """

    def __init__(self, pool: CgroupPool, retry_s: float = 5.0) -> None:
        self._pool = pool
        self._retry_s = retry_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> PoolRefiller:
        self._loop = asyncio.get_running_loop()
        self._pool.add_listener(self.poke)
        self._task = asyncio.create_task(self._run(), name="cgroup-pool-refill")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def poke(self) -> None:
        """Ask for a refill; safe from any thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def idle(self) -> None:
        """Wait until the pool is at its target size (for tests and start-up)."""
        while self._pool.statistics().free < self._pool.size:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _in_thread(self, fn) -> object:
        # Cancelling must not abandon a thread still creating cgroups: wait for it, then stop.
        work = asyncio.ensure_future(asyncio.to_thread(fn))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            await asyncio.wait([work])
            raise

    async def _run(self) -> None:
        try:
            await self._in_thread(self._pool.reconcile)
        except CgroupError as e:
            log.warning("cgroup pool reconcile failed: %s", e)
        while True:
            try:
                await self._in_thread(self._pool.fill)
            except CgroupError as e:
                log.warning("cgroup pool refill failed, retrying in %s s: %s", self._retry_s, e)
                await asyncio.sleep(self._retry_s)
                continue
            await self._wake.wait()
            self._wake.clear()
