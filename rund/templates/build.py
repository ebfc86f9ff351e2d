"""Build one template: boot the sandbox shape cold with its RAM in a shared file, warm the agent, save, publish.

The template VM is the same spec as every sandbox (sandbox_spec), with all rootfs slots bound to the sparse
placeholder and nothing opened or mounted from them: a slot must be closed when saved, or clones read stale blocks
(reference/qemu-on-this-machine.md, addendum). The host's agent connection is closed before the save so that no
clone inherits a half-read request.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

from rund import errors
from rund.agent import AgentClient, FileCopy, LayeredRootfs, StdioConfig
from rund.hypervisor import FileMemory, HypervisorError, QemuVM
from rund.hypervisor.cmdline import guest_root
from rund.procfs import cpu_seconds
from rund.templates import integrity
from rund.templates.errors import TemplateBuildFailed
from rund.templates.key import TemplateKey
from rund.templates.manifest import Manifest
from rund.hypervisor.paths import VMPaths
from rund.templates.shape import SandboxShape, sandbox_spec
from rund.templates.store import Template, TemplateStore
from rund.templates.wait import wait_for_agent

log = logging.getLogger("rund.templates")

BUILD_BOOT_TIMEOUT = 300.0
PREPLUG_TIMEOUT = 30.0         # measured: +512 MiB in ~0.1 s under TCG
SETTLE_WINDOW = 0.1            # the guest is done onlining once QEMU uses at most SETTLE_CPU_S in a window
SETTLE_CPU_S = 0.01
WARM_CONTAINER_ID = "rund-template-warmup"
PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


def guest_os_device(shape: SandboxShape) -> str:
    return guest_root(shape.machine)[0]


# The warm-up container is shaped like a CRI pod's app container (what containerd's CRI plugin writes, as the
# shim hands it to the guest): the capabilities containerd grants by default (so the agent's spare init serves it, as
# it serves the pod's containers), CRI's mounts and copied files, a device rule. Under TCG a spare VM runs translated
# guest code only for the paths its warm-up took, so every path the pod's container takes and the warm-up did not
# (the spare init's plan, devpts, mqueue, cgroup and bind mounts, the capability sets) is translated anew in the pod's
# start: a minimal spec left ~25 ms of the guest's create to a spare VM's pod (see README, "Spare VMs").
CONTAINERD_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                   "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
                   "CAP_KILL", "CAP_AUDIT_WRITE"]
WARM_UP_ANNOTATION = "io.rund.warm-up"     # the agent forks its spares again once this container is gone


def warm_spec() -> tuple[dict, tuple[FileCopy, ...]]:
    """The warm-up container's spec and the files its mounts copy (/etc/hostname, hosts, resolv.conf)."""
    caps = CONTAINERD_CAPS
    bind = ["rbind", "rprivate", "rw"]
    fs = ["nosuid", "noexec", "nodev"]
    spec = {"ociVersion": "1.0.2", "hostname": "template",
            "process": {"args": ["/bin/sh", "-c", "head -c 16 /dev/urandom >/dev/null"], "cwd": "/",
                        "user": {"uid": 0, "gid": 0, "additionalGids": [0]}, "env": [PATH_ENV], "oomScoreAdj": 0,
                        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps}},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": fs},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": fs},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*fs, "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                 "options": [*fs, "relatime", "ro"]},
                *({"destination": d, "type": "bind", "source": f"rund-file:{i}", "options": bind}
                  for i, d in enumerate(("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")))],
            "annotations": {WARM_UP_ANNOTATION: "true"},
            "linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")],
                      "resources": {"devices": [{"allow": False, "access": "rwm"}]}}}
    files = (FileCopy(b"template\n"), FileCopy(b"127.0.0.1\tlocalhost\n"), FileCopy(b""))
    return spec, files


async def warm_agent(agent: AgentClient, shape: SandboxShape, base_device: str | None = None) -> None:
    """Create, run and remove one container on the guest OS image (or on `base_device`, a spare VM's hotplugged
    copy of it), so a clone's first container finds the agent's container code imported and its guest pages
    (overlay, namespaces, exec) already touched, and a spare VM's pod finds its container's path translated."""
    rootfs = LayeredRootfs(base_device=base_device or guest_os_device(shape), base_fstype="erofs", dax=shape.dax,
                           upper_size_bytes=4 << 20)
    spec, files = warm_spec()
    await agent.create_container(WARM_CONTAINER_ID, spec, rootfs, StdioConfig(), files)
    await agent.start_container(WARM_CONTAINER_ID)
    status = await agent.wait_process(WARM_CONTAINER_ID, timeout=120)
    await agent.remove_container(WARM_CONTAINER_ID)
    if status.code != 0:
        raise TemplateBuildFailed(f"the warm-up container exited with {status.code}")


