"""A container in the sandbox: its init and execs, and their stdio copies."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from rund.errors import NotFound
from rund.runtime.process import Process
from rund.runtime.stdio_copy import StdioCopy


@dataclass
class Running:
    """What a started (or created) process holds on the host."""
    process: Process
    stdio: StdioCopy
    monitor: asyncio.Task | None = None
    guest_pid: int = 0                  # in the guest's root pid namespace (what Pids lists)

    async def wind_down(self) -> None:
        """Let the exit path finish (it reports the exit), then close the stdio copies."""
        if self.monitor is not None:
            await asyncio.gather(self.monitor, return_exceptions=True)
        await self.stdio.stop()


@dataclass
class Container:
    id: str
    bundle: str
    init: Running
    execs: dict[str, Running] = field(default_factory=dict)

    def get(self, exec_id: str) -> Running:
        if not exec_id:
            return self.init
        try:
            return self.execs[exec_id]
        except KeyError:
            raise NotFound(f"process {exec_id} does not exist in container {self.id}") from None

    def running_exec_monitors(self) -> list[asyncio.Task]:
        return [r.monitor for r in self.execs.values() if r.monitor is not None and not r.monitor.done()]
