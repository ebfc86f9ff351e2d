"""What a VM is made of: frozen domain types that build_argv turns into a QEMU command line.

Validation here rejects shapes that QEMU would refuse, and also shapes it would accept and then
get wrong on this kind of machine (measured in reference/qemu-on-this-machine.md).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path

from rund.hypervisor.errors import InvalidSpec
from rund.hypervisor.layout import MiB, PMEM_ALIGN, PMEM_SLOT_STRIDE, q35_device_memory_base

# sun_path is 108 bytes including the terminating NUL.
UNIX_PATH_MAX = 107
AGENT_PORT_NAME = "agent"
# virtio-serial's max_ports: port 0 (reserved for a console, unused) and the agent's. QEMU's default, 31, costs each
# VM ~0.4 MiB of QEMU's memory for ports nobody opens (README Density, "QEMU's own memory"). The guest sees it and
# migration checks it: an input of the template key.
AGENT_MAX_PORTS = 2

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_SHARE_TAG = re.compile(r"^[A-Za-z0-9_-]{1,31}$")  # virtio-9p mount tags are short; the guest matches them exactly
_SERIAL = re.compile(r"^[A-Za-z0-9._-]{1,20}$")  # virtio-blk serials are at most 20 bytes


class Machine(enum.Enum):
    Q35 = "q35"  # needed for virtio-pmem with DAX
    MICROVM = "microvm"  # fewest devices, fastest boot; virtio over mmio


class Accel(enum.Enum):
    KVM = "kvm"
    TCG = "tcg"


@dataclass(frozen=True)
class AnonymousMemory:
    """Private anonymous guest RAM: a VM that is booted and never templated."""


@dataclass(frozen=True)
class FileMemory:
    """Guest RAM mapped from a file.

    shared=True: a template; guest writes land in the file (on tmpfs) and migration with
    x-ignore-shared skips the RAM. shared=False: a clone; a private copy-on-write map of the
    template's file, which must never change afterwards.
    """

    path: Path
    shared: bool


@dataclass(frozen=True)
class PmemSlot:
    """A virtio-pmem device (q35 only) backed by an image of exactly `size` bytes at a pinned address."""

    image: Path
    size: int
    memaddr: int
    readonly: bool = True


@dataclass(frozen=True)
class PmemHotplugSlot:
    """Room for a virtio-pmem device added while the VM runs (q35): a PCIe root port to plug it into, and its
    size and pinned guest address counted in the machine's device memory from the start (templates included)."""

    size: int
    memaddr: int


@dataclass(frozen=True)
class MemoryHotplug:
    """Guest memory that can grow and shrink while the VM runs (q35): a virtio-mem-pci device over `size` bytes of
    device memory at a pinned guest address, `requested_size` of it requested at start (a cold boot plugs it while
    booting; a clone must be started with what its template saved, which its migration stream carries too). The
    guest plugs what the host requests (QemuVM.resize_memory), a block at a time; unplugged memory is given back to
    the host."""

    size: int
    memaddr: int
    block_size: int = 2 * MiB
    requested_size: int = 0


@dataclass(frozen=True)
class BlockDevice:
    """A read-only virtio-blk disk; `serial` lets the guest find it under /dev/disk/by-id/virtio-<serial>."""

    image: Path
    serial: str | None = None


@dataclass(frozen=True)
class FileShare:
    """A host directory the guest mounts by `tag`: virtio-9p, served by QEMU itself. It needs no guest RAM shared with
    a host daemon (virtio-fs does: vhost-user maps guest RAM, which a template clone maps privately), so templates
    and clones carry it like any device; the path is not in the migration stream, so a clone exports its own
    directory under its template's tag. security_model=passthrough (QEMU runs as root): owners and modes are the
    host's; multidevs=remap: the bind mounts under it are other filesystems, whose inode numbers could collide."""

    path: Path
    tag: str


@dataclass(frozen=True)
class SerialChannel:
    """The agent on a virtio-serial port; the host end is a unix socket QEMU listens on (server=on,wait=off)."""

    port_name: str = AGENT_PORT_NAME


@dataclass(frozen=True)
class VsockChannel:
    """The agent on AF_VSOCK through /dev/vhost-vsock; each clone needs a fresh guest CID.

    vhost_fd: an already opened /dev/vhost-vsock whose CID the caller reserved (see vsock.py);
    it is passed to QEMU, which keeps using it.
    """

    guest_cid: int
    port: int
    vhost_fd: int | None = None


AgentChannel = SerialChannel | VsockChannel


@dataclass(frozen=True)
class PodNic:
    """A pod VM's virtio-net NIC, present in every template and clone of a shape so that device state restores by
    position. Its backend is not migrated: an open tap fd (opened in the pod's network namespace), or none at all
    (a template, or a pod without a network), where frames go nowhere. vnet headers stay off on both, so a clone's
    NIC negotiates what its template's did."""

    mac: str
    tap_fd: int | None = None


