"""One way for tests to get a VM of the built guest, by lifecycle stage (after Firecracker's tests/conftest.py):

    vm        specified, not started: the test starts it (e.g. a guest whose PID 1 is a script that powers off)
    booted    booted cold until its agent answers Health
    template  booted, warmed by one container, saved (RAM in a tmpfs file, device state in a file), stopped
    clone     a copy-on-write clone of a template: restored, Health answered, PostRestore done

Every stage waits for the agent with rund.templates.wait.wait_for_agent, the runtime's own wait. A factory's VMs
live on an event loop in a thread of its own (QEMU dies with the thread that forked it), so one VM serves sync tests
and async tests alike, each of which runs in a fresh loop (root conftest). Tests reach a guest's agent over a
connection of their own (guest.connect()): the agent's port takes one host at a time, so the factory closes its own
once the stage is reached. Fixtures by stage: rund/tests/vm_fixtures.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from rund import errors
from rund.agent import AgentClient, LayeredRootfs, StdioConfig
from rund.hypervisor import (BlockDevice, FileMemory, HypervisorError, Machine, PmemSlot, QemuVM, VMSpec,
                             host_tsc_khz, pmem_slot_address)
from rund.hypervisor.cmdline import guest_root, kernel_cmdline
from rund.hypervisor.testing import VMDirs, leak_checked_dirs, minimal_spec
from rund.templates.wait import wait_for_agent

T = TypeVar("T")
BOOT_TIMEOUT = 240.0   # a TCG cold boot of the Python agent takes 10-30 s on a loaded 2-core host
CLONE_TIMEOUT = 30.0
PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


class BootFailed(AssertionError):
    """A stage was not reached; the message ends with the guest console's tail."""


@functools.cache
def guest_artifacts():
    """The guest build for this tree, looked up (or built) once per test process."""
    from guest.build import ensure_built
    return ensure_built()


def guest_spec(dirs: VMDirs, machine: Machine = Machine.MICROVM, *, name: str = "guest", memory_mib: int = 256,
               images: Sequence[tuple[Path, int]] = (), initcmd: str | None = None, quiet: bool = True,
               trace: bool = False, **overrides: Any) -> VMSpec:
    """The built guest running its own init (the agent), or `initcmd` as PID 1. Its OS image is the root: pmem slot 0
    with DAX on q35, the first disk on microvm; `images` (path, slot bytes) take the next pmem slots (q35 only)."""
    art = guest_artifacts()
    root, flags = guest_root(machine)
    boot: dict[str, Any] = dict(
        kernel=art.vmlinux, initrd=art.initrd, tsc_khz=host_tsc_khz(),
        cmdline=kernel_cmdline(root=root, rootflags=flags, initcmd=initcmd, quiet=quiet, trace=trace))
    if machine is Machine.Q35:
        slots = [(Path(art.rootfs), Path(art.rootfs).stat().st_size), *images]
        boot["pmem"] = tuple(PmemSlot(Path(p), size, pmem_slot_address(memory_mib, i))
                             for i, (p, size) in enumerate(slots))
    elif images:
        raise ValueError("container images go in pmem slots: use the q35 machine")
    else:
        boot["disks"] = (BlockDevice(art.rootfs, serial="root"),)
    return minimal_spec(dirs, machine, name=name, memory_mib=memory_mib, **{**boot, **overrides})


def os_rootfs(machine: Machine, upper_mib: int = 8) -> LayeredRootfs:
    """A container rootfs on the guest OS image itself (with DAX on q35)."""
    return LayeredRootfs(base_device=guest_root(machine)[0], base_fstype="erofs", dax=machine is Machine.Q35,
                         upper_size_bytes=upper_mib << 20)


@dataclass
class Guest:
    """One VM of a factory. `call` runs a coroutine on the factory's loop (where `vm` lives)."""
    spec: VMSpec
    vm: QemuVM
    factory: VMFactory
    ready_s: float | None = None   # from QEMU exec until the stage was reached (booted, clone)

    @property
    def socket(self) -> str:
        return str(self.spec.agent_socket)

    async def connect(self, timeout: float = 60.0) -> AgentClient:
        """A connection of the caller's own, in the caller's loop."""
        return await AgentClient.connect_unix(self.socket, timeout=timeout)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return self.factory.call(coro, timeout)

    def console(self, tail: int = 4000) -> str:
        try:
            return self.spec.console_log.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def run_to_exit(self, timeout: float = BOOT_TIMEOUT) -> int:
        """Start the VM and wait until QEMU exits on its own (the guest powered off); its return code."""
        return self.call(_run_to_exit(self.vm, timeout), timeout + 30)


@dataclass(frozen=True)
class SavedTemplate:
    spec: VMSpec       # the template VM's, RAM in `memory` (shared)
    memory: Path       # on tmpfs
    state: Path