async def build_template(shape: SandboxShape, store: TemplateStore, key: TemplateKey, placeholder: Path,
                         warm: bool = True, boot_timeout: float = BUILD_BOOT_TIMEOUT) -> Template:
    """Build and publish the template for `key`. The caller holds store.lock(key.key)."""
    build = store.new_build_dir(key.key)
    try:
        timings = await _boot_and_save(shape, build, key.key, placeholder, warm, boot_timeout)
        t0 = time.monotonic()
        manifest = Manifest(key=key.key, inputs=key.inputs, created_unix=time.time(),
                            state=integrity.record_state(build / "state"),
                            memory=integrity.record_memory(build / "memory"), build=timings)
        timings["checksums_s"] = round(time.monotonic() - t0, 3)
        template = store.publish(build, manifest)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    log.info("template %s built: %s", key.key, timings)
    store.prune_superseded(manifest)
    return template


async def _boot_and_save(shape: SandboxShape, build: Path, key: str, placeholder: Path, warm: bool,
                         boot_timeout: float) -> dict:
    spec = sandbox_spec(shape, f"template-{key[:12]}", VMPaths(build), (), placeholder,
                        memory=FileMemory(build / "memory", shared=True))
    preplug = spec.memory_hotplug.requested_size if spec.memory_hotplug else 0
    if preplug:   # booted with nothing plugged, plugged after the warm-up: see _preplug
        spec = replace(spec, memory_hotplug=replace(spec.memory_hotplug, requested_size=0))
    vm = QemuVM(spec, shape.qemu_binary)
    t0 = time.monotonic()
    try:
        await vm.start()
        agent = await wait_for_agent(vm, boot_timeout)
        t_ready = time.monotonic()
        try:
            if warm:
                await warm_agent(agent, shape)
        finally:
            await agent.close()
        t_warm = time.monotonic()
        if preplug:
            await _preplug(vm, preplug)
        t_plugged = time.monotonic()
        await vm.save_state(build / "state")
        t_saved = time.monotonic()
    except (HypervisorError, errors.RundError) as e:
        raise TemplateBuildFailed(f"template VM for {key}: {e}\n{vm.log_tail()[-500:]}") from e
    finally:
        with contextlib.suppress(HypervisorError):   # never started: nothing to stop
            await vm.stop(timeout=2.0)
        with contextlib.suppress(OSError):           # the template's share: empty, never mounted by its guest
            VMPaths(build).share.rmdir()
    return {"boot_s": round(t_ready - t0, 3), "warm_s": round(t_warm - t_ready, 3),
            "preplug_s": round(t_plugged - t_warm, 3), "save_s": round(t_saved - t_plugged, 3), "warm": warm}


async def _preplug(vm: QemuVM, size: int) -> None:
    """Plug `size` bytes of hotplug memory and let the guest online it, just before the save: the guest's memmap of
    it is written into the shared RAM file once (not in every clone after restore), and the plugged pages stay
    untouched, so the migration stream carries them as zero pages (hotplug memory is anonymous, argv.py: 512 MiB
    add ~1.2 MB to the state file and ~70 ms to every restore, README Density). Plugged before the warm-up, the
    warm-up's pages would land in it (the guest onlines it movable, the zone user pages come from first) and every
    clone would restore them as private memory. The guest plugs a block and then onlines it, so `size` reaching the request
    leaves the last 128 MiB memory block to online: wait for the vCPU to go idle."""
    try:
        plugged = await vm.resize_memory(size, timeout=PREPLUG_TIMEOUT)
    except HypervisorError as e:
        raise TemplateBuildFailed(f"pre-plugging {size >> 20} MiB of guest memory: {e}") from e
    if plugged != size:
        raise TemplateBuildFailed(f"the template's guest plugged {plugged >> 20} of {size >> 20} MiB within "
                                  f"{PREPLUG_TIMEOUT} s")
    deadline = time.monotonic() + PREPLUG_TIMEOUT
    last = cpu_seconds(vm.pid or 0) or 0.0
    while time.monotonic() < deadline:
        await asyncio.sleep(SETTLE_WINDOW)
        now = cpu_seconds(vm.pid or 0)
        if now is None or now - last <= SETTLE_CPU_S:    # gone: the save reports it
            return
        last = now
    log.warning("template VM %s: its vCPU stayed busy for %s s after the pre-plug; saving anyway", vm.spec.name,
                PREPLUG_TIMEOUT)
