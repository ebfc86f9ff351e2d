"""Sandbox: the pod's VM and everything it holds on the host, with one owner and one teardown path.

It holds the state directory (and its lifetime lock), the cgroup lease, the launched VM and its agent, the VM watch,
the OOM stream and the rootfs slots. Its verbs are container-level (create, remove, signal a process); containerd's
bookkeeping (processes, exits, events) stays in SandboxRuntime. Every acquisition is recorded on disk before it is
made, so `delete` can release it after a shim crash (rund/runtime/cleanup.py).

Create path:  create_container → record → rootfs pin (none for a pod holder) → [first: cgroup → network → VM
              (clone|cold) → agent setup → watches] → VM memory grown for the container (vm_memory.py) → guest
              device for the image (hotplug if new) → agent CreateContainer (a CRI pod's sandbox container: a holder
              of the pod's namespaces, agent/container/holder.py). Remove gives the container's memory back; update
              resizes live.
Teardown:     stop() → agent closed → VM stopped → watches ended → cgroup released → pins released → state dir gone.
A guest that leaves a teardown call unanswered for [agent] teardown_timeout_s is declared dead (VM killed).
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Awaitable, Callable, Sequence

from rund import errors, procfs
from rund.agent import (AgentClient, AgentTimeout, FileCopy, LayeredRootfs, NetworkConfig, PathRootfs, Rootfs,
                        StdioConfig)
from rund.config import Config
from rund.hypervisor import HypervisorError
from rund.hypervisor.logtail import log_tail
from rund.hypervisor.process import ExitWatch
from rund.hypervisor.paths import VMPaths
from rund.resources.cgroups import CgroupError, CgroupLimits, InvalidCgroupPath, limits_from_oci
from rund.runtime.idle_reclaim import IdleReclaim
from rund.runtime.pod_memory import MemoryPolicy, PodMemory
from rund.runtime.pod_network import AttachedNetwork, attach_pod, inspect_pod
from rund.runtime.process import UNKNOWN_EXIT_STATUS
from rund.runtime.resource_config import rootfs_cache
from rund.runtime.rootfs import RootfsSlots, SlotLayout, owner_of
from rund.runtime.state import BUNDLE_POINTER, ContainerRecord, SandboxDir, SandboxRecord, process_start_ticks, \
    write_json_atomic
from rund.runtime.task_runtime import Mount
from rund.runtime.trace import StepTrace
from rund.runtime.vm_memory import VMMemory
from rund.runtime import vmm_cgroup
from rund.runtime.block_devices import BlockRequest, PodDisks
from rund.runtime import spares
from rund.runtime.volumes import PodShare, Volume
from rund.templates import LaunchRequest, LaunchedVM, Launcher, shape_from_config

log = logging.getLogger("rund.runtime.sandbox")

OomSink = Callable[[str], None]        # the id of a container the guest OOM-killed in
HOLDER_ROOTFS = PathRootfs("/", readonly=True)   # what a pod holder is given: it mounts nothing
TASKS_END_TIMEOUT = 10.0


@dataclass(frozen=True)
class ContainerSetup:
    """What the guest needs to create one container."""
    id: str
    bundle: str
    rootfs: tuple[Mount, ...]
    spec: dict                         # the guest's OCI spec (rund/runtime/guest_spec.py)
    files: Sequence[FileCopy]
    stdio: StdioConfig
    resources: dict | None             # the host spec's linux.resources (the first container sizes the VM's cgroup)
    hostname: str                      # the VM's, when this container starts it
    netns: str = ""                    # the pod's network namespace (CNI's), when this container starts the VM
    holder: bool = False               # a CRI pod's sandbox container: held by the agent, no rootfs, no image
    volumes: Sequence[Volume] = ()     # host directories bound into the pod's share (rund/runtime/volumes.py)
    block_devices: Sequence[BlockRequest] = ()     # host block devices hot-plugged as disks (block_devices.py)
    cgroups_path: str = ""             # a CRI pod's: the VMM's host cgroup goes there (vmm_cgroup.py)


class Sandbox:
    def __init__(self, cfg: Config, namespace: str, sandbox_id: str, shim_pid: int, on_oom: OomSink):
        self.cfg = cfg
        self.id = sandbox_id
        self.namespace = namespace
        self.dir = SandboxDir(cfg.state_dir, namespace, sandbox_id)
        self._record = SandboxRecord(namespace, sandbox_id, shim_pid)
        self._on_oom = on_oom
        self._slots = RootfsSlots(rootfs_cache(cfg))
        self._cgroup: vmm_cgroup.VmmCgroup | None = None   # the VMM's host cgroup: a pool slot or the pod's
        self._launched: LaunchedVM | None = None
        self._keeper_exit: ExitWatch | None = None      # a spare VM keeper this shim started, reaped when it ends
        self._memory: VMMemory | None = None        # the VM's size follows its containers (vm_memory.py)
        self._network: AttachedNetwork | None = None  # the pod's CNI netns, wired to the VM's NIC
        self._wiring: asyncio.Task | None = None    # a spare VM's tap moving in and being wired (_start)
        self._share = PodShare(VMPaths(self.dir.path).share)   # the pod's volumes, exported to the VM
        self._disks: PodDisks | None = None         # the pod's raw block devices, hot-plugged
        self._tasks: list[asyncio.Task] = []        # VM watch, OOM stream, pool refill: ended by stop()
        self._reclaim: asyncio.Task | None = None   # the idle VM paged out ([hypervisor] idle_reclaim_s): cancelled
        self._refilling = False
        self._stopping = False
        self.dead = False
        self.paused = False

    # ---- what callers may read ---------------------------------------------------------------------------------

    @property
    def agent(self) -> AgentClient:
        if self._launched is None or self.dead:
            raise errors.Unavailable(f"sandbox {self.id}: its VM is not running")
        return self._launched.agent

    @property
    def vmm_pid(self) -> int:
        return (self._launched.vm.pid or 0) if self._launched else 0

    def vm_cpu_ns(self) -> int | None:
        """The VM's CPU time so far (QEMU's threads), None before it runs: the trace's per-step guest cost."""
        return procfs.cpu_ns(self._launched.vm.pid) if self._launched and self._launched.vm.pid else None

    @property
    def started(self) -> bool:
        return self._launched is not None

    # ---- lifecycle ---------------------------------------------------------------------------------------------

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

    async def create_container(self, c: ContainerSetup, trace: StepTrace) -> int:
        """Create the container in the guest (the VM is started by the first); returns its init's guest pid. On
        failure this container's share is released; the caller stops the sandbox if it holds no container."""
        owner = owner_of(self.namespace, c.id)
        trace.vm_cpu = self.vm_cpu_ns
        # Recorded before acquired: `delete` after a crash releases what the records name.
        self.dir.write_container(ContainerRecord(c.id, c.bundle, owner))
        write_json_atomic(Path(c.bundle) / BUNDLE_POINTER, {
            "sandbox_dir": str(self.dir.path), "sandbox_id": self.id, "container_id": c.id,
            "config_path": self.cfg.source})
        try:
            image = None
            if not c.holder:
                with trace.step("rootfs"):
                    image = await self._slots.acquire(c.id, owner, c.rootfs, c.bundle)
            if not self.started:
                await self._start(image, c, trace)
            with trace.step("memory"):
                await self._grow_for(c)
            rootfs: Rootfs = HOLDER_ROOTFS
            if not c.holder:
                rootfs = LayeredRootfs(base_device=await self._slots.device_for(c.id), base_fstype="erofs",
                                       dax=self._launched.dax, upper_size_bytes=self.cfg.rootfs.upper_mib << 20)
            self._share.bind_container(c.id, c.volumes)
            if c.block_devices:
                await self._disks.attach(c.id, c.block_devices, self._running_vm().hotplug_disk)
            with trace.step("agent_create"):
                pid = await self.agent.create_container(c.id, c.spec, rootfs, c.stdio, c.files)
            await self._network_wired(trace)
            return pid
        except BaseException:
            await self._settle_wiring()
            self._share.unbind_container(c.id)
            await self._drop_disks(c.id)
            if self._memory is not None:
                self._memory.pod.remove(c.id)
            await self._slots.release(c.id)
            self.dir.remove_container(c.id)
            raise

    async def remove_container(self, container_id: str, in_guest: bool = True) -> None:
        """Remove the container in the guest (bounded), unpin its image, forget its record."""
        if in_guest and self._launched is not None and not self.dead:
            try:
                await self._bounded(f"removing container {container_id}", lambda timeout: self.agent.remove_container(
                    container_id, force=True, timeout=timeout))
            except errors.RundError as e:
                log.warning("container %s: removing it in the guest: %s", container_id, e)
        await self._shrink_for(container_id, in_guest)
        self._share.unbind_container(container_id)
        await self._drop_disks(container_id)
        await self._slots.release(container_id)
        self.dir.remove_container(container_id)

    async def update_container(self, container_id: str, resources: dict) -> None:
        """UpdateContainerResources: the container's cgroups in the guest, and the VM's size for a new memory
        limit (the container's limit changes first, so a smaller one is reclaimed before the VM shrinks)."""
        await self.agent.update_container(container_id, resources)
        if self._memory is not None:
            self._memory.pod.update(container_id, resources)
            await self._memory.fit()

    async def remove_process(self, container_id: str, exec_id: str) -> None:
        """Forget an exited exec in the guest (bounded)."""
        if self._launched is None or self.dead:
            return
        try:
            await self._bounded(f"removing exec {exec_id} of {container_id}",
                                lambda timeout: self.agent.remove_process(container_id, exec_id, timeout=timeout))
        except errors.RundError as e:
            log.warning("exec %s of %s: removing it in the guest: %s", exec_id, container_id, e)

    async def signal(self, container_id: str, exec_id: str, signal: int, all: bool) -> None:
        """Deliver a signal (bounded). A paused VM is resumed first: its vCPUs cannot deliver one (runc's kill
        thaws a frozen container the same way). A dead guest needs no signal: its processes exit with 255."""
        if self.dead:
            return
        if self.paused:
            log.info("sandbox %s is paused: resuming it to deliver signal %d", self.id, signal)
            try:
                await self.resume()
            except errors.Unavailable as e:
                await self.declare_dead(f"resuming it to deliver a signal failed ({e})")
                return
        await self._bounded(f"signal {signal} to {exec_id or container_id}",
                            lambda timeout: self.agent.signal_process(container_id, exec_id, signal, all,
                                                                      timeout=timeout))

    async def _bounded(self, what: str, call: Callable[[float], Awaitable[None]]) -> None:
        """An agent call on a teardown path, given [agent] teardown_timeout_s: a guest that leaves it unanswered is
        declared dead (and the call's purpose, the process gone, is then met); other errors go to the caller."""
        try:
            await call(self._teardown_timeout)
        except AgentTimeout:
            await self.declare_dead(f"{what} got no answer")

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
        await self._vm_call("pause", self._running_vm().pause)
        self.paused = True

    async def resume(self) -> None:
        await self._vm_call("resume", self._running_vm().resume)
        self.paused = False

    def refill_pool(self) -> None:
        """Top the cgroup pool up, off the start path (the first sandboxes on a host find it empty)."""
        if self._cgroup is None or self._refilling:
            return
        self._refilling = True
        self._spawn(asyncio.to_thread(self._cgroup.refill), "cgroup-refill")

    async def stop(self) -> None:
        """The one teardown path (idempotent): the VM, the watches, the cgroup, the rootfs pins, the state dir."""
        self._stopping = True
        if self._reclaim is not None:
            self._reclaim.cancel()      # it sleeps a period at a time: ended, not waited for
            await asyncio.gather(self._reclaim, return_exceptions=True)
            self._reclaim = None
        if self._launched is not None:
            await self._launched.agent.close()
            try:
                await self._launched.vm.stop(timeout=2.0)
            except HypervisorError as e:
                log.warning("sandbox %s: stopping the VM: %s", self.id, e)
        # With the agent closed and the VM gone, the watches end by themselves, and a refill is a few mkdirs.
        tasks, self._tasks = self._tasks, []
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=TASKS_END_TIMEOUT)
            for task in late:
                task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("sandbox %s: a background task failed: %s", self.id, result)
        if self._cgroup is not None:
            try:
                await asyncio.to_thread(self._cgroup.release)
            except CgroupError as e:
                log.warning("sandbox %s: releasing its %s: %s", self.id, self._cgroup.where, e)
            self._cgroup = None
        await self._slots.release_all()
        await self._settle_wiring()
        if self._network is not None:
            try:
                await self._network.detach()
            except errors.RundError as e:
                log.warning("sandbox %s: detaching its network: %s", self.id, e)
            self._network = None
        self._share.teardown()      # unmounted before the dir goes: never remove through a bind
        self.dir.remove()

    # ---- inside ------------------------------------------------------------------------------------------------

    @property
    def _teardown_timeout(self) -> float:
        return self.cfg.agent.teardown_timeout_s

    async def _start(self, image: Path | None, c: ContainerSetup, trace: StepTrace) -> None:
        """A cgroup and a VM whose agent answers, with `image` in its first rootfs slot and, given the pod's netns,
        the pod's network on its NIC."""
        shape = shape_from_config(self.cfg)
        pod_memory = PodMemory(MemoryPolicy.from_config(self.cfg.hypervisor, shape.memory_hotplug_mib,
                                                        shape.memory_preplug_mib))
        hostname, netns = c.hostname, c.netns
        with trace.step("cgroup"):   # the VM starts with its pre-plugged floor (the plan of a pod without containers)
            await self._acquire_cgroup(c, pod_memory.host_limit(pod_memory.plan().hotplug_bytes))
        templates = Path(self.cfg.templates.dir) if self.cfg.templates.enabled else None
        launcher = Launcher(shape, work_dir=Path(self.cfg.state_dir), templates_dir=templates)
        images = (image,) if image is not None else ()
        # A CRI pod's sandbox (its first container brings no image) takes a spare VM when its class keeps them.
        spare_root = self._spare_root(launcher) if image is None and self.cfg.templates.spare_vms else None
        spare = None
        if spare_root is not None:
            with trace.step("spare"):
                spare = await self._take_spare(spare_root)
        try:
            if spare is None:
                self._share.prepare()
            else:
                self._share = PodShare(self.dir.vm_paths().share)    # the spare's: prepared by its keeper
            network = NetworkConfig()
            if netns and spare is not None:
                # The guest needs only the interface's identity now; moving the spare's tap into the pod's netns
                # (~25 ms in the kernel's netns change) and wiring it run alongside the adoption and the holder's
                # creation, and are awaited before the sandbox's Create answers (_network_wired).
                with trace.step("network"):
                    network = await inspect_pod(netns)
                self._wiring = asyncio.create_task(self._wire_spare(netns, spare), name="spare-network")
            elif netns:
                with trace.step("network"):
                    self._network = await attach_pod(netns)
                network = self._network.config
            with trace.step("vm"):
                try:
                    if spare is not None:
                        qmp_fd, spare.qmp_fd = spare.qmp_fd, -1      # adopt() owns it, whatever happens
                        self._launched = launched = await launcher.adopt(
                            spare.name, self.dir.spare_vm, spare.pid, qmp_fd, hostname=hostname, network=network)
                    else:
                        self._launched = launched = await launcher.launch(LaunchRequest(
                            name=self.id[:32], dir=self.dir.path, rootfs_images=images,
                            pre_exec=self._cgroup.placement() if self._cgroup else None, hostname=hostname,
                            tap_fd=self._network.tap_fd if self._network else None, network=network))
                finally:
                    if self._network is not None:
                        self._network.close_tap()
        except BaseException:
            if spare is not None and self._launched is None:
                spares.kill(spare)
            raise
        finally:
            if spare is not None and self._wiring is None:
                spare.close()       # else the wiring closes it: its tap's netns is named by the spare's fd
        spare_plugged = spare.plugged if spare is not None else 0     # a taken spare is the VM (adopted)
        if spare_root is not None and launched.how == "clone":
            self._start_keeper(launcher, spare_root)
        if not launched.dax:
            log.info("sandbox %s: the %s machine has no DAX: container rootfs images go on read-only virtio-blk "
                     "disks and the guest keeps its own page cache of them", self.id, shape.machine.value)
        trace.label("vm", launched.how)
        for name, seconds in launched.timings.items():
            trace.add(f"vm.{name}", seconds)
        pid = launched.vm.pid or 0
        self._record = replace(self._record, qemu_pid=pid, qemu_start_ticks=process_start_ticks(pid) or 0,
                               vm=launched.how)
        self.dir.write_sandbox(self._record)
        self._slots.launched(
            SlotLayout(shape.rootfs_slots, shape.rootfs_hotplug_slots, shape.rootfs_device), images,
            launched.rootfs_devices, self._plug if shape.rootfs_hotplug_slots else None,
            taken=spare_plugged)
        if launched.how not in ("clone", "spare"):   # a clone (and a spare) got its identity with PostRestore
            with trace.step("agent_setup"):
                await self.agent.setup_sandbox(self.id, hostname=hostname, network=network)
        self._memory = VMMemory(self.id, pod_memory, launched.vm, self._bound_vmm, self._spawn)
        self._disks = PodDisks(shape.disk_hotplug_slots, shape.machine.value)
        self._spawn(self._watch_vm(), "vm-watch")
        self._spawn(self._forward_ooms(), "oom")
        if self.cfg.hypervisor.idle_reclaim_s > 0:
            reclaim = IdleReclaim(self.id, self.cfg.hypervisor.idle_reclaim_s,
                                  lambda: self._launched.vm.pid if self._launched and not self.dead else None,
                                  self.vm_cpu_ns, also_self=True)
            self._reclaim = asyncio.create_task(reclaim.run(), name=f"idle-reclaim-{self.id}")

    @staticmethod
    async def _wire_spare(netns: str, spare: spares.Spare) -> AttachedNetwork:
        try:
            return await attach_pod(netns, (spare.netns_path, spare.tap))
        finally:
            spare.close()

    async def _network_wired(self, trace: StepTrace) -> None:
        """The spare VM's tap wired (started in _start): before the sandbox's Create answers, the pod has its
        network, as with a clone."""
        wiring, self._wiring = self._wiring, None
        if wiring is not None:
            with trace.step("network_wire"):
                self._network = await wiring

    async def _settle_wiring(self) -> None:
        """A failed create or a stop: the wiring ended (its thread cannot be cancelled), its network kept for
        detaching."""
        wiring, self._wiring = self._wiring, None
        if wiring is None:
            return
        try:
            self._network = await wiring
        except Exception as e:  # noqa: BLE001 - the create's own error is the one to report
            log.warning("sandbox %s: wiring the spare VM's network: %s", self.id, e)

    def _spare_root(self, launcher: Launcher) -> Path | None:
        """Where this template's spare VM keeper lives (rund/runtime/spares.py); None without usable templates."""
        if launcher.store is None:
            return None
        try:
            return spares.root_for(Path(self.cfg.state_dir), launcher.template_key().key)
        except (errors.RundError, OSError) as e:
            log.info("sandbox %s: no spare VM (%s)", self.id, e)
            return None

    async def _take_spare(self, root: Path) -> spares.Spare | None:
        """A spare VM from the keeper of `root`, moved into this sandbox: its directory into the sandbox's dir, its
        QEMU into the VMM cgroup and into the record (so `delete` after a crash kills it). None when the keeper has
        none ready (or none runs): the sandbox clones as usual."""
        spare = await asyncio.to_thread(spares.take, root)
        if spare is None:
            return None
        try:
            os.rename(spare.dir, self.dir.spare_vm)
            self._record = replace(self._record, qemu_pid=spare.pid,
                                   qemu_start_ticks=process_start_ticks(spare.pid) or 0)
            self.dir.write_sandbox(self._record)
            if self._cgroup is not None:
                await asyncio.to_thread(self._cgroup.placement().move, spare.pid)
            spares.renice(spare.pid)
        except BaseException:
            spares.kill(spare)
            spare.close()
            raise
        log.info("sandbox %s: spare VM %s (pid %d)", self.id, spare.name, spare.pid)
        return spare

    def _start_keeper(self, launcher: Launcher, root: Path) -> None:
        """A keeper of spare VMs for this template at `root`, unless one runs (it exits by itself when unused)."""
        try:
            if spares.keeper_running(root):
                return
            keeper = spares.spawn_keeper(spares.keeper_request(self.cfg, launcher, root), root)
            self._keeper_exit = ExitWatch(keeper, asyncio.get_running_loop())   # reaped: no zombie in the shim
            log.info("sandbox %s: started the spare VM keeper of %s (pid %d)", self.id, root, keeper.pid)
        except (OSError, errors.RundError) as e:
            log.warning("sandbox %s: cannot start a spare VM keeper: %s", self.id, e)

    async def _drop_disks(self, container_id: str) -> None:
        """Unplug the block devices no other container of the pod uses (a dead VM needs nothing unplugged)."""
        if self._disks is not None and self._launched is not None and not self.dead:
            await self._disks.detach(container_id, self._launched.vm.unplug_disk)

    async def _plug(self, index: int, image: Path) -> None:
        try:
            await self._running_vm().hotplug_pmem(index, image)
        except HypervisorError as e:
            raise errors.Unavailable(f"sandbox {self.id}: adding rootfs image {image.name}: {e}") from e

    async def _acquire_cgroup(self, c: ContainerSetup, memory_bytes: int) -> None:
        # The VMM's cgroup gets the pod's CPU limits; its memory is bounded by the VM's size plus the VMM's own
        # (vm_memory.py moves the bound with the VM; the guest enforces each container's limit in its cgroups).
        # A CRI pod's sandbox container asks only for the pause process (cpu.shares 2): kubelet's pod cgroup above
        # carries the pod's CPU, so none of it is copied to the VMM's.
        oci = {} if c.holder else {k: v for k, v in (c.resources or {}).items() if k in ("cpu",)}
        limits = replace(limits_from_oci(oci), memory_limit_bytes=memory_bytes)
        try:
            placed = vmm_cgroup.pod_cgroup_path(self.cfg, c.cgroups_path)
        except InvalidCgroupPath as e:
            raise errors.InvalidArgument(f"sandbox {self.id}: linux.cgroupsPath: {e}") from None

        def record() -> None:
            self._record = replace(self._record, cgroup_leased=not placed, cgroup_path=placed)
            self.dir.write_sandbox(self._record)
        try:
            self._cgroup = await asyncio.to_thread(vmm_cgroup.acquire, self.cfg, self.id[:64], placed, limits,
                                                   record)
        except CgroupError as e:
            log.warning("sandbox %s runs without a cgroup of its own: %s", self.id, e)
            self._cgroup = None

    async def _bound_vmm(self, memory_bytes: int) -> None:
        """Set the VMM's host cgroup memory limit (the VM's memory plus the VMM's own)."""
        if self._cgroup is None:
            return
        try:
            await asyncio.to_thread(self._cgroup.update, CgroupLimits(memory_limit_bytes=memory_bytes))
        except CgroupError as e:
            log.warning("sandbox %s: bounding its VMM's memory at %d MiB: %s", self.id, memory_bytes >> 20, e)

    async def _grow_for(self, c: ContainerSetup) -> None:
        """Count what the container asks (its memory limit, else the default headroom) and grow the VM to it."""
        if self._memory is None:
            return
        annotations = c.spec.get("annotations") if isinstance(c.spec, dict) else None   # kept from the host spec
        self._memory.pod.add(c.id, c.resources, annotations)
        await self._memory.fit()

    async def _shrink_for(self, container_id: str, in_guest: bool) -> None:
        """Give back what a removed container asked, unless the pod is going away with it."""
        if self._memory is None:
            return
        self._memory.pod.remove(container_id)
        if not in_guest or self.dead or self._stopping or not self._memory.pod.asks():
            return
        try:
            await self._memory.fit()
        except errors.RundError as e:
            log.warning("sandbox %s: shrinking its memory after container %s left: %s", self.id, container_id, e)

    def _running_vm(self):
        if self._launched is None or self.dead:
            raise errors.Unavailable(f"sandbox {self.id}: its VM is not running")
        return self._launched.vm

    async def _vm_call(self, what: str, call) -> None:
        try:
            await call(timeout=self._teardown_timeout)
        except HypervisorError as e:
            raise errors.Unavailable(f"sandbox {self.id}: {what} failed: {e}") from e

    async def _watch_vm(self) -> None:
        assert self._launched is not None
        code = await self._launched.vm.wait()
        if self._stopping or self.dead:     # stopped on purpose, or already declared dead
            return
        self.dead = True
        log.error("sandbox %s: VM (pid %d) exited unexpectedly with %s: its processes exit with %d; console "
                  "tail:\n%s", self.id, self.vmm_pid, code, UNKNOWN_EXIT_STATUS,
                  log_tail(self.dir.vm_paths().console_log) or "(empty)")
        await self._launched.agent.close()     # every pending agent call now fails Unavailable

    async def _forward_ooms(self) -> None:
        while not self.dead and not self._stopping:
            try:
                container_id = await self.agent.get_oom_event()
            except errors.RundError:
                return
            self._on_oom(container_id)

    def _spawn(self, coro, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"{name}-{self.id}"))