class VMFactory:
    """Makes VMs by stage in `base` (template RAM in `shm`, a tmpfs dir) and stops every one of them at close()."""

    def __init__(self, base: Path, shm: Path | None = None) -> None:
        self.base, self.shm = base, shm
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vm-factory", daemon=True)
        self._thread.start()
        self._guests: list[Guest] = []

    @classmethod
    @contextmanager
    def scratch(cls, with_shm: bool = False) -> Iterator[VMFactory]:
        """A factory in fresh scratch dirs, closed on exit; fails if a QEMU child of this process is left."""
        with leak_checked_dirs(with_shm) as (base, shm):
            factory = cls(base, shm)
            try:
                yield factory
            finally:
                factory.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def dirs(self, name: str) -> VMDirs:
        (self.base / name).mkdir()
        return VMDirs(self.base / name)

    # ---- stages --------------------------------------------------------------------------------

    def vm(self, machine: Machine = Machine.MICROVM, *, name: str = "guest", **spec_kw: Any) -> Guest:
        return self._add(guest_spec(self.dirs(name), machine, name=name, **spec_kw))

    def boot(self, guest: Guest, timeout: float = BOOT_TIMEOUT) -> Guest:
        guest.ready_s = self._reach(guest, _boot(guest.vm, timeout), timeout)
        return guest

    def booted(self, machine: Machine = Machine.MICROVM, *, name: str = "guest", timeout: float = BOOT_TIMEOUT,
               **spec_kw: Any) -> Guest:
        return self.boot(self.vm(machine, name=name, **spec_kw), timeout)

    def template(self, machine: Machine = Machine.MICROVM, *, name: str = "template", warm: bool = True,
                 timeout: float = BOOT_TIMEOUT, **spec_kw: Any) -> SavedTemplate:
        """Saved as rund's template builder saves one: the host's agent connection closed right before the save."""
        assert self.shm is not None, "templates need a factory with a tmpfs dir (scratch(with_shm=True))"
        memory = self.shm / f"{name}.mem"
        guest = self.vm(machine, name=name, memory=FileMemory(memory, shared=True), **spec_kw)
        state = self.base / name / "state"
        self._reach(guest, _save(guest.vm, state, os_rootfs(machine) if warm else None, timeout), timeout)
        return SavedTemplate(guest.spec, memory, state)

    def clone(self, template: SavedTemplate, *, name: str = "clone", hostname: str | None = None,
              timeout: float = CLONE_TIMEOUT, **spec_kw: Any) -> Guest:
        """Specified as rund clones (templates/clone.py): no kernel or initrd to load, RAM mapped share=off;
        spec_kw: what a clone binds anew (a share's path, say)."""
        dirs = self.dirs(name)
        spec = replace(template.spec, name=name, runtime_dir=dirs.run, console_log=dirs.console_log,
                       qemu_log=dirs.qemu_log, memory=FileMemory(template.memory, shared=False),
                       incoming_defer=True, kernel=None, initrd=None, cmdline="", **spec_kw)
        guest = self._add(spec)
        guest.ready_s = self._reach(guest, _restore(guest.vm, template.state, hostname or name, timeout), timeout)
        return guest

    # ---- the end -------------------------------------------------------------------------------

    def close(self) -> None:
        try:
            for guest in self._guests:
                if guest.vm.pid is not None and guest.vm.returncode is None:
                    with contextlib.suppress(HypervisorError):
                        self.call(guest.vm.stop(timeout=2.0), 60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def _add(self, spec: VMSpec) -> Guest:
        guest = Guest(spec, QemuVM(spec), self)
        self._guests.append(guest)
        return guest

    def _reach(self, guest: Guest, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        try:
            return self.call(coro, timeout + 30)
        except (errors.RundError, HypervisorError, TimeoutError) as e:
            raise BootFailed(f"VM {guest.spec.name}: {e}\n--- console ---\n{guest.console()}") from e


async def _boot(vm: QemuVM, timeout: float) -> float:
    t0 = time.monotonic()
    await vm.start()
    agent = await wait_for_agent(vm, timeout)
    await agent.close()
    return time.monotonic() - t0


async def _save(vm: QemuVM, state: Path, warm: LayeredRootfs | None, timeout: float) -> None:
    await vm.start()
    try:
        agent = await wait_for_agent(vm, timeout)
        try:
            if warm is not None:
                await _warm(agent, warm)
        finally:
            await agent.close()
        await vm.save_state(state)
    finally:
        await vm.stop(timeout=2.0)


async def _warm(agent: AgentClient, rootfs: LayeredRootfs) -> None:
    """One container created, run and removed, so the template has done it once."""
    spec = {"ociVersion": "1.0.2", "hostname": "template",
            "process": {"args": ["/bin/sh", "-c", "head -c 16 /dev/urandom >/dev/null"], "cwd": "/",
                        "user": {"uid": 0, "gid": 0}, "env": [PATH_ENV]},
            "linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")]}}
    await agent.create_container("warm", spec, rootfs, StdioConfig())
    await agent.start_container("warm")
    status = await agent.wait_process("warm", timeout=120)
    await agent.remove_container("warm")
    assert status.code == 0, f"the warm-up container exited with {status.code}"


async def _restore(vm: QemuVM, state: Path, hostname: str, timeout: float) -> float:
    t0 = time.monotonic()
    await vm.start()
    await vm.restore_state(state)
    agent = await wait_for_agent(vm, timeout, poll=timeout)   # a restored agent answers at once, or never
    try:
        await agent.post_restore(time.time_ns(), os.urandom(64), hostname=hostname)
    finally:
        await agent.close()
    return time.monotonic() - t0


async def _run_to_exit(vm: QemuVM, timeout: float) -> int:
    await vm.start()
    return await asyncio.wait_for(vm.wait(), timeout)
