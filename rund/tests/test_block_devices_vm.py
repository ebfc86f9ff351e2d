"""A host block device hot-plugged into a running q35 VM as a virtio-blk disk (QemuVM.hotplug_disk) and given to a
container under its spec's path with the host's numbers, which the agent maps to the guest's disk by serial: the
container reads what the host wrote and its writes reach the host device; a read-only disk refuses writes; the disk
is unplugged afterwards."""
from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from rund.agent import StdioConfig
from rund.hypervisor import Machine
from rund.runtime.block_devices import block_requests, host_device
from rund.tests.vm_factory import os_rootfs
from agent.tests.helpers import read_all, spec

pytestmark = [pytest.mark.vm, pytest.mark.root]


@pytest.fixture
def loop_device(tmp_path):
    backing = tmp_path / "disk.img"
    backing.write_bytes(b"host-wrote-this\n" + bytes(8 << 20))
    dev = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True)
    path = dev.stdout.strip()
    try:
        yield path, backing
    finally:
        subprocess.run(["losetup", "-d", path], check=False)


def container_spec(major: int, minor: int, access: str, script: str) -> dict:
    s = spec(["sh", "-c", script])
    s["linux"]["devices"] = [{"path": "/dev/xvda", "type": "b", "major": major, "minor": minor, "fileMode": 0o660}]
    s["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"},
                                           {"allow": True, "type": "b", "major": major, "minor": minor,
                                            "access": access}]}
    return s


@pytest.mark.parametrize("access", ["rwm", "r"])
def test_a_host_block_device_reaches_a_container(vm_factory, loop_device, access):
    path, backing = loop_device
    st = os.stat(path)
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    assert host_device(major, minor) == type(host_device(major, minor))(path)
    script = ("head -c 16 /dev/xvda; "
              "if echo guest-wrote-this | dd of=/dev/xvda bs=512 seek=8 conv=fsync 2>/dev/null; "
              "then echo WRITTEN; else echo REFUSED; fi")
    s = container_spec(major, minor, access, script)
    (request,) = block_requests(s)                  # as the host's guest_spec does: the serial annotation
    assert request.readonly is (access == "r")
    guest = vm_factory.booted(Machine.Q35, disk_hotplug_slots=1)

    async def run() -> bytes:
        await guest.vm.hotplug_disk(0, host_device(major, minor), request.serial, request.readonly)
        async with await guest.connect() as client:
            await client.create_container("c", s, os_rootfs(Machine.Q35), StdioConfig(stdout=True))
            await client.start_container("c")
            out = await read_all(client, "c")
            await client.wait_process("c")
            await client.remove_container("c")
        await guest.vm.unplug_disk(0)
        return out

    out = guest.call(run(), 180).decode()
    written = backing.read_bytes()[4096:4096 + 17]
    if access == "rwm":
        assert out == "host-wrote-this\nWRITTEN\n" and written == b"guest-wrote-this\n"
    else:
        assert out == "host-wrote-this\nREFUSED\n" and written == bytes(17)
    blocks = guest.call(guest.vm.execute("query-block"))
    assert not [b for b in blocks if b.get("qdev", "").startswith("hotdisk")]      # unplugged