@dataclass(frozen=True)
class TapNetwork:
    """A virtio-net NIC on a tap device, named (QEMU opens it) or given as an open fd (opened in the pod netns)."""

    tap: str
    mac: str
    tap_fd: int | None = None


@dataclass(frozen=True)
class SerialSocketAddress:
    """Where the host reaches the agent: a unix socket carrying the virtio-serial port's bytes."""

    path: Path


@dataclass(frozen=True)
class VsockAddress:
    cid: int
    port: int


AgentAddress = SerialSocketAddress | VsockAddress


@dataclass(frozen=True)
class VMSpec:
    name: str
    machine: Machine
    accel: Accel
    vcpus: int
    memory_mib: int
    runtime_dir: Path  # QEMU's sockets; created by the driver and removed with everything in it
    console_log: Path  # guest serial console (ttyS0)
    qemu_log: Path  # QEMU's own stdout/stderr
    agent: AgentChannel | None = None
    kernel: Path | None = None  # None: firmware only, or a clone restored from a template
    initrd: Path | None = None
    cmdline: str = ""
    memory: AnonymousMemory | FileMemory = field(default_factory=AnonymousMemory)
    pmem: tuple[PmemSlot, ...] = ()
    pmem_hotplug: tuple[PmemHotplugSlot, ...] = ()
    memory_hotplug: MemoryHotplug | None = None
    disks: tuple[BlockDevice, ...] = ()
    rng: bool = False
    net: TapNetwork | PodNic | None = None
    share: FileShare | None = None
    disk_hotplug_slots: int = 0  # PCIe root ports for host block devices added while running (q35; QemuVM.hotplug_disk)
    incoming_defer: bool = False  # a clone: wait for migrate-incoming
    tb_size_mib: int = 48  # TCG translation buffer; caps a busy guest's code cache
    mem_merge: bool = True  # QEMU marks guest RAM mergeable (its default): KSM, when the host runs it, may merge it
    tsc_khz: int | None = None  # host TSC kHz, required for a TCG kernel boot (see argv.py)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def qmp_socket(self) -> Path:
        return self.runtime_dir / "qmp.sock"

    @property
    def agent_socket(self) -> Path:
        return self.runtime_dir / "agent.sock"

    @property
    def agent_address(self) -> AgentAddress | None:
        if isinstance(self.agent, SerialChannel):
            return SerialSocketAddress(self.agent_socket)
        if isinstance(self.agent, VsockChannel):
            return VsockAddress(self.agent.guest_cid, self.agent.port)
        return None


def _validate(spec: VMSpec) -> None:
    if not _NAME.match(spec.name):
        raise InvalidSpec(f"VM name {spec.name!r} must match {_NAME.pattern}")
    if not isinstance(spec.machine, Machine) or not isinstance(spec.accel, Accel):
        raise InvalidSpec("machine and accel must be Machine and Accel members")
    if spec.vcpus < 1:
        raise InvalidSpec(f"vcpus must be >= 1, got {spec.vcpus}")
    if spec.memory_mib < 16:
        raise InvalidSpec(f"memory_mib must be >= 16, got {spec.memory_mib}")
    if spec.tb_size_mib < 1:
        raise InvalidSpec(f"tb_size_mib must be >= 1, got {spec.tb_size_mib}")
    _validate_paths(spec)
    _validate_boot(spec)
    _validate_pmem(spec)
    _validate_memory_hotplug(spec)
    _validate_devices(spec)


def _validate_paths(spec: VMSpec) -> None:
    if not spec.runtime_dir.is_absolute():
        raise InvalidSpec(f"runtime_dir must be absolute, got {spec.runtime_dir}")
    for sock in (spec.qmp_socket, spec.agent_socket):
        if len(str(sock).encode()) > UNIX_PATH_MAX:
            raise InvalidSpec(f"socket path {sock} is longer than {UNIX_PATH_MAX} bytes")
    for log in (spec.console_log, spec.qemu_log):
        # The runtime dir is deleted when the VM ends; logs must outlive it.
        if log.is_relative_to(spec.runtime_dir):
            raise InvalidSpec(f"log {log} must not be inside runtime_dir {spec.runtime_dir}")
    if isinstance(spec.memory, FileMemory) and not spec.memory.path.is_absolute():
        raise InvalidSpec(f"memory file must be absolute, got {spec.memory.path}")


def _validate_boot(spec: VMSpec) -> None:
    if spec.kernel is None and (spec.initrd is not None or spec.cmdline):
        raise InvalidSpec("initrd and cmdline need a kernel")
    if spec.kernel is not None and spec.accel is Accel.TCG and not spec.tsc_khz:
        # Without tsc_early_khz the TCG guest's PIT calibration fails at random and microvm hangs.
        raise InvalidSpec("a TCG kernel boot needs tsc_khz (the host TSC frequency)")
    if spec.tsc_khz is not None and spec.tsc_khz <= 0:
        raise InvalidSpec(f"tsc_khz must be positive, got {spec.tsc_khz}")


