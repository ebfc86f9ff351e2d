"""Memory hotplug in the VM's shape: the virtio-mem device on QEMU's command line, its validation, where the
sandbox shape pins it, what keys a template, and the [hypervisor] memory keys (pure: no QEMU)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rund import config
from rund.errors import InvalidArgument
from rund.hypervisor import Accel, InvalidSpec, Machine, MemoryHotplug
from rund.hypervisor.argv import build_argv
from rund.hypervisor.layout import GiB, MiB, pmem_slot_address
from rund.hypervisor.paths import VMPaths
from rund.hypervisor.spec import PmemSlot
from rund.templates.digests import DigestCache
from rund.templates.key import template_key
from rund.templates.shape import SandboxShape, sandbox_spec
from rund.tests.test_hypervisor_argv import spec, values


@pytest.fixture
def shape(tmp_path) -> SandboxShape:
    for name in ("vmlinux", "initrd", "rootfs.erofs"):
        (tmp_path / name).write_bytes(name.encode())
    return SandboxShape(machine=Machine.Q35, accel=Accel.TCG, vcpus=1, memory_mib=256, tb_size_mib=16,
                        kernel=tmp_path / "vmlinux", initrd=tmp_path / "initrd", image=tmp_path / "rootfs.erofs",
                        image_bytes=2 * MiB, kernel_params="", rootfs_slots=1, rootfs_slot_bytes=64 * MiB,
                        tsc_khz=2_000_000)


def test_virtio_mem_device_is_pinned_starts_empty_and_counts_in_device_memory():
    rootfs = PmemSlot(Path("/img/a"), 64 * MiB, pmem_slot_address(256, 0))
    hot = MemoryHotplug(3840 * MiB, pmem_slot_address(256, 1))
    argv = build_argv(spec(Machine.Q35, pmem=(rootfs,), memory_hotplug=hot))
    assert "memory-backend-ram,id=hotmem0,size=4026531840,reserve=off" in values(argv, "-object")
    assert (f"virtio-mem-pci,id=vmem0,memdev=hotmem0,memaddr={5 * GiB},block-size=2097152,requested-size=0"
            in values(argv, "-device"))
    # maxmem: ram + the pmem slot + the whole virtio-mem region (and its region reaches the device's end).
    assert values(argv, "-m") == [f"size=256M,slots=2,maxmem={256 + 64 + 3840}M"]


def test_virtio_mem_device_starts_with_what_is_requested():
    hot = MemoryHotplug(3840 * MiB, 5 * GiB, requested_size=512 * MiB)
    argv = build_argv(spec(Machine.Q35, memory_hotplug=hot))
    assert (f"virtio-mem-pci,id=vmem0,memdev=hotmem0,memaddr={5 * GiB},block-size=2097152,"
            f"requested-size={512 * MiB}" in values(argv, "-device"))
    for bad in (MiB, 3842 * MiB, -2 * MiB):
        with pytest.raises(InvalidSpec, match="requested at start"):
            spec(Machine.Q35, memory_hotplug=replace(hot, requested_size=bad))


def test_no_hotplug_memory_no_device():
    argv = build_argv(spec(Machine.Q35))
    assert not [d for d in values(argv, "-device") if d.startswith("virtio-mem")]
    assert values(argv, "-m") == ["size=256M"]


@pytest.mark.parametrize("hot, why", [
    (MemoryHotplug(512 * MiB, 5 * GiB), None),
    (MemoryHotplug(511 * MiB, 5 * GiB), "multiple"),
    (MemoryHotplug(0, 5 * GiB), "multiple"),
    (MemoryHotplug(512 * MiB, 5 * GiB + MiB), "aligned"),
    (MemoryHotplug(512 * MiB, 2 * GiB), "aligned"),                  # below device memory
    (MemoryHotplug(512 * MiB, 4 * GiB), "overlaps"),                 # on the pmem slot
    (MemoryHotplug(512 * MiB, 6 * GiB, block_size=3 * MiB), "power of two"),
])
def test_hotplug_memory_validation(hot, why):
    kw = dict(pmem=(PmemSlot(Path("/img/a"), 64 * MiB, 4 * GiB),), memory_hotplug=hot)
    if why is None:
        spec(Machine.Q35, **kw)
        return
    with pytest.raises(InvalidSpec, match=why):
        spec(Machine.Q35, **kw)


def test_microvm_has_no_hotplug_memory():
    with pytest.raises(InvalidSpec, match="q35"):
        spec(Machine.MICROVM, memory_hotplug=MemoryHotplug(512 * MiB, 5 * GiB))


def test_sandbox_spec_pins_hotplug_memory_after_every_pmem_slot(shape, tmp_path):
    grown = replace(shape, rootfs_hotplug_slots=2, memory_hotplug_mib=1792)
    placeholder = tmp_path / "placeholder"
    s = sandbox_spec(grown, "sb", VMPaths(tmp_path / "vm"), (), placeholder)
    # pmem: OS image (0), one rootfs slot (1), two hotplug slots (2, 3): memory after them, at slot index 4.
    assert s.memory_hotplug == MemoryHotplug(1792 * MiB, pmem_slot_address(256, 4))
    assert "memhp_default_state=online_movable" in s.cmdline.split()
    fixed = sandbox_spec(shape, "sb", VMPaths(tmp_path / "vm2"), (), placeholder)
    assert fixed.memory_hotplug is None and "memhp_default_state" not in fixed.cmdline


def test_sandbox_spec_requests_the_preplugged_memory_at_start(shape, tmp_path):
    s = sandbox_spec(replace(shape, memory_hotplug_mib=1792, memory_preplug_mib=512), "sb", VMPaths(tmp_path / "vm"),
                     (), tmp_path / "placeholder")
    assert (s.memory_hotplug.size, s.memory_hotplug.requested_size) == (1792 * MiB, 512 * MiB)


def test_hotplug_memory_and_what_is_preplugged_key_the_template(shape, tmp_path):
    digests = DigestCache(tmp_path / "digests.json")
    grown = replace(shape, memory_hotplug_mib=1792)
    keys = {template_key(s, digests, warm=True).key
            for s in (shape, grown, replace(grown, memory_preplug_mib=512), replace(grown, memory_preplug_mib=256))}
    assert len(keys) == 4


@pytest.mark.parametrize("preplug, hotplug, expected", [
    (0, 3840, 0),              # the default: none
    (512, 3840, 512),
    (255, 3840, 256),          # rounded up to the block
    (512, 256, 256),           # no more than the VM can grow by
    (512, 0, 0),               # microvm: no hotplug, nothing pre-plugged
])
def test_preplugged_memory_from_config(preplug, hotplug, expected):
    assert config.preplug_mib(config.HypervisorConfig(preplug_memory_mib=preplug), hotplug) == expected


def test_config_memory_keys_and_their_checks(tmp_path):
    hv = config.Config().hypervisor
    assert (hv.memory_mib, hv.max_memory_mib, hv.default_container_memory_mib, hv.preplug_memory_mib) == (
        256, 4096, 512, 0)
    p = tmp_path / "c.toml"
    p.write_text("[hypervisor]\nmax_memory_mib = 1024\ndefault_container_memory_mib = 0\nvmm_overhead_mib = 64\n")
    got = config.load(p).hypervisor
    assert (got.max_memory_mib, got.default_container_memory_mib, got.vmm_overhead_mib) == (1024, 0, 64)
    for bad in ("max_memory_mib = 128", "max_memory_mib = 1025", "default_container_memory_mib = -1",
                "vmm_overhead_mib = -5", "max_memory_mib = 2000000", "preplug_memory_mib = -1"):
        p.write_text(f"[hypervisor]\n{bad}\n")
        with pytest.raises(InvalidArgument):
            config.load(p)

