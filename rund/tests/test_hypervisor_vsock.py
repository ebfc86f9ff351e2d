"""Guest CID reservation for vhost-vsock. This machine has no /dev/vhost-vsock: the real path
runs only where the device exists; here the typed failure is what is checked."""

from __future__ import annotations

import asyncio
import fcntl
import struct
from pathlib import Path

import pytest

from rund.hypervisor import QemuVM, VsockChannel
from rund.hypervisor.testing import VMDirs, minimal_spec, scratch_dir
from rund.hypervisor.vsock import (
    VHOST_VSOCK_SET_GUEST_CID,
    CidUnavailable,
    reserve_guest_cid,
    vhost_vsock_available,
)

needs_vhost_vsock = pytest.mark.skipif(not vhost_vsock_available(), reason="no /dev/vhost-vsock on this host")


def test_no_device_is_a_typed_error(tmp_path):
    with pytest.raises(CidUnavailable):
        reserve_guest_cid(tmp_path / "vhost-vsock")


def test_a_device_that_refuses_the_ioctl_is_a_typed_error():
    # /dev/null opens fine but is not vhost-vsock: the ioctl fails with ENOTTY, not EADDRINUSE.
    with pytest.raises(CidUnavailable):
        reserve_guest_cid(Path("/dev/null"))


@needs_vhost_vsock
def test_reserved_cids_are_distinct_and_exclusive():
    a, b = reserve_guest_cid(), reserve_guest_cid()
    try:
        assert a.cid != b.cid
        with pytest.raises(OSError):
            fcntl.ioctl(b.fd, VHOST_VSOCK_SET_GUEST_CID, struct.pack("=Q", a.cid))
    finally:
        a.close()
        b.close()


@needs_vhost_vsock
@pytest.mark.vm
def test_qemu_takes_the_reserved_fd():
    async def scenario(dirs):
        cid = reserve_guest_cid()
        try:
            vm = QemuVM(minimal_spec(dirs, agent=VsockChannel(cid.cid, 1024, vhost_fd=cid.fd)))
            await vm.start()
            assert await vm.stop() == 0
        finally:
            cid.close()

    with scratch_dir() as base:
        asyncio.run(scenario(VMDirs(base)))
