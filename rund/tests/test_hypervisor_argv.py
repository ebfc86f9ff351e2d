"""build_argv: the QEMU command line for each machine, accelerator and device (pure, no QEMU)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rund.hypervisor.argv import build_argv, opts
from rund.hypervisor.layout import GiB, MiB, pmem_slot_address
from rund.hypervisor.spec import (
    Accel,
    BlockDevice,
    FileMemory,
    Machine,
    PmemHotplugSlot,
    PmemSlot,
    SerialChannel,
    PodNic,
    TapNetwork,
    VMSpec,
    VsockChannel,
)

RUN = Path("/run/rund/sb1")


def spec(machine: Machine = Machine.MICROVM, **kw) -> VMSpec:
    base = dict(
        name="sb1", machine=machine, accel=Accel.TCG, vcpus=2, memory_mib=256, runtime_dir=RUN,
        console_log=Path("/var/log/rund/sb1.console"), qemu_log=Path("/var/log/rund/sb1.qemu"),
        agent=SerialChannel(),
    )
    base.update(kw)
    return VMSpec(**base)


def values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_microvm_machine_has_acpi_rtc_and_the_cheap_timers_off():
    argv = build_argv(spec(), "/usr/bin/qemu-system-x86_64")
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert values(argv, "-machine") == [
        "microvm,acpi=on,pcie=off,rtc=on,isa-serial=on,pit=off,pic=off,memory-backend=mem"
    ]
    assert "virtio-mmio.force-legacy=false" in values(argv, "-global")
    for flag in ("-nodefaults", "-no-user-config", "-no-reboot"):
        assert flag in argv
    assert values(argv, "-display") == ["none"]


def test_q35_machine_uses_pci_devices_and_no_mmio_global():
    argv = build_argv(spec(Machine.Q35))
    assert values(argv, "-machine") == ["q35,memory-backend=mem,sata=off,smbus=off,vmport=off"]
    assert values(argv, "-global") == []
    devices = values(argv, "-device")
    assert "virtio-serial-pci,id=vs0,max_ports=2" in devices
    assert not any(d.endswith("-device") or "-device," in d for d in devices)


def test_tcg_gets_the_reliability_flags():
    s = spec(kernel=Path("/k/vmlinux"), cmdline="console=ttyS0 quiet", tsc_khz=2299998, tb_size_mib=4)
    argv = build_argv(s)
    assert values(argv, "-accel") == ["tcg,tb-size=4"]
    assert values(argv, "-cpu") == ["qemu64,+arat"]
    assert values(argv, "-append") == ["console=ttyS0 quiet tsc_early_khz=2299998 tsc=reliable"]
    assert values(argv, "-smp") == ["2"]


def test_kvm_uses_host_cpu_and_no_tcg_flags():
    s = spec(accel=Accel.KVM, kernel=Path("/k/vmlinux"), cmdline="console=ttyS0")
    argv = build_argv(s)
    assert values(argv, "-accel") == ["kvm"]
    assert values(argv, "-cpu") == ["host"]
    assert values(argv, "-append") == ["console=ttyS0"]
    assert not any("tsc_early_khz" in a or "tb-size" in a for a in argv)


def test_kernel_initrd_and_no_kernel():
    argv = build_argv(spec(kernel=Path("/k/vmlinux"), initrd=Path("/k/initrd"), tsc_khz=1000))
    assert values(argv, "-kernel") == ["/k/vmlinux"]
    assert values(argv, "-initrd") == ["/k/initrd"]
    bare = build_argv(spec())
    assert not {"-kernel", "-initrd", "-append"} & set(bare)


def test_console_goes_to_a_file_and_qmp_connects_to_the_driver():
    argv = build_argv(spec())
    chardevs = values(argv, "-chardev")
    assert "file,id=console,path=/var/log/rund/sb1.console" in chardevs
    assert values(argv, "-serial") == ["chardev:console"]
    assert "socket,id=qmp,path=/run/rund/sb1/qmp.sock,server=off" in chardevs
    assert values(argv, "-mon") == ["chardev=qmp,mode=control"]


def test_agent_on_virtio_serial_per_machine():
    for machine, bus in ((Machine.MICROVM, "virtio-serial-device"), (Machine.Q35, "virtio-serial-pci")):
        argv = build_argv(spec(machine))
        assert "socket,id=agent,path=/run/rund/sb1/agent.sock,server=on,wait=off" in values(argv, "-chardev")
        # max_ports=2: port 0 (a console's, unused) and the agent's, not QEMU's 31 (~0.4 MiB of QEMU's heap)
        assert values(argv, "-device")[:2] == [f"{bus},id=vs0,max_ports=2",
                                               "virtserialport,bus=vs0.0,chardev=agent,name=agent"]


def test_agent_on_vhost_vsock_with_cid_and_optional_fd():
    argv = build_argv(spec(agent=VsockChannel(guest_cid=1234, port=1024)))
    assert values(argv, "-device") == ["vhost-vsock-device,id=vsock0,guest-cid=1234"]
    argv = build_argv(spec(Machine.Q35, agent=VsockChannel(guest_cid=7, port=1024, vhost_fd=9)))
    assert values(argv, "-device") == ["vhost-vsock-pci,id=vsock0,guest-cid=7,vhostfd=9"]
    assert not any("agent" in c for c in values(argv, "-chardev"))


def test_no_agent_channel():
    argv = build_argv(spec(agent=None))
    assert values(argv, "-device") == []


def test_anonymous_and_file_memory_backends():
    assert values(build_argv(spec()), "-object") == ["memory-backend-ram,id=mem,size=256M"]
    assert values(build_argv(spec()), "-m") == ["size=256M"]
    tmpl = build_argv(spec(memory=FileMemory(Path("/dev/shm/t.mem"), shared=True)))
    assert values(tmpl, "-object") == ["memory-backend-file,id=mem,size=256M,mem-path=/dev/shm/t.mem,share=on"]
    clone = build_argv(spec(memory=FileMemory(Path("/dev/shm/t.mem"), shared=False)))
    assert values(clone, "-object") == ["memory-backend-file,id=mem,size=256M,mem-path=/dev/shm/t.mem,share=off"]


def test_pmem_slots_are_pinned_and_maxmem_covers_them():
    s0 = PmemSlot(Path("/img/a.erofs"), 64 * MiB, pmem_slot_address(256, 0))
    s1 = PmemSlot(Path("/img/b.erofs"), 128 * MiB, pmem_slot_address(256, 1))
    argv = build_argv(spec(Machine.Q35, pmem=(s0, s1)))
    # Device memory starts at 4 GiB for small guests; slots 1 GiB apart; maxmem >= ram + both slots.
    assert s0.memaddr == 4 * GiB and s1.memaddr == 5 * GiB
    assert values(argv, "-m") == ["size=256M,slots=2,maxmem=448M"]
    objects = values(argv, "-object")
    assert "memory-backend-file,id=pmem0,mem-path=/img/a.erofs,size=67108864,share=on,readonly=on" in objects
    assert "memory-backend-file,id=pmem1,mem-path=/img/b.erofs,size=134217728,share=on,readonly=on" in objects
    devices = values(argv, "-device")
    assert f"virtio-pmem-pci,id=vpmem0,memdev=pmem0,memaddr={4 * GiB}" in devices
    assert f"virtio-pmem-pci,id=vpmem1,memdev=pmem1,memaddr={5 * GiB}" in devices


def test_pmem_sparse_high_slot_stretches_maxmem_to_reach_it():
    # One small slot pinned at base + 3 GiB: the region (maxmem - ram + 1 GiB/slot) must reach its end.
    slot = PmemSlot(Path("/img/a"), 2 * MiB, pmem_slot_address(256, 3))
    argv = build_argv(spec(Machine.Q35, pmem=(slot,)))
    assert values(argv, "-m") == [f"size=256M,slots=1,maxmem={256 + 2 * 1024 + 2}M"]


def test_pmem_hotplug_slots_get_root_ports_and_count_in_device_memory():
    s0 = PmemSlot(Path("/img/a"), 64 * MiB, pmem_slot_address(256, 0))
    hot = (PmemHotplugSlot(128 * MiB, pmem_slot_address(256, 1)), PmemHotplugSlot(128 * MiB, pmem_slot_address(256, 2)))
    argv = build_argv(spec(Machine.Q35, pmem=(s0,), pmem_hotplug=hot))
    assert values(argv, "-m") == ["size=256M,slots=3,maxmem=576M"]    # ram + every slot, plugged or not
    devices = values(argv, "-device")
    assert "pcie-root-port,id=hotplug0,chassis=1,slot=1" in devices
    assert "pcie-root-port,id=hotplug1,chassis=2,slot=2" in devices
    assert not [d for d in devices if d.startswith("virtio-pmem-pci,id=vpmem1")]   # nothing plugged yet


def test_writable_pmem_drops_readonly():
    slot = PmemSlot(Path("/img/a"), 2 * MiB, pmem_slot_address(256, 0), readonly=False)
    objects = values(build_argv(spec(Machine.Q35, pmem=(slot,))), "-object")
    assert "memory-backend-file,id=pmem0,mem-path=/img/a,size=2097152,share=on,readonly=off" in objects


def test_read_only_disks_per_machine():
    disks = (BlockDevice(Path("/img/base.erofs"), serial="base"), BlockDevice(Path("/img/x")))
    for machine, dev in ((Machine.MICROVM, "virtio-blk-device"), (Machine.Q35, "virtio-blk-pci")):
        argv = build_argv(spec(machine, disks=disks))
        assert values(argv, "-blockdev") == [
            "node-name=disk0,driver=raw,read-only=on,file.driver=file,file.filename=/img/base.erofs",
            "node-name=disk1,driver=raw,read-only=on,file.driver=file,file.filename=/img/x",
        ]
        devices = values(argv, "-device")
        assert f"{dev},id=vd0,drive=disk0,serial=base" in devices
        assert f"{dev},id=vd1,drive=disk1" in devices


def test_rng_and_net():
    net = TapNetwork(tap="tap0", mac="52:54:00:12:34:56")
    argv = build_argv(spec(rng=True, net=net))
    assert "rng-random,id=rng0,filename=/dev/urandom" in values(argv, "-object")
    assert "virtio-rng-device,id=rng-dev0,rng=rng0" in values(argv, "-device")
    assert values(argv, "-netdev") == ["tap,id=net0,ifname=tap0,script=no,downscript=no"]
    assert "virtio-net-device,id=nic0,netdev=net0,mac=52:54:00:12:34:56" in values(argv, "-device")
    q35 = build_argv(spec(Machine.Q35, net=replace(net, tap_fd=11)))
    assert values(q35, "-netdev") == ["tap,id=net0,fd=11"]
    assert "virtio-net-pci,id=nic0,netdev=net0,mac=52:54:00:12:34:56,romfile=" in values(q35, "-device")


def test_a_pod_nic_is_a_tap_fd_or_a_hub_of_one_port():
    unconnected = build_argv(spec(Machine.Q35, net=PodNic("02:00:00:00:00:01")))
    assert values(unconnected, "-netdev") == ["hubport,id=net0,hubid=0"]
    assert "virtio-net-pci,id=nic0,netdev=net0,mac=02:00:00:00:00:01,romfile=" in values(unconnected, "-device")
    tap = build_argv(spec(net=PodNic("02:00:00:00:00:01", tap_fd=9)))
    assert values(tap, "-netdev") == ["tap,id=net0,fd=9"]     # vnet headers: as the tap was opened (none)
    assert "virtio-net-device,id=nic0,netdev=net0,mac=02:00:00:00:00:01" in values(tap, "-device")


def test_clone_flags_incoming_defer_shared_off_no_kernel():
    clone = spec(memory=FileMemory(Path("/dev/shm/t.mem"), shared=False), incoming_defer=True)
    argv = build_argv(clone)
    assert argv[-2:] == ["-incoming", "defer"]
    assert "-kernel" not in argv
    assert "-incoming" not in build_argv(spec())


def test_template_and_clone_declare_identical_devices():
    """Only memory sharing, paths and -incoming may differ, or the state will not load."""
    tmpl = spec(Machine.Q35, kernel=Path("/k"), tsc_khz=1, rng=True,
                memory=FileMemory(Path("/dev/shm/t.mem"), shared=True))
    clone = replace(tmpl, kernel=None, tsc_khz=None, incoming_defer=True, runtime_dir=Path("/run/rund/c1"),
                    memory=FileMemory(Path("/dev/shm/t.mem"), shared=False))
    for flag in ("-machine", "-device", "-accel", "-cpu", "-smp", "-m"):
        assert values(build_argv(tmpl), flag) == values(build_argv(clone), flag)


def test_commas_in_paths_are_escaped():
    argv = build_argv(spec(disks=(BlockDevice(Path("/img/a,b")),), console_log=Path("/log/c,1")))
    assert "file,id=console,path=/log/c,,1" in values(argv, "-chardev")
    assert "file.filename=/img/a,,b" in values(argv, "-blockdev")[0]


def test_opts_helper():
    assert opts("x", {"a": True, "b": False, "c": None, "d": 3, "e": Path("/p")}) == "x,a=on,b=off,d=3,e=/p"
    assert opts(None, {"k": "v,w"}) == "k=v,,w"


def test_build_argv_is_deterministic():
    s = spec(Machine.Q35, rng=True, disks=(BlockDevice(Path("/a")),))
    assert build_argv(s) == build_argv(s)


@pytest.mark.parametrize("machine", list(Machine))
def test_every_flag_has_a_value_or_is_a_switch(machine):
    switches = {"-nodefaults", "-no-user-config", "-no-reboot"}
    argv = build_argv(spec(machine, rng=True, kernel=Path("/k"), tsc_khz=1))[1:]
    i = 0
    while i < len(argv):
        assert argv[i].startswith("-"), argv[i]
        i += 1 if argv[i] in switches else 2


@pytest.mark.parametrize("machine", [Machine.Q35, Machine.MICROVM])
def test_mem_merge_off_leaves_guest_ram_out_of_ksm(machine):
    on = values(build_argv(spec(machine=machine)), "-machine")[0]
    off = values(build_argv(spec(machine=machine, mem_merge=False)), "-machine")[0]
    assert "mem-merge" not in on                     # QEMU's default (on) stays implicit
    assert off == on + ",mem-merge=off"
