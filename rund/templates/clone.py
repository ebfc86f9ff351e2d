"""Start a sandbox VM as a copy-on-write clone of a template: the template's spec without kernel and initrd, RAM
mapped share=off, device state restored.

Then one PostRestore call, the first the agent gets, does the duties every clone owes (DESIGN.md): the guest clock
set from the host, the guest RNG reseeded from host entropy, the sandbox's own hostname and network identity (a clone
gets no SetupSandbox). The NIC came with the template (its MAC too, from the migration stream); its backend is the
clone's own tap, and the agent gives it the pod's MAC and addresses.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from rund import errors
from rund.agent import AgentClient, NetworkConfig
from rund.hypervisor import FileMemory, HypervisorError, QemuVM
from rund.hypervisor.paths import VMPaths
from rund.templates.shape import SandboxShape, sandbox_spec
from rund.templates.store import Template

CLONE_READY_TIMEOUT = 30.0
ENTROPY_BYTES = 64


def clone_spec(shape: SandboxShape, template: Template, name: str, directory: Path,
               rootfs_images: tuple[Path, ...], placeholder: Path, tap_fd: int | None = None):
    spec = sandbox_spec(shape, name, VMPaths(directory), rootfs_images, placeholder,
                        memory=FileMemory(template.memory, shared=False), incoming_defer=True, tap_fd=tap_fd)
    # No -kernel/-initrd: the guest is already running in the restored RAM, and loading the 50 MB kernel and the
    # initrd would cost every clone their copies in QEMU's ROM blobs (private memory) and the time to read them.
    return replace(spec, kernel=None, initrd=None, cmdline="")


async def clone_vm(shape: SandboxShape, template: Template, name: str, directory: Path,
                   rootfs_images: tuple[Path, ...], placeholder: Path, hostname: str = "",
                   pre_exec: Callable[[], None] | None = None,
                   ready_timeout: float = CLONE_READY_TIMEOUT, tap_fd: int | None = None,
                   network: NetworkConfig = NetworkConfig(), die_with_owner: bool = True
                   ) -> tuple[QemuVM, AgentClient, dict[str, float]]:
    """A running clone whose agent has answered Health and done PostRestore; stopped again on any failure."""
    t0 = time.monotonic()
    vm = QemuVM(clone_spec(shape, template, name, directory, rootfs_images, placeholder, tap_fd), shape.qemu_binary,
                die_with_owner=die_with_owner)
    agent: AgentClient | None = None
    try:
        await vm.start(pre_exec=pre_exec)
        t_exec = time.monotonic()
        await vm.restore_state(template.state)
        t_restored = time.monotonic()
        agent = await restore_handshake(vm, ready_timeout, hostname, network)
        t_ready = time.monotonic()
    except BaseException as e:
        if agent is not None:
            await agent.close()
        with contextlib.suppress(HypervisorError):
            await vm.stop(timeout=1.0)
        if isinstance(e, HypervisorError):
            raise errors.Unavailable(f"clone {name} of template {template.key}: {e}") from e
        raise
    return vm, agent, {"qemu_start": t_exec - t0, "restore": t_restored - t_exec,
                       "post_restore": t_ready - t_restored, "ready": t_ready - t0}


async def restore_handshake(vm: QemuVM, timeout: float, hostname: str, network: NetworkConfig) -> AgentClient:
    """PostRestore as the first call: the restored agent is already serving (it was saved so), its request waits
    in the channel until the guest reads it, and its answer says the agent is up; no Health round trip first."""
    agent = await AgentClient.connect_unix(str(vm.agent_address.path))
    try:
        await agent.post_restore(time.time_ns(), os.urandom(ENTROPY_BYTES), network=network, hostname=hostname,
                                 timeout=timeout)
    except BaseException as e:
        await agent.close()
        if isinstance(e, errors.RundError) and vm.returncode is not None:
            raise errors.Unavailable(f"sandbox VM exited with {vm.returncode} before its agent answered: "
                                     f"{vm.log_tail()[-500:]}") from e
        raise
    return agent
