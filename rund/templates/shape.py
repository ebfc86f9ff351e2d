"""The shape of a sandbox VM, decided by configuration alone, and the VMSpec for one sandbox of that shape.

Cold boots, templates and clones all take their spec from `sandbox_spec`, so a clone's devices match its template's
exactly (QEMU restores device state by position and checks nothing about pmem, see reference/qemu-on-this-machine.md).
Container rootfs images sit in fixed-size slots after the guest OS image: a clone binds its images to the slots the
template saved empty (bound to a sparse placeholder), so no hotplug is needed on the start path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rund.config import Config, preplug_mib
from rund.errors import FailedPrecondition, InvalidArgument
from rund.hypervisor import (Accel, AnonymousMemory, BlockDevice, FileMemory, FileShare, Machine, MemoryHotplug,
                             PmemHotplugSlot, PmemSlot, PodNic, SerialChannel, VMSpec, detect_accel, host_tsc_khz,
                             pmem_slot_address)
from rund.hypervisor.cmdline import (IDLE_PARAMS, MEMORY_HOTPLUG_PARAMS, START_PARAMS, CmdlineError, guest_root,
                                     kernel_cmdline)
from rund.hypervisor.layout import GiB, MiB, PMEM_ALIGN
from rund.hypervisor.paths import VMPaths

GUEST_ROOT_SERIAL = "root"
SHARE_TAG = "rundvol"           # the guest agent mounts the pod's volumes share by this tag
DISK_HOTPLUG_SLOTS = 4          # empty PCIe root ports for a pod's raw block devices (q35)


@dataclass(frozen=True)
class SandboxShape:
    machine: Machine
    accel: Accel
    vcpus: int
    memory_mib: int
    tb_size_mib: int
    kernel: Path
    initrd: Path
    image: Path                 # the guest OS erofs image (agent, python): pmem0 / vda
    image_bytes: int
    kernel_params: str
    rootfs_slots: int           # container rootfs images per VM
    rootfs_slot_bytes: int      # every container image is padded to exactly this size
    rootfs_hotplug_slots: int = 0   # images added to a running VM (q35 only), after the fixed slots; one more
                                    # than [rootfs] hotplug_slots in a class with spare VMs, whose warm-up takes it
    memory_hotplug_mib: int = 0     # guest memory the pod may grow by (q35 only: virtio-mem), after every pmem slot
    memory_preplug_mib: int = 0     # of it, plugged from the start: the template saves it plugged, clones start
                                    # with it onlined, and a pod's memory never goes below it (runtime/pod_memory)
    nic: bool = True                # a virtio-net NIC (eth0) for the pod's network; a clone binds it to its tap
    share: bool = True              # a virtio-9p share (tag SHARE_TAG) of the sandbox's volumes dir (VMPaths.share)
    disk_hotplug_slots: int = 0     # host block devices (linux.devices of type b) added while running (q35 only)
    qemu_binary: str = "qemu-system-x86_64"
    mem_merge: bool = True          # guest RAM offered to KSM (host-side: not in the template key)
    tsc_khz: int | None = None
    key_extra: tuple = field(default=())   # anything else a template must be keyed by

    @property
    def dax(self) -> bool:
        return self.machine is Machine.Q35

    def rootfs_device(self, slot: int) -> str:
        """The guest device of container rootfs slot `slot` (0-based; hotplug slots follow the fixed ones, and
        the guest numbers hotplugged pmem devices in the order they arrive)."""
        if self.machine is Machine.Q35:
            return f"/dev/pmem{slot + 1}"
        return "/dev/vd" + chr(ord("b") + slot)

    def cmdline(self) -> str:
        """The guest's words only: the driver adds the TCG flags (tsc_khz) itself. kernel_params come last, so a
        runtime class can override the defaults (IDLE_PARAMS, START_PARAMS)."""
        root, flags = guest_root(self.machine)
        hotplug = MEMORY_HOTPLUG_PARAMS if self.memory_hotplug_mib else ()
        extra = (*IDLE_PARAMS, *START_PARAMS, *hotplug, *self.kernel_params.split())
        return kernel_cmdline(root=root, rootflags=flags, extra=extra)


def shape_from_config(cfg: Config) -> SandboxShape:
    """Resolve the configuration against this host: guest files present, accelerator detected."""
    hv, guest = cfg.hypervisor, cfg.guest
    kernel, initrd, image = guest.kernel_path(), guest.initrd_path(), guest.image_path()
    for what, path in (("guest kernel", kernel), ("guest initrd", initrd), ("guest image", image)):
        if not path.is_file():
            raise FailedPrecondition(f"{what} {path} is missing: build it with `make guest-image` "
                                     f"(or set [guest] in {cfg.source or 'the rund config'})")
    slot_bytes = cfg.rootfs.slot_mib * MiB
    if slot_bytes % PMEM_ALIGN or slot_bytes > GiB:
        raise InvalidArgument(f"rootfs.slot_mib must be a multiple of 2 and at most 1024, got {cfg.rootfs.slot_mib}")
    # microvm has no device memory: its VM keeps its boot size (README).
    hotplug_mib = hv.max_memory_mib - hv.memory_mib if hv.machine == "q35" else 0
    if hv.accel == "auto":
        accel = detect_accel().accel
    else:
        accel = Accel(hv.accel)
    shape = SandboxShape(
        machine=Machine(hv.machine), accel=accel, vcpus=hv.vcpus, memory_mib=hv.memory_mib,
        tb_size_mib=hv.tb_size_mib, kernel=kernel, initrd=initrd, image=image, image_bytes=os.stat(image).st_size,
        kernel_params=guest.kernel_params, rootfs_slots=cfg.rootfs.slots, rootfs_slot_bytes=slot_bytes,
        rootfs_hotplug_slots=cfg.rootfs.hotplug_slots + bool(cfg.templates.spare_vms) if hv.machine == "q35" else 0,
        memory_hotplug_mib=hotplug_mib, memory_preplug_mib=preplug_mib(hv, hotplug_mib),
        disk_hotplug_slots=DISK_HOTPLUG_SLOTS if hv.machine == "q35" else 0,
        qemu_binary=hv.path, tsc_khz=host_tsc_khz() if accel is Accel.TCG else None, mem_merge=hv.mem_merge)
    try:
        shape.cmdline()
    except CmdlineError as e:
        raise InvalidArgument(f"guest.kernel_params: {e}") from None
    return shape


# The MAC a template's NIC is saved with; every sandbox's agent sets the pod's own (CNI's) before bringing it up.
TEMPLATE_MAC = "02:00:00:00:00:01"


def sandbox_spec(shape: SandboxShape, name: str, paths: VMPaths, rootfs_images: tuple[Path, ...],
                 placeholder: Path | None, memory: AnonymousMemory | FileMemory = AnonymousMemory(),
                 incoming_defer: bool = False, tap_fd: int | None = None) -> VMSpec:
    """rootfs_images fill the first slots; the others are bound to `placeholder` (a sparse file of slot size).
    tap_fd: the pod's tap (opened in its network namespace) for the NIC; None leaves the NIC unconnected."""
    if len(rootfs_images) > shape.rootfs_slots:
        raise InvalidArgument(f"{len(rootfs_images)} rootfs images for {shape.rootfs_slots} slots")
    slots = list(rootfs_images)
    if len(slots) < shape.rootfs_slots:
        if placeholder is None:
            raise InvalidArgument("empty rootfs slots need a placeholder image")
        slots += [placeholder] * (shape.rootfs_slots - len(slots))
    pmem: tuple[PmemSlot, ...] = ()
    disks: tuple[BlockDevice, ...] = ()
    hotplug: tuple[PmemHotplugSlot, ...] = ()
    memory_hotplug = None
    if shape.machine is Machine.Q35:
        pmem = (PmemSlot(shape.image, shape.image_bytes, pmem_slot_address(shape.memory_mib, 0)),)
        pmem += tuple(PmemSlot(p, shape.rootfs_slot_bytes, pmem_slot_address(shape.memory_mib, i + 1))
                      for i, p in enumerate(slots))
        first = 1 + len(slots)
        hotplug = tuple(PmemHotplugSlot(shape.rootfs_slot_bytes, pmem_slot_address(shape.memory_mib, first + i))
                        for i in range(shape.rootfs_hotplug_slots))
        if shape.memory_hotplug_mib:
            # Pinned after every pmem slot, so its address never depends on slot sizes.
            memory_hotplug = MemoryHotplug(shape.memory_hotplug_mib * MiB, pmem_slot_address(
                shape.memory_mib, first + shape.rootfs_hotplug_slots), requested_size=shape.memory_preplug_mib * MiB)
    else:
        disks = (BlockDevice(shape.image, serial=GUEST_ROOT_SERIAL),)
        disks += tuple(BlockDevice(p, serial=f"rootfs{i}") for i, p in enumerate(slots))
    return VMSpec(
        name=name, machine=shape.machine, accel=shape.accel, vcpus=shape.vcpus, memory_mib=shape.memory_mib,
        runtime_dir=paths.run, console_log=paths.console_log, qemu_log=paths.qemu_log, agent=SerialChannel(),
        kernel=shape.kernel, initrd=shape.initrd, cmdline=shape.cmdline(),
        memory=memory, pmem=pmem, pmem_hotplug=hotplug, memory_hotplug=memory_hotplug, disks=disks, rng=False,
        net=PodNic(TEMPLATE_MAC, tap_fd) if shape.nic else None,
        share=FileShare(paths.share, SHARE_TAG) if shape.share else None,
        disk_hotplug_slots=shape.disk_hotplug_slots if shape.machine is Machine.Q35 else 0,
        incoming_defer=incoming_defer, tb_size_mib=shape.tb_size_mib, tsc_khz=shape.tsc_khz,
        mem_merge=shape.mem_merge)