def _validate_pmem(spec: VMSpec) -> None:
    if not spec.pmem and not spec.pmem_hotplug:
        return
    if spec.machine is not Machine.Q35:
        # microvm has no device-memory plug: QEMU accepts the device, the guest cannot map it.
        raise InvalidSpec("virtio-pmem needs the q35 machine")
    base = q35_device_memory_base(spec.memory_mib * MiB)
    spans = []
    for slot in (*spec.pmem, *spec.pmem_hotplug):
        if slot.size <= 0 or slot.size % PMEM_ALIGN or slot.size > PMEM_SLOT_STRIDE:
            raise InvalidSpec(f"pmem slot size {slot.size} must be a positive multiple of 2 MiB, at most 1 GiB")
        if slot.memaddr % PMEM_ALIGN:
            raise InvalidSpec(f"pmem memaddr {slot.memaddr:#x} must be 2 MiB aligned")
        if slot.memaddr < base:
            raise InvalidSpec(f"pmem memaddr {slot.memaddr:#x} is below the device memory base {base:#x}")
        spans.append((slot.memaddr, slot.memaddr + slot.size))
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        if start < end:
            raise InvalidSpec(f"pmem slots overlap at {start:#x}")


def _validate_memory_hotplug(spec: VMSpec) -> None:
    hot = spec.memory_hotplug
    if hot is None:
        return
    if spec.machine is not Machine.Q35:
        # microvm has no device-memory region, and QEMU 7.2 has no virtio-mem over mmio.
        raise InvalidSpec("memory hotplug (virtio-mem) needs the q35 machine")
    if hot.block_size < PMEM_ALIGN or hot.block_size & (hot.block_size - 1):
        raise InvalidSpec(f"virtio-mem block size {hot.block_size} must be a power of two >= 2 MiB")
    if hot.size <= 0 or hot.size % hot.block_size:
        raise InvalidSpec(f"hotplug memory size {hot.size} must be a positive multiple of {hot.block_size}")
    if not 0 <= hot.requested_size <= hot.size or hot.requested_size % hot.block_size:
        raise InvalidSpec(f"hotplug memory requested at start ({hot.requested_size}) must be a multiple of "
                          f"{hot.block_size} in [0, {hot.size}]")
    if hot.memaddr % hot.block_size or hot.memaddr < q35_device_memory_base(spec.memory_mib * MiB):
        raise InvalidSpec(f"hotplug memory address {hot.memaddr:#x} must be block aligned, in device memory")
    end = hot.memaddr + hot.size
    for slot in (*spec.pmem, *spec.pmem_hotplug):
        if slot.memaddr < end and hot.memaddr < slot.memaddr + slot.size:
            raise InvalidSpec(f"hotplug memory overlaps the pmem slot at {slot.memaddr:#x}")


def _validate_devices(spec: VMSpec) -> None:
    for disk in spec.disks:
        if disk.serial is not None and not _SERIAL.match(disk.serial):
            raise InvalidSpec(f"disk serial {disk.serial!r} must match {_SERIAL.pattern}")
    if isinstance(spec.agent, SerialChannel) and not _NAME.match(spec.agent.port_name):
        raise InvalidSpec(f"port name {spec.agent.port_name!r} must match {_NAME.pattern}")
    if isinstance(spec.agent, VsockChannel):
        if not 3 <= spec.agent.guest_cid < 0xFFFFFFFF:
            raise InvalidSpec(f"guest CID {spec.agent.guest_cid} must be in [3, 2^32-1)")
        if not 0 < spec.agent.port < 0xFFFFFFFF:
            raise InvalidSpec(f"vsock port {spec.agent.port} out of range")
    if spec.disk_hotplug_slots and spec.machine is not Machine.Q35:
        raise InvalidSpec("disk hotplug needs the q35 machine (microvm has no PCIe hotplug)")
    if not 0 <= spec.disk_hotplug_slots <= 16:
        raise InvalidSpec(f"disk_hotplug_slots {spec.disk_hotplug_slots} must be in [0, 16]")
    if spec.share is not None:
        if not _SHARE_TAG.match(spec.share.tag):
            raise InvalidSpec(f"share tag {spec.share.tag!r} must match {_SHARE_TAG.pattern}")
        if not spec.share.path.is_absolute():
            raise InvalidSpec(f"share path must be absolute, got {spec.share.path}")
    if spec.net is not None:
        if not _MAC.match(spec.net.mac):
            raise InvalidSpec(f"MAC {spec.net.mac!r} must be lower-case aa:bb:cc:dd:ee:ff")
        if isinstance(spec.net, TapNetwork) and (not 0 < len(spec.net.tap) <= 15 or "," in spec.net.tap):
            raise InvalidSpec(f"tap name {spec.net.tap!r} is not a valid interface name")
