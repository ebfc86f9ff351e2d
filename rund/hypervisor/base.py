"""The driver interface the runtime programs against, so another VMM could plug in later."""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path

from rund.hypervisor.accel import AccelDecision
from rund.hypervisor.spec import AgentAddress, VMSpec

PreExec = Callable[[], None]


class VirtualMachine(abc.ABC):
    """One VMM process and its control channel. Nothing of it is left on the host once wait() returns."""

    spec: VMSpec

    @property
    @abc.abstractmethod
    def pid(self) -> int | None: ...

    @property
    def agent_address(self) -> AgentAddress | None:
        """What the sandbox hands the agent client; the two never import each other."""
        return self.spec.agent_address

    @abc.abstractmethod
    async def start(self, pre_exec: PreExec | None = None) -> None: ...

    @abc.abstractmethod
    async def pause(self) -> None: ...

    @abc.abstractmethod
    async def resume(self) -> None: ...

    @abc.abstractmethod
    async def stop(self, timeout: float = 5.0, powerdown: bool = False) -> int: ...

    @abc.abstractmethod
    async def wait(self) -> int: ...

    @abc.abstractmethod
    def kill(self) -> None: ...

    @abc.abstractmethod
    async def save_state(self, path: Path) -> None: ...

    @abc.abstractmethod
    async def restore_state(self, path: Path) -> None: ...


class Hypervisor(abc.ABC):
    """A VMM driver: turns a VMSpec into a VirtualMachine on this host."""

    name: str

    @abc.abstractmethod
    def accel(self) -> AccelDecision:
        """Which accelerator this host offers for standard guests."""

    @abc.abstractmethod
    def create(self, spec: VMSpec) -> VirtualMachine:
        """A VM that is not started yet."""
