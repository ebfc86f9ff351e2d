"""VMSpec -> QEMU argv. A pure function: same spec, same argv, no I/O.

Determinism matters beyond tidiness: a template and its clones must declare the same devices
in the same order, or the migration stream will not load.
"""

from __future__ import annotations

from pathlib import Path

from rund.hypervisor import spec as _spec
from rund.hypervisor.cmdline import tsc_params
from rund.hypervisor.layout import MiB, q35_maxmem_bytes
from rund.hypervisor.spec import (
    Accel,
    AnonymousMemory,
    Machine,
    PodNic,
    SerialChannel,
    VMSpec,
    VsockChannel,
)

_Value = str | int | bool | Path


def opts(head: str | None, options: dict[str, _Value | None]) -> str:
    """QEMU's key=value list; a comma inside a value is written twice, None drops the key."""
    parts = [] if head is None else [_escape(head)]
    for key, value in options.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "on" if value else "off"
        parts.append(f"{key}={_escape(str(value))}")
    return ",".join(parts)


def _escape(value: str) -> str:
    return value.replace(",", ",,")


def build_argv(spec: VMSpec, qemu_binary: str | Path = "qemu-system-x86_64") -> list[str]:
    argv = [str(qemu_binary), "-name", spec.name]
    argv += ["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]
    argv += _machine(spec)
    argv += _cpu(spec)
    argv += _memory(spec)
    argv += _console_and_qmp(spec)
    argv += _agent(spec)
    argv += _pmem(spec)
    argv += _memory_hotplug(spec)
    argv += _disks(spec)
    argv += _rng(spec)
    argv += _net(spec)
    argv += _share(spec)
    argv += _disk_ports(spec)
    argv += _boot(spec)
    if spec.incoming_defer:
        argv += ["-incoming", "defer"]
    return argv


def _bus(spec: VMSpec, device: str) -> str:
    """virtio-<x>-pci on q35, virtio-<x>-device (mmio) on microvm."""
    return f"{device}-pci" if spec.machine is Machine.Q35 else f"{device}-device"


def _machine(spec: VMSpec) -> list[str]:
    if spec.machine is Machine.MICROVM:
        # acpi=on: without it the kernel never sees the virtio-mmio devices (no
        # CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES). rtc=on: rtc=off costs ~2 s of boot.
        # pit=off,pic=off: halves idle CPU of a clone. isa-serial: the console.
        machine = opts("microvm", {
            "acpi": True, "pcie": False, "rtc": True, "isa-serial": True,
            "pit": False, "pic": False, "memory-backend": "mem", **_mem_merge(spec),
        })
        # virtio-mmio defaults to legacy, which vhost-user backends refuse.
        return ["-machine", machine, "-global", "virtio-mmio.force-legacy=false"]
    machine = opts("q35", {"memory-backend": "mem", "sata": False, "smbus": False, "vmport": "off",
                           **_mem_merge(spec)})
    return ["-machine", machine]


def _mem_merge(spec: VMSpec) -> dict[str, bool]:
    """mem-merge=off: QEMU leaves guest RAM out of KSM (no MADV_MERGEABLE), so a host that runs KSM never merges
    this VM's pages with another's (cross-VM merging is a timing side channel between tenants). Host-side only:
    nothing of it reaches the guest or the migration stream. On (QEMU's default) is left implicit."""
    return {} if spec.mem_merge else {"mem-merge": False}


def _cpu(spec: VMSpec) -> list[str]:
    smp = ["-smp", str(spec.vcpus)]
    if spec.accel is Accel.KVM:
        return ["-accel", "kvm", "-cpu", "host", *smp]
    # +arat: microvm has no HPET for a broadcast timer, so without it the guest keeps a periodic
    # 250 Hz tick (1.4-2.3 % host CPU per idle guest instead of 0.35-0.5 %).
    return ["-accel", opts("tcg", {"tb-size": spec.tb_size_mib}), "-cpu", "qemu64,+arat", *smp]


def _memory(spec: VMSpec) -> list[str]:
    size = f"{spec.memory_mib}M"
    m = {"size": size}
    if spec.pmem or spec.pmem_hotplug or spec.memory_hotplug:
        slots = [(s.memaddr, s.size) for s in (*spec.pmem, *spec.pmem_hotplug)]
        if spec.memory_hotplug is not None:
            slots.append((spec.memory_hotplug.memaddr, spec.memory_hotplug.size))
        m["slots"] = str(len(slots))
        m["maxmem"] = f"{q35_maxmem_bytes(spec.memory_mib, slots) // MiB}M"
    if isinstance(spec.memory, AnonymousMemory):
        backend = opts("memory-backend-ram", {"id": "mem", "size": size})
    else:
        backend = opts("memory-backend-file", {
            "id": "mem", "size": size, "mem-path": spec.memory.path, "share": spec.memory.shared,
        })
    return ["-m", opts(None, m), "-object", backend]


def _console_and_qmp(spec: VMSpec) -> list[str]:
    # QEMU connects to a QMP server the driver listens on before exec: no polling for a socket.
    return [
        "-chardev", opts("file", {"id": "console", "path": spec.console_log}),
        "-serial", "chardev:console",
        "-chardev", opts("socket", {"id": "qmp", "path": spec.qmp_socket, "server": False}),
        "-mon", "chardev=qmp,mode=control",
    ]


def _agent(spec: VMSpec) -> list[str]:
    if isinstance(spec.agent, SerialChannel):
        return [
            "-chardev", opts("socket", {"id": "agent", "path": spec.agent_socket, "server": True, "wait": False}),
            "-device", opts(_bus(spec, "virtio-serial"), {"id": "vs0", "max_ports": _spec.AGENT_MAX_PORTS}),
            "-device", opts("virtserialport", {"bus": "vs0.0", "chardev": "agent", "name": spec.agent.port_name}),
        ]
    if isinstance(spec.agent, VsockChannel):
        device = "vhost-vsock-pci" if spec.machine is Machine.Q35 else "vhost-vsock-device"
        return ["-device", opts(device, {
            "id": "vsock0", "guest-cid": spec.agent.guest_cid, "vhostfd": spec.agent.vhost_fd,
        })]
    return []


def _pmem(spec: VMSpec) -> list[str]:
    argv = []
    for i, slot in enumerate(spec.pmem):
        argv += ["-object", opts("memory-backend-file", {
            "id": f"pmem{i}", "mem-path": slot.image, "size": slot.size, "share": True,
            "readonly": slot.readonly,
        })]
        argv += ["-device", opts("virtio-pmem-pci", {
            "id": f"vpmem{i}", "memdev": f"pmem{i}", "memaddr": slot.memaddr,
        })]
    for i, _ in enumerate(spec.pmem_hotplug):   # the guest's PCIe hotplug driver takes a device_add in these
        argv += ["-device", opts("pcie-root-port", {"id": hotplug_port(i), "chassis": i + 1, "slot": i + 1})]
    return argv


HOTPLUG_MEMORY_DEVICE = "vmem0"


def _memory_hotplug(spec: VMSpec) -> list[str]:
    hot = spec.memory_hotplug
    if hot is None:
        return []
    # reserve=off: the region costs no commit charge until the guest plugs (and touches) it; unplugged blocks are
    # discarded, so the host gets them back. Anonymous, not a file like boot RAM: QEMU 7.2's virtio-mem discards its
    # whole backend when realized (on a file: a hole punched through it), so a clone could not map a template's.
    # Its plugged blocks (a template's pre-plugged memory) go into the migration stream instead: 9 bytes per zero
    # page, but QEMU 7.2 loads them back page by page (~70 ms per restore for 512 MiB, README Density).
    return [
        "-object", opts("memory-backend-ram", {"id": "hotmem0", "size": hot.size, "reserve": False}),
        "-device", opts("virtio-mem-pci", {
            "id": HOTPLUG_MEMORY_DEVICE, "memdev": "hotmem0", "memaddr": hot.memaddr,
            "block-size": hot.block_size, "requested-size": hot.requested_size,
        }),
    ]


def hotplug_port(index: int) -> str:
    return f"hotplug{index}"


def _disks(spec: VMSpec) -> list[str]:
    argv = []
    for i, disk in enumerate(spec.disks):
        argv += ["-blockdev", opts(None, {
            "node-name": f"disk{i}", "driver": "raw", "read-only": True,
            "file.driver": "file", "file.filename": disk.image,
        })]
        argv += ["-device", opts(_bus(spec, "virtio-blk"), {
            "id": f"vd{i}", "drive": f"disk{i}", "serial": disk.serial,
        })]
    return argv


def _rng(spec: VMSpec) -> list[str]:
    if not spec.rng:
        return []
    return [
        "-object", "rng-random,id=rng0,filename=/dev/urandom",
        "-device", opts(_bus(spec, "virtio-rng"), {"id": "rng-dev0", "rng": "rng0"}),
    ]


def _net(spec: VMSpec) -> list[str]:
    if spec.net is None:
        return []
    if isinstance(spec.net, PodNic):
        if spec.net.tap_fd is not None:
            netdev = opts("tap", {"id": "net0", "fd": spec.net.tap_fd})    # opened without IFF_VNET_HDR
        else:
            netdev = opts("hubport", {"id": "net0", "hubid": 0})    # a hub of one port: frames go nowhere
    elif spec.net.tap_fd is not None:
        netdev = opts("tap", {"id": "net0", "fd": spec.net.tap_fd})
    else:
        netdev = opts("tap", {"id": "net0", "ifname": spec.net.tap, "script": "no", "downscript": "no"})
    device = {"id": "nic0", "netdev": "net0", "mac": spec.net.mac}
    if spec.machine is Machine.Q35:
        device["romfile"] = ""  # no iPXE ROM: we boot a kernel directly
    return ["-netdev", netdev, "-device", opts(_bus(spec, "virtio-net"), device)]


def _share(spec: VMSpec) -> list[str]:
    if spec.share is None:
        return []
    return [
        "-fsdev", opts("local", {"id": "share0", "path": spec.share.path, "security_model": "passthrough",
                                 "multidevs": "remap"}),
        "-device", opts(_bus(spec, "virtio-9p"), {"id": "share0dev", "fsdev": "share0",
                                                  "mount_tag": spec.share.tag}),
    ]


def _disk_ports(spec: VMSpec) -> list[str]:
    first = len(spec.pmem_hotplug) + 1      # chassis numbers after the pmem hotplug ports'
    return [arg for i in range(spec.disk_hotplug_slots) for arg in (
        "-device", opts("pcie-root-port", {"id": disk_port(i), "chassis": first + i, "slot": first + i}))]


def disk_port(index: int) -> str:
    return f"diskport{index}"


def _boot(spec: VMSpec) -> list[str]:
    if spec.kernel is None:
        return []
    argv = ["-kernel", str(spec.kernel)]
    if spec.initrd is not None:
        argv += ["-initrd", str(spec.initrd)]
    cmdline = spec.cmdline
    if spec.accel is Accel.TCG:
        cmdline = " ".join([cmdline, *tsc_params(spec.tsc_khz)]).strip()
    if cmdline:
        argv += ["-append", cmdline]
    return argv
