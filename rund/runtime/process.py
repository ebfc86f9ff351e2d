"""A process of a container (its init or an exec) as the host sees it: state machine, exit status, waiters."""
from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from datetime import datetime, timezone

from rund.errors import FailedPrecondition

# Exit status when the real one cannot be known (the VM died, the agent is gone): containerd's convention.
UNKNOWN_EXIT_STATUS = 255


class Status(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"


@dataclass(frozen=True)
class Stdio:
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


@dataclass(frozen=True)
class Exit:
    status: int
    at: datetime

    @classmethod
    def now(cls, status: int) -> "Exit":
        return cls(status, datetime.now(timezone.utc))


class Process:
    """State: CREATED → RUNNING → STOPPED (a created process may also stop without running, e.g. VM death)."""

    def __init__(self, container_id: str, exec_id: str, stdio: Stdio, spec: dict | None = None):
        self.container_id = container_id
        self.exec_id = exec_id
        self.stdio = stdio
        self.spec = spec
        self.pid = 0
        self._status = Status.CREATED
        self._exit: Exit | None = None
        self._exited = asyncio.Event()

    @property
    def id(self) -> str:
        """The id containerd uses in TaskExit: the container id for init, the exec id for an exec."""
        return self.exec_id or self.container_id

    @property
    def status(self) -> Status:
        return self._status

    @property
    def exit(self) -> Exit | None:
        return self._exit

    def mark_started(self, pid: int) -> None:
        if self._status is not Status.CREATED:
            raise FailedPrecondition(f"process {self.id} is {self._status.value}, cannot start")
        self.pid = pid
        self._status = Status.RUNNING

    def mark_exited(self, exit: Exit) -> bool:
        """Record the exit once; returns False if it had already exited."""
        if self._exit is not None:
            return False
        self._exit = exit
        self._status = Status.STOPPED
        self._exited.set()
        return True

    async def wait(self) -> Exit:
        await self._exited.wait()
        assert self._exit is not None
        return self._exit
