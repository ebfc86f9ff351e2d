"""virtio-net on a tap, both ways the network code may hand it over: by name, or as an open fd.

Transient taps only (no `ip tuntap add`): each disappears when its last fd closes, so the test
leaves no interface behind even if it fails.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
from pathlib import Path

import pytest

from rund.hypervisor import Machine, QemuVM, TapNetwork
from rund.hypervisor.testing import VMDirs, leak_checked_dirs, minimal_spec

pytestmark = [pytest.mark.vm, pytest.mark.root]

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAC = "52:54:00:ab:cd:ef"


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


@pytest.fixture
def dirs():
    if os.geteuid() != 0:
        pytest.skip("needs root for /dev/net/tun")
    with leak_checked_dirs() as (base, _):
        yield VMDirs(base)


async def run_with_net(dirs: VMDirs, machine: Machine, net: TapNetwork) -> None:
    vm = QemuVM(minimal_spec(dirs, machine, net=net))
    await vm.start()
    try:
        assert Path(f"/sys/class/net/{net.tap}").exists()
        filters = await vm.execute("query-rx-filter")
        assert [f["main-mac"] for f in filters] == [MAC]
    finally:
        await vm.stop()


@pytest.mark.parametrize("machine", list(Machine))
def test_tap_by_name(dirs, machine):
    tap = f"rhvn{os.getpid() % 100000}"
    asyncio.run(run_with_net(dirs, machine, TapNetwork(tap=tap, mac=MAC)))
    assert not Path(f"/sys/class/net/{tap}").exists()  # QEMU's transient tap went with it


def test_tap_by_fd(dirs):
    tap = f"rhvf{os.getpid() % 100000}"
    fd = open_tap(tap)
    try:
        asyncio.run(run_with_net(dirs, Machine.Q35, TapNetwork(tap=tap, mac=MAC, tap_fd=fd)))
    finally:
        os.close(fd)
    assert not Path(f"/sys/class/net/{tap}").exists()
