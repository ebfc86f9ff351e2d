"""Domain events the runtime emits, in the order containerd relies on. The shim turns them into containerd's
protobuf events; the runtime never sees protobuf."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

from rund.runtime.process import Exit, Stdio


@dataclass(frozen=True)
class TaskCreated:
    container_id: str
    bundle: str
    stdio: Stdio
    pid: int
    rootfs: tuple = ()          # the containerd mounts, passed through as received (opaque here)


@dataclass(frozen=True)
class TaskStarted:
    container_id: str
    pid: int


@dataclass(frozen=True)
class ExecAdded:
    container_id: str
    exec_id: str


@dataclass(frozen=True)
class ExecStarted:
    container_id: str
    exec_id: str
    pid: int


@dataclass(frozen=True)
class ProcessExited:
    container_id: str
    id: str                     # container id for init, exec id for an exec
    pid: int
    exit: Exit


@dataclass(frozen=True)
class TaskDeleted:
    container_id: str
    pid: int
    exit: Exit


@dataclass(frozen=True)
class TaskOOM:
    container_id: str


@dataclass(frozen=True)
class TaskPaused:
    container_id: str


@dataclass(frozen=True)
class TaskResumed:
    container_id: str


Event = Union[TaskCreated, TaskStarted, ExecAdded, ExecStarted, ProcessExited, TaskDeleted, TaskOOM, TaskPaused,
              TaskResumed]
EventSink = Callable[[Event], None]
