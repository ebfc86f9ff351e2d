"""The surface of one running VM (QemuVM is the only driver so far)."""

from __future__ import annotations

import abc
from pathlib import Path

from rund.hypervisor.process import PreExec
from rund.hypervisor.spec import AgentAddress, VMSpec


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
