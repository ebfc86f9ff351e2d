"""Work the agent puts off until no request keeps it busy.

A clone's guest has one vCPU, and the host leaves it idle for ~100-200 ms between the pod's sandbox and its first
container (containerd, the CRI plugin, memory hot-plug): work that no answer needs at once (a clone's network
identity, say) runs then instead of inside a request the host waits on. Whoever needs a job's effect calls
finish(job), which runs it at once if it has not run yet and raises its error, every time, if it failed.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from . import spans

log = logging.getLogger(__name__)
IDLE_S = 0.03       # no request for this long: the host is busy elsewhere


class Job:
    def __init__(self, name: str, fn: Callable[[], None]):
        self.name = name
        self._fn = fn
        self.done = False
        self.error: BaseException | None = None

    def run(self) -> None:
        if self.done:
            return
        self.done = True
        started = time.monotonic()
        try:
            self._fn()
        except Exception as exc:  # noqa: BLE001 - kept for whoever needs the job's effect
            self.error = exc
            log.error("%s failed: %s", self.name, exc)
        spans.note(f"idle job {self.name!r}", started)


class IdleWork:
    def __init__(self, idle_s: float = IDLE_S):
        self._idle_s = idle_s
        self._busy = 0
        self._last = time.monotonic()
        self._jobs: list[Job] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._soon = False      # run the queued jobs once no request is busy, without the quiet time

    def enter(self) -> None:
        """A request started (long polls do not count: they wait on the guest, not the other way round)."""
        self._busy += 1
        self._last = time.monotonic()

    def leave(self) -> None:
        self._busy -= 1
        self._last = time.monotonic()
        if not self._busy and self._wake is not None:
            self._wake.set()

    def touch(self) -> None:
        """The host sent something (a request the server has not dispatched yet, say): not idle."""
        self._last = time.monotonic()

    def defer(self, name: str, fn: Callable[[], None]) -> Job:
        job = Job(name, fn)
        self._jobs.append(job)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="idle work")
        self._wake.set()
        return job

    def soon(self) -> None:
        """The host is known to be busy elsewhere for a while (a pod's sandbox just started: its first container
        comes after containerd and the CRI plugin prepared it, ~50 ms): run the queued jobs as soon as the current
        request is answered instead of after IDLE_S of quiet, which would waste most of that window (a clone's
        network job, 45-250 ms of guest time, otherwise ran into its first CreateContainer)."""
        if self._jobs:
            self._soon = True
            if self._wake is not None:
                self._wake.set()

    def finish(self, job: Job | None) -> None:
        """The job's effect is needed now: run it (and every job queued before it) unless done; raise its error."""
        if job is None:
            return
        while self._jobs and not job.done:
            self._jobs.pop(0).run()
        job.run()
        if job.error is not None:
            raise job.error

    async def _run(self) -> None:
        """Wakes only when told (a job, the last request done) or when the quiet time may be up: every wake-up of
        the loop costs the guest's one vCPU, in a TCG guest ~1 ms."""
        while True:
            if not self._jobs or self._busy:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = 0 if self._soon else self._last + self._idle_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._jobs.pop(0).run()
            self._soon = self._soon and bool(self._jobs)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
