"""VMSpec validation: shapes QEMU would refuse, or accept and then get wrong, fail early and typed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rund.hypervisor.errors import HypervisorError, InvalidSpec, PmemSlotMismatch
from rund.hypervisor.layout import GiB, MiB, pmem_slot_address, q35_device_memory_base
from rund.hypervisor.pmem import EROFS_MAGIC, check_pmem_images, mapped_size
from rund.hypervisor.spec import (
    Accel,
    BlockDevice,
    Machine,
    PmemSlot,
    SerialChannel,
    SerialSocketAddress,
    TapNetwork,
    VMSpec,
    VsockAddress,
    VsockChannel,
)


def make(**kw) -> VMSpec:
    base = dict(
        name="vm1", machine=Machine.Q35, accel=Accel.TCG, vcpus=1, memory_mib=256,
        runtime_dir=Path("/run/rund/vm1"), console_log=Path("/var/log/c"), qemu_log=Path("/var/log/q"),
    )
    base.update(kw)
    return VMSpec(**base)


def slot(index: int, size: int = 64 * MiB, memory_mib: int = 256) -> PmemSlot:
    return PmemSlot(Path(f"/img/{index}"), size, pmem_slot_address(memory_mib, index))


@pytest.mark.parametrize("kw", [
    dict(name="has,comma"),
    dict(name=""),
    dict(vcpus=0),
    dict(memory_mib=8),
    dict(tb_size_mib=0),
    dict(runtime_dir=Path("relative")),
    dict(runtime_dir=Path("/" + "x" * 100)),  # agent.sock would not fit in sun_path
    dict(console_log=Path("/run/rund/vm1/console.log")),  # would be deleted with the runtime dir
    dict(initrd=Path("/k/initrd")),  # initrd without a kernel
    dict(cmdline="quiet"),
    dict(kernel=Path("/k/vmlinux")),  # TCG boot without tsc_khz hangs at random
    dict(machine=Machine.MICROVM, pmem=(slot(0),)),  # microvm cannot map pmem
    dict(pmem=(PmemSlot(Path("/i"), 3 * MiB, pmem_slot_address(256, 0)),)),  # not 2 MiB multiple
    dict(pmem=(PmemSlot(Path("/i"), 2 * GiB, pmem_slot_address(256, 0)),)),  # larger than the stride
    dict(pmem=(PmemSlot(Path("/i"), 64 * MiB, 4 * GiB + 4096),)),  # unaligned
    dict(pmem=(PmemSlot(Path("/i"), 64 * MiB, 3 * GiB),)),  # below device memory
    dict(pmem=(PmemSlot(Path("/a"), 64 * MiB, 4 * GiB), PmemSlot(Path("/b"), 64 * MiB, 4 * GiB + 32 * MiB))),
    dict(agent=VsockChannel(guest_cid=2, port=1024)),  # CID 2 is the host
    dict(agent=SerialChannel(port_name="bad,name")),
    dict(net=TapNetwork(tap="tap0", mac="52:54:00:12:34")),
    dict(net=TapNetwork(tap="a-very-long-tap-name", mac="52:54:00:12:34:56")),
    dict(disks=(BlockDevice(Path("/i"), serial="x" * 21),)),
])
def test_invalid_specs_are_rejected(kw):
    with pytest.raises(InvalidSpec):
        make(**kw)


def test_invalid_spec_is_a_hypervisor_error_and_a_value_error():
    assert issubclass(InvalidSpec, HypervisorError) and issubclass(InvalidSpec, ValueError)


def test_valid_spec_and_derived_paths():
    s = make(kernel=Path("/k"), tsc_khz=2_300_000, pmem=(slot(0), slot(1)), agent=SerialChannel())
    assert s.qmp_socket == Path("/run/rund/vm1/qmp.sock")
    assert s.agent_address == SerialSocketAddress(Path("/run/rund/vm1/agent.sock"))
    assert make(agent=VsockChannel(guest_cid=99, port=1024)).agent_address == VsockAddress(99, 1024)
    assert make().agent_address is None
    assert make(accel=Accel.KVM, kernel=Path("/k")).tsc_khz is None  # KVM needs no TSC hint


def test_q35_device_memory_base_follows_the_ram_split():
    assert q35_device_memory_base(256 * MiB) == 4 * GiB
    assert q35_device_memory_base(2 * GiB) == 4 * GiB
    # >= 2.75 GiB: 2 GiB stay below 4G, the rest moves above it and pushes the region up.
    assert q35_device_memory_base(3 * GiB) == 5 * GiB
    assert q35_device_memory_base(8 * GiB) == 10 * GiB
    assert pmem_slot_address(8192, 2) == 12 * GiB


def test_pmem_images_must_be_exactly_the_slot_size(tmp_path):
    exact = tmp_path / "exact"
    exact.write_bytes(b"")
    os.truncate(exact, 2 * MiB)
    check_pmem_images((PmemSlot(exact, 2 * MiB, 4 * GiB),))
    bigger = tmp_path / "bigger"
    bigger.write_bytes(b"")
    os.truncate(bigger, 4 * MiB)
    with pytest.raises(PmemSlotMismatch):
        check_pmem_images((PmemSlot(bigger, 2 * MiB, 4 * GiB),))
    with pytest.raises(PmemSlotMismatch):
        check_pmem_images((PmemSlot(tmp_path / "missing", 2 * MiB, 4 * GiB),))


def erofs_image(path: Path, slot_size: int, blocks: int, blkszbits: int = 12) -> Path:
    """A slot-sized file whose superblock says the erofs image is `blocks` blocks long."""
    sb = bytearray(40)
    sb[0:4] = EROFS_MAGIC.to_bytes(4, "little")
    sb[12] = blkszbits
    sb[36:40] = blocks.to_bytes(4, "little")
    with open(path, "wb") as f:
        f.seek(1024)
        f.write(sb)
    os.truncate(path, slot_size)
    return path


@pytest.mark.parametrize("blocks, expected", [
    (2, 2 * MiB),                   # a tiny image: one 2 MiB step
    (512, 2 * MiB),                 # exactly 2 MiB
    (513, 4 * MiB),                 # a block more: the next step
    (200_000, 512 * MiB),           # claims more than the slot: the slot
])
def test_a_hotplugged_erofs_image_maps_what_its_superblock_counts(tmp_path, blocks, expected):
    assert mapped_size(erofs_image(tmp_path / "img", 512 * MiB, blocks), 512 * MiB) == expected


def test_anything_but_an_erofs_image_maps_the_whole_slot(tmp_path):
    zeros = tmp_path / "zeros"
    zeros.write_bytes(b"")
    os.truncate(zeros, 32 * MiB)
    assert mapped_size(zeros, 32 * MiB) == 32 * MiB
    assert mapped_size(tmp_path / "missing", 32 * MiB) == 32 * MiB
