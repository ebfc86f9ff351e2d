"""A process the agent started in a container (its init or an exec)."""
import asyncio
import os

from ..errors import FailedPrecondition
from .stdio import ProcessIO
from .types import ExitInfo


class Process:
    def __init__(self, container_id: str, exec_id: str, pid: int, exit_future: asyncio.Future, io: ProcessIO):
        self.container_id = container_id
        self.exec_id = exec_id
        self.pid = pid
        self.exit = exit_future
        self.io = io

    @property
    def exited(self) -> bool:
        return self.exit.done()

    async def wait(self) -> ExitInfo:
        """The exit, reported only once the host has read the output to EOF (or it was closed)."""
        info = await asyncio.shield(self.exit)
        await self.io.output_finished()
        return info

    def signal(self, signum: int) -> None:
        # Not yet reaped means the pid is still ours (at worst a zombie), so it cannot have been reused.
        if self.exited:
            raise FailedPrecondition(f"process {self.exec_id or 'init'} of {self.container_id} has exited")
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            raise FailedPrecondition(f"process {self.pid} is gone") from None
