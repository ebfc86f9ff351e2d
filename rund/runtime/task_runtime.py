"""The domain API the shim's Task service drives: one TaskRuntime per shim process, serving one sandbox (a pod
VM) and its containers. Domain types only; the shim translates containerd's protobuf to and from these."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rund.agent.types import ContainerStats  # the guest's cgroup figures, passed through as the agent reports them
from rund.runtime.process import Exit, Status, Stdio

__all__ = ["ContainerStats", "CreateRequest", "Mount", "ProcessView", "TaskRuntime"]


@dataclass(frozen=True)
class Mount:
    """A containerd rootfs mount, as received (overlay snapshot mounts, bind mounts)."""
    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class CreateRequest:
    id: str
    bundle: str
    stdio: Stdio
    rootfs: tuple[Mount, ...] = ()
    config_path: str = ""        # runtimeoptions ConfigPath: this runtime class's config file


@dataclass(frozen=True)
class ProcessView:
    """What State reports about a process."""
    bundle: str
    pid: int
    status: Status
    stdio: Stdio
    exit: Exit | None


class TaskRuntime(Protocol):
    """Errors are rund.errors classes: NotFound for unknown ids, AlreadyExists, FailedPrecondition for wrong
    states, InvalidArgument for bad specs, Unavailable when the VM or agent is gone."""

    async def create(self, req: CreateRequest) -> int: ...
    async def start(self, container_id: str, exec_id: str) -> int: ...
    async def delete(self, container_id: str, exec_id: str) -> tuple[int, Exit | None]: ...
    async def exec(self, container_id: str, exec_id: str, stdio: Stdio, process_spec: dict) -> None: ...
    def state(self, container_id: str, exec_id: str) -> ProcessView: ...
    async def kill(self, container_id: str, exec_id: str, signal: int, all: bool) -> None: ...
    async def wait(self, container_id: str, exec_id: str) -> Exit: ...
    async def pids(self, container_id: str) -> list[tuple[int, str]]: ...
    async def pause(self, container_id: str) -> None: ...
    async def resume(self, container_id: str) -> None: ...
    async def resize_pty(self, container_id: str, exec_id: str, width: int, height: int) -> None: ...
    async def close_stdin(self, container_id: str, exec_id: str) -> None: ...
    async def update(self, container_id: str, resources: dict) -> None: ...
    async def stats(self, container_id: str) -> ContainerStats: ...
    def task_pid(self, container_id: str) -> int: ...
    def has_containers(self) -> bool: ...
    async def close(self) -> None: ...
