"""Launch a sandbox VM whose agent answers: clone a template when one is usable, else boot cold.

The launcher owns the VM until it returns: on any failure the VM is stopped and its directory left for the caller.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rund import errors
from rund.agent import AgentClient, NetworkConfig
from rund.hypervisor import HypervisorError, QemuVM
from rund.hypervisor.process import ExitWatch
from rund.templates.builder import shape_to_json, spawn_builder
from rund.templates.clone import CLONE_READY_TIMEOUT, clone_spec, clone_vm, restore_handshake
from rund.templates.ensure import ensure_template
from rund.templates.errors import TemplateCorrupt, TemplateMissing
from rund.templates.key import TemplateKey, template_key
from rund.templates.placeholder import ensure_placeholder
from rund.hypervisor.paths import VMPaths
from rund.templates.shape import SandboxShape, sandbox_spec
from rund.templates.store import Template, TemplateStore
from rund.templates.wait import wait_for_agent

log = logging.getLogger("rund.templates")

COLD_BOOT_TIMEOUT = 300.0     # TCG boots of the Python agent take 10-30 s on a loaded 2-core host


@dataclass(frozen=True)
class LaunchRequest:
    name: str                                  # unique among running VMs (QMP/log names)
    dir: Path                                  # the sandbox's directory (exists); the VM's files go inside
    rootfs_images: tuple[Path, ...] = ()       # each exactly shape.rootfs_slot_bytes, bound to slots 0..n-1
    pre_exec: Callable[[], None] | None = None  # runs in QEMU's child before exec (cgroup placement)
    hostname: str = ""
    tap_fd: int | None = None                  # the pod's tap for the NIC (None: unconnected)
    network: NetworkConfig = NetworkConfig()   # the pod's addresses; a clone gets them with PostRestore


@dataclass
class LaunchedVM:
    vm: QemuVM
    agent: AgentClient
    how: str                                   # "clone", "spare" (adopt) or "cold"
    rootfs_devices: tuple[str, ...]            # guest device of each rootfs image, in order
    dax: bool
    timings: dict[str, float] = field(default_factory=dict)
    template: str = ""                         # the template's key, for a clone


class Launcher:
    """launch(): a clone of the valid template for this shape, else a cold boot; a missing or corrupt template is
    rebuilt by a detached builder process after the cold boot (see builder.py), so the next sandbox clones."""

    def __init__(self, shape: SandboxShape, work_dir: Path, templates_dir: Path | None = None, *,
                 warm_templates: bool = True, build_templates: bool = True):
        self.shape = shape
        self.work_dir = work_dir                # placeholders
        self.templates_dir = templates_dir      # None: templates disabled
        self.store = TemplateStore(templates_dir) if templates_dir is not None else None
        self.warm_templates = warm_templates    # run one container in the template before saving it
        self.build_templates = build_templates  # False: never start a builder (benchmarks, tests)
        self.builder: subprocess.Popen | None = None   # the last builder started (tests wait for it)
        self.builder_exit: ExitWatch | None = None    # reaps it when it ends: a shim must not keep a zombie
        self._key: TemplateKey | None = None

    def template_key(self) -> TemplateKey:
        if self._key is None:
            assert self.store is not None
            self._key = template_key(self.shape, self.store.digests, self.warm_templates)
        return self._key

    def placeholder(self) -> Path:
        return ensure_placeholder(self.work_dir, self.shape.rootfs_slot_bytes)

    async def launch(self, req: LaunchRequest) -> LaunchedVM:
        if self.store is None:
            return await self.cold_boot(req)
        t0 = time.monotonic()
        rebuild_reason = None
        try:
            key = self.template_key()
            template = self.store.get(key.key)
        except TemplateMissing:
            rebuild_reason = "no template yet"
            log.info("sandbox %s: no template %s yet; booting cold", req.name, self._key.key if self._key else "?")
        except TemplateCorrupt as e:
            rebuild_reason = str(e)
            log.warning("sandbox %s: template unusable (%s); booting cold and rebuilding it", req.name, e)
        except (errors.RundError, OSError) as e:
            log.warning("sandbox %s: templates unavailable (%s); booting cold", req.name, e)
        else:
            self.store.mark_used(template)
            t_checked = time.monotonic()
            try:
                launched = await self.clone(req, template)
            except (errors.RundError, OSError) as e:
                log.warning("sandbox %s: clone of template %s failed (%s); booting cold", req.name, key.key, e)
            else:
                launched.timings["template_check"] = t_checked - t0
                return launched
        launched = await self.cold_boot(req)
        if rebuild_reason is not None and self.build_templates:
            self._start_builder(rebuild_reason)
        return launched

    async def clone(self, req: LaunchRequest, template: Template) -> LaunchedVM:
        vm, agent, timings = await clone_vm(self.shape, template, req.name, req.dir, req.rootfs_images,
                                            self.placeholder(), hostname=req.hostname,
                                            pre_exec=req.pre_exec, tap_fd=req.tap_fd, network=req.network)
        log.info("sandbox VM %s cloned from template %s (pid %s): ready in %.3f s", req.name, template.key,
                 vm.pid, timings["ready"])
        return LaunchedVM(vm, agent, "clone", self._devices(req), self.shape.dax, timings, template.key)

    async def adopt(self, name: str, directory: Path, pid: int, qmp_fd: int, hostname: str = "",
                    network: NetworkConfig = NetworkConfig()) -> LaunchedVM:
        """A spare VM another process started from this launcher's template, restored and warmed (see
        rund/runtime/spares.py): its files now in `directory`, its QMP connection `qmp_fd` (taken over here),
        its agent reconnected and given the sandbox's identity with a PostRestore, as a clone gets it (the spare
        had one already, without an identity: the clock and RNG are set again). No rootfs image is bound (the
        sandbox's first container brings none)."""
        assert self.store is not None
        t0 = time.monotonic()
        template = self.store.load(self.template_key().key)
        spec = clone_spec(self.shape, template, name, directory, (), self.placeholder())
        try:
            vm = await QemuVM.adopt(spec, pid, qmp_fd, self.shape.qemu_binary)
        except HypervisorError as e:
            raise errors.Unavailable(f"spare VM {name}: {e}") from e
        t_vm = time.monotonic()
        try:
            agent = await restore_handshake(vm, CLONE_READY_TIMEOUT, hostname, network)
        except BaseException:
            with contextlib.suppress(HypervisorError):
                await vm.stop(timeout=1.0)
            raise
        t_ready = time.monotonic()
        log.info("sandbox VM %s: spare %s (pid %s) adopted in %.3f s", directory.name, name, pid, t_ready - t0)
        return LaunchedVM(vm, agent, "spare", (), self.shape.dax,
                          {"adopt": t_vm - t0, "post_restore": t_ready - t_vm, "ready": t_ready - t0}, template.key)

    def spare_request(self, count: int, root: Path) -> dict:
        """What a spare VM keeper (rund/runtime/spares.py) needs to clone and warm this launcher's template."""
        assert self.store is not None
        key = self.template_key()
        return {"shape": shape_to_json(self.shape), "store": str(self.store.root), "key": key.key,
                "placeholder": str(self.placeholder()), "count": count, "root": str(root)}

    async def ensure_template(self, wait: bool = True) -> tuple[str, Template | None]:
        """Build the template here unless a valid one exists: ("present"|"built"|"busy", template)."""
        if self.store is None:
            raise errors.FailedPrecondition("templates are disabled (no templates dir)")
        return await ensure_template(self.shape, self.store, self.template_key(), self.placeholder(),
                                     warm=self.warm_templates, wait=wait)

    def _start_builder(self, reason: str) -> None:
        assert self.store is not None and self._key is not None
        probe = self.store.lock(self._key.key)
        try:
            self.store.ensure_root()
            if not probe.try_acquire():   # a builder is at work: spare a process that would exit at once
                log.info("template %s is being built by another process", self._key.key)
                return
            probe.release()
            self.builder = spawn_builder(self.shape, self.store, self._key, self.placeholder(), self.warm_templates)
            self.builder_exit = ExitWatch(self.builder, asyncio.get_running_loop())
        except (OSError, errors.RundError) as e:
            log.warning("cannot start the template builder for %s: %s", self._key.key, e)
            return
        log.info("template %s: builder pid %d started (%s)", self._key.key, self.builder.pid, reason)

    async def cold_boot(self, req: LaunchRequest) -> LaunchedVM:
        t0 = time.monotonic()
        placeholder = self.placeholder()
        spec = sandbox_spec(self.shape, req.name, VMPaths(req.dir), req.rootfs_images, placeholder,
                            tap_fd=req.tap_fd)
        vm = QemuVM(spec, self.shape.qemu_binary)
        try:
            await vm.start(pre_exec=req.pre_exec)
        except HypervisorError as e:
            raise errors.Unavailable(f"sandbox VM did not start: {e}") from e
        t_exec = time.monotonic()
        try:
            agent = await wait_for_agent(vm, COLD_BOOT_TIMEOUT)
        except BaseException:
            await vm.stop(timeout=1.0)
            raise
        t_ready = time.monotonic()
        log.info("sandbox VM %s booted cold (pid %s): agent ready in %.2f s", req.name, vm.pid, t_ready - t0)
        return LaunchedVM(vm, agent, "cold", self._devices(req), self.shape.dax,
                          {"qemu_start": t_exec - t0, "agent_ready": t_ready - t_exec, "ready": t_ready - t0})

    def _devices(self, req: LaunchRequest) -> tuple[str, ...]:
        return tuple(self.shape.rootfs_device(i) for i in range(len(req.rootfs_images)))

