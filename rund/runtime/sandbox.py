"""The pod's VM and the host resources it holds: its state directory, a cgroup from the pool, the launched VM.

Created once per shim by the first container; torn down when the sandbox container is deleted or the shim exits.
Every acquisition is recorded on disk before it is made, so `delete` can release it after a shim crash.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

from rund import errors
from rund.agent import AgentClient
from rund.config import Config
from rund.resources.cgroups import CgroupError, CgroupLease, limits_from_oci, open_pool
from rund.runtime.resource_config import pool_config
from rund.runtime.trace import StepTrace
from rund.runtime.process import UNKNOWN_EXIT_STATUS
from rund.runtime.state import SandboxDir, SandboxRecord, process_start_ticks
from rund.templates import LaunchRequest, LaunchedVM, Launcher, shape_from_config
from rund.hypervisor import HypervisorError
from rund.hypervisor.logtail import log_tail
from rund.hypervisor.paths import VMPaths

log = logging.getLogger("rund.runtime.sandbox")


class Sandbox:
    def __init__(self, cfg: Config, namespace: str, sandbox_id: str, shim_pid: int):
        self.cfg = cfg
        self.id = sandbox_id
        self.dir = SandboxDir(cfg.state_dir, namespace, sandbox_id)
        self._record = SandboxRecord(namespace, sandbox_id, shim_pid)
        self._pool = None
        self._lease: CgroupLease | None = None
        self._launched: LaunchedVM | None = None
        self._watch: asyncio.Task | None = None
        self._refill: asyncio.Task | None = None
        self._shape = None
        self._hotplugged = 0
        self._stopping = False
        self.dead = False

    @property
    def agent(self) -> AgentClient:
        if self._launched is None or self.dead:
            raise errors.Unavailable(f"sandbox {self.id}: its VM is not running")
        return self._launched.agent

    @property
    def vmm_pid(self) -> int:
        return (self._launched.vm.pid or 0) if self._launched else 0

    @property
    def launched(self) -> LaunchedVM:
        assert self._launched is not None
        return self._launched

    @property
    def started(self) -> bool:
        return self._launched is not None

    def claim(self) -> None:
        """Take the sandbox's state dir (and its lifetime lock) before acquiring anything recorded there."""
        self.dir.create()
        if not self.dir.lock():
            raise errors.AlreadyExists(f"sandbox {self.id} is already served by another rund shim")
        try:
            self.dir.write_sandbox(self._record)
        except BaseException:
            self.dir.remove()
            raise

    async def start(self, rootfs_images: tuple[Path, ...], resources: dict | None, hostname: str,
                    trace: StepTrace) -> None:
        """A cgroup and a VM whose agent answers. On failure, everything is released (the state dir too)."""
        try:
            with trace.step("cgroup"):
                await self._acquire_cgroup(resources)
            shape = self._shape = shape_from_config(self.cfg)
            templates = Path(self.cfg.templates.dir) if self.cfg.templates.enabled else None
            launcher = Launcher(shape, work_dir=Path(self.cfg.state_dir), templates_dir=templates)
            placement = self._lease.placement() if self._lease else None
            with trace.step("vm"):
                self._launched = await launcher.launch(LaunchRequest(
                    name=self.id[:32], dir=self.dir.path, rootfs_images=rootfs_images, pre_exec=placement,
                    hostname=hostname))
            if not self._launched.dax:
                log.info("sandbox %s: the %s machine has no DAX: container rootfs images go on read-only virtio-blk "
                         "disks and the guest keeps its own page cache of them", self.id, shape.machine.value)
            trace.label("vm", self._launched.how)
            for name, seconds in self._launched.timings.items():
                trace.add(f"vm.{name}", seconds)
            pid = self._launched.vm.pid or 0
            self._record = replace(self._record, qemu_pid=pid, qemu_start_ticks=process_start_ticks(pid) or 0)
            self.dir.write_sandbox(self._record)
            if self._launched.how != "clone":   # a clone got its hostname with PostRestore
                with trace.step("agent_setup"):
                    await self.agent.setup_sandbox(self.id, hostname=hostname)
        except BaseException:
            await self.stop()
            raise
        self._watch = asyncio.create_task(self._watch_vm(), name=f"vm-watch-{self.id}")

    async def _acquire_cgroup(self, resources: dict | None) -> None:
        try:
            self._pool = await asyncio.to_thread(open_pool, pool_config(self.cfg))
            # The VMM's cgroup gets the pod's CPU limits; memory is bounded by the VM's size (the guest enforces
            # the container's own limit in its cgroups).
            oci = {k: v for k, v in (resources or {}).items() if k in ("cpu",)}
            self._record = replace(self._record, cgroup_leased=True)
            self.dir.write_sandbox(self._record)
            self._lease = await asyncio.to_thread(self._pool.acquire, _cgroup_name(self.id), limits_from_oci(oci))
        except CgroupError as e:
            log.warning("sandbox %s runs without a cgroup of its own: %s", self.id, e)
            self._lease = None

    async def hotplug_rootfs(self, image: Path) -> str:
        """Add a rootfs image to the running VM; returns its guest device."""
        shape = self._shape
        if shape is None or self._hotplugged >= shape.rootfs_hotplug_slots:
            raise errors.ResourceExhausted(
                f"sandbox {self.id}: no free rootfs slot for another image (rootfs.slots + rootfs.hotplug_slots "
                f"= {shape.rootfs_slots + shape.rootfs_hotplug_slots if shape else 0}; the microvm machine has no "
                f"hotplug)")
        index = self._hotplugged
        try:
            await self.launched.vm.hotplug_pmem(index, image)
        except HypervisorError as e:
            raise errors.Unavailable(f"sandbox {self.id}: adding rootfs image {image.name}: {e}") from e
        self._hotplugged += 1
        return shape.rootfs_device(shape.rootfs_slots + index)

    def refill_pool(self) -> None:
        """Top the cgroup pool up, off the start path (the first sandboxes on a host find it empty)."""
        pool = self._pool
        if pool is None or self._refill is not None or pool.size == 0:
            return

        def fill() -> None:
            if pool.statistics().free < pool.size // 2:
                made = pool.fill()
                log.info("cgroup pool: created %d free cgroups", made)
        self._refill = asyncio.create_task(asyncio.to_thread(fill), name=f"cgroup-refill-{self.id}")

    async def _watch_vm(self) -> None:
        code = await self.launched.vm.wait()
        if self._stopping or self.dead:     # stopped on purpose, or already declared dead
            return
        self.dead = True
        log.error("sandbox %s: VM (pid %d) exited unexpectedly with %s: its processes exit with %d; console "
                  "tail:\n%s", self.id, self.vmm_pid, code, UNKNOWN_EXIT_STATUS,
                  log_tail(VMPaths(self.dir.path).console_log) or "(empty)")
        await self.launched.agent.close()     # every pending agent call now fails Unavailable

    async def declare_dead(self, why: str) -> None:
        """The guest stopped answering: kill its VM now, so that every process of the pod exits (with 255) and
        every pending agent call fails, instead of waiting on a guest that will never answer."""
        if self.dead or self._launched is None:
            return
        self.dead = True
        log.error("sandbox %s: %s: declaring the guest dead and killing its VM (pid %d); its processes exit "
                  "with %d", self.id, why, self.vmm_pid, UNKNOWN_EXIT_STATUS)
        self._launched.vm.kill()
        await self._launched.agent.close()

    async def pause(self) -> None:
        try:
            await self.launched.vm.pause(timeout=self.cfg.agent.teardown_timeout_s)
        except HypervisorError as e:
            raise errors.Unavailable(f"sandbox {self.id}: pause failed: {e}") from e

    async def resume(self) -> None:
        try:
            await self.launched.vm.resume(timeout=self.cfg.agent.teardown_timeout_s)
        except HypervisorError as e:
            raise errors.Unavailable(f"sandbox {self.id}: resume failed: {e}") from e

    async def stop(self) -> None:
        """Release everything (idempotent): the VM, the cgroup, the state dir."""
        self._stopping = True
        if self._launched is not None:
            await self._launched.agent.close()
            try:
                await self._launched.vm.stop(timeout=2.0)
            except HypervisorError as e:
                log.warning("sandbox %s: stopping the VM: %s", self.id, e)
        if self._watch is not None:
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        if self._refill is not None:
            results = await asyncio.gather(self._refill, return_exceptions=True)
            if isinstance(results[0], Exception):
                log.warning("cgroup pool refill failed: %s", results[0])
        if self._lease is not None and self._pool is not None:
            try:
                await asyncio.to_thread(self._pool.release, self._lease)
            except CgroupError as e:
                log.warning("sandbox %s: releasing its cgroup: %s", self.id, e)
            self._lease = None
        self.dir.remove()


def _cgroup_name(sandbox_id: str) -> str:
    return sandbox_id[:64]

