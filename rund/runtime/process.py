"""A process of a container (its init or an exec) as the host sees it: its state machine, exit status, waiters.

Every state change goes through one transition table, so which verb is allowed in which state is written once:

    created --start--> running --pause--> paused --resume--> running
    created | running | paused --exit--> stopped        (a created process exits when its start fails or it is
    created | stopped --delete--> deleted                 killed before it; a paused one when its VM dies)
"""
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
    PAUSED = "paused"
    STOPPED = "stopped"
    DELETED = "deleted"


class Verb(enum.Enum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    EXIT = "exit"
    DELETE = "delete"


TRANSITIONS: dict[tuple[Status, Verb], Status] = {
    (Status.CREATED, Verb.START): Status.RUNNING,
    (Status.RUNNING, Verb.PAUSE): Status.PAUSED,
    (Status.PAUSED, Verb.RESUME): Status.RUNNING,
    (Status.CREATED, Verb.EXIT): Status.STOPPED,
    (Status.RUNNING, Verb.EXIT): Status.STOPPED,
    (Status.PAUSED, Verb.EXIT): Status.STOPPED,
    (Status.CREATED, Verb.DELETE): Status.DELETED,
    (Status.STOPPED, Verb.DELETE): Status.DELETED,
}

# What to tell the caller when a verb does not apply (containerd's runc shim words it the same way).
_HINTS = {Verb.DELETE: "; kill it first", Verb.START: "", Verb.PAUSE: "", Verb.RESUME: "", Verb.EXIT: ""}


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

    def can(self, verb: Verb) -> bool:
        return (self._status, verb) in TRANSITIONS

    def check(self, verb: Verb) -> None:
        """FailedPrecondition unless `verb` applies in the current state."""
        if not self.can(verb):
            raise FailedPrecondition(f"process {self.id} is {self._status.value}, cannot {verb.value}"
                                     f"{_HINTS[verb] if self._status is Status.RUNNING else ''}")

    def check_running(self, for_what: str) -> None:
        """FailedPrecondition unless running (an exec needs its container's init running: not paused, not gone)."""
        if self._status is not Status.RUNNING:
            raise FailedPrecondition(f"container {self.container_id} is {self._status.value}, cannot {for_what}")

    def _move(self, verb: Verb) -> None:
        self.check(verb)
        self._status = TRANSITIONS[(self._status, verb)]

    def mark_started(self, pid: int) -> None:
        self._move(Verb.START)
        self.pid = pid

    def mark_paused(self) -> None:
        if self.can(Verb.PAUSE):
            self._move(Verb.PAUSE)

    def mark_resumed(self) -> None:
        if self.can(Verb.RESUME):
            self._move(Verb.RESUME)

    def mark_exited(self, exit: Exit) -> bool:
        """Record the exit once; returns False if it had already exited."""
        if not self.can(Verb.EXIT):
            return False
        self._move(Verb.EXIT)
        self._exit = exit
        self._exited.set()
        return True

    def mark_deleted(self) -> None:
        self._move(Verb.DELETE)
        if not self._exited.is_set():      # deleted before it ran: nothing ran, nothing failed; release waiters
            self._exit = Exit.now(0)
            self._exited.set()

    async def wait(self) -> Exit:
        await self._exited.wait()
        assert self._exit is not None
        return self._exit
