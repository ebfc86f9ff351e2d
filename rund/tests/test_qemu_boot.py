"""Boot the real guest kernel (built by guest/) under QEMU and read its console log.

Skipped until guest/out/current holds a build. Uses the guest init's documented hook
rund.initcmd (guest/init.sh) to print a marker and power off, so QEMU exits on its own.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from rund.hypervisor import BlockDevice, Machine, PmemSlot, QemuVM, host_tsc_khz, pmem_slot_address
from rund.hypervisor.testing import VMDirs, leak_checked_dirs, minimal_spec

pytestmark = pytest.mark.vm

GUEST = Path(__file__).resolve().parents[2] / "guest" / "out" / "current"
ARTIFACTS = ("vmlinux", "initrd.cpio", "rootfs.erofs")
MARKER = "RUND-HV-BOOT-OK"


@pytest.fixture
def guest() -> Path:
    build = GUEST.resolve()  # pin one build: the symlink moves when guest/ rebuilds
    if not all((build / name).is_file() for name in ARTIFACTS):
        pytest.skip(f"no guest build in {GUEST}")
    return build


@pytest.fixture
def dirs():
    with leak_checked_dirs() as (base, _):
        yield VMDirs(base)


def boot_cmdline(root: str) -> str:
    script = base64.b64encode(f"echo {MARKER}; cat /proc/mounts; poweroff -f".encode()).decode()
    return f"console=ttyS0 panic=-1 rund.root={root} rund.initcmd={script}"


async def boot_until_poweroff(spec) -> str:
    vm = QemuVM(spec)
    await vm.start()
    try:
        assert await asyncio.wait_for(vm.wait(), 120) == 0  # the guest powered off
    finally:
        if vm.returncode is None:
            await vm.stop()
    assert not spec.runtime_dir.exists()
    return spec.console_log.read_text(errors="replace")


def test_microvm_boots_the_guest_kernel_and_logs_its_console(guest, dirs):
    spec = minimal_spec(
        dirs, Machine.MICROVM, memory_mib=256, kernel=guest / "vmlinux", initrd=guest / "initrd.cpio",
        cmdline=boot_cmdline("/dev/vda"), tsc_khz=host_tsc_khz(),
        disks=(BlockDevice(guest / "rootfs.erofs", serial="root"),),
    )
    console = asyncio.run(boot_until_poweroff(spec))
    assert "Linux version" in console
    assert "Run /init as init process" in console
    assert MARKER in console
    assert "/dev/vda / erofs ro" in console


def test_q35_mounts_the_root_from_a_pinned_pmem_slot_with_dax(guest, dirs):
    image = guest / "rootfs.erofs"
    size = image.stat().st_size
    spec = minimal_spec(
        dirs, Machine.Q35, memory_mib=256, kernel=guest / "vmlinux", initrd=guest / "initrd.cpio",
        cmdline=boot_cmdline("/dev/pmem0 rund.rootflags=dax=always"), tsc_khz=host_tsc_khz(),
        pmem=(PmemSlot(image, size, pmem_slot_address(256, 0)),),
    )
    console = asyncio.run(boot_until_poweroff(spec))
    assert MARKER in console
    assert "erofs: DAX enabled" in console
    assert "/dev/pmem0 / erofs ro" in console and "dax=always" in console
