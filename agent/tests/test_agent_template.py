"""Template save/restore with the real agent: the template's host leaves right before the save; each clone's
host connects after restore and gets a working agent (even if the guest never saw the template's host leave),
then PostRestore gives every clone its own clock and RNG state."""
import asyncio
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from rund import errors
from rund.agent import AgentClient, LayeredRootfs, StdioConfig
from rund.hypervisor import BlockDevice, FileMemory, Machine, QemuVM, host_tsc_khz
from rund.hypervisor.testing import VMDirs, leak_checked_dirs, minimal_spec

from .helpers import read_all, spec

pytestmark = pytest.mark.vm
ROOTFS = LayeredRootfs(base_device="/dev/vda", base_fstype="erofs", upper_size_bytes=8 << 20)


async def first_health(socket: Path, deadline: float) -> float:
    """Seconds until the agent behind `socket` answers Health (requests wait until the guest reads)."""
    start = time.monotonic()
    while not socket.exists():
        await asyncio.sleep(0.002)
    async with await AgentClient.connect_unix(str(socket)) as client:
        while True:
            try:
                await client.health(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
                return time.monotonic() - start
            except errors.Unavailable:
                if time.monotonic() > deadline:
                    raise


async def random_bytes(client: AgentClient, cid: str) -> bytes:
    await client.create_container(cid, spec(["head", "-c", "32", "/dev/urandom"]), ROOTFS, StdioConfig(stdout=True))
    await client.start_container(cid)
    data = await read_all(client, cid)
    await client.wait_process(cid)
    await client.remove_container(cid)
    return data


@pytest.fixture
def work():
    with leak_checked_dirs(with_shm=True) as (base, shm):
        yield base, shm


def test_clones_of_a_template_serve_and_diverge(work):
    from guest.build import ensure_built
    art = ensure_built()
    base, shm = work
    for d in ("t", "c1", "c2"):
        (base / d).mkdir()
    template = minimal_spec(
        VMDirs(base / "t"), Machine.MICROVM, name="template", memory_mib=256, kernel=art.vmlinux,
        initrd=art.initrd, cmdline="console=ttyS0 quiet panic=-1 rund.root=/dev/vda", tsc_khz=host_tsc_khz(),
        disks=(BlockDevice(art.rootfs, serial="root"),), memory=FileMemory(shm / "template.mem", shared=True))
    state = base / "template.state"

    def clone_spec(name: str):
        dirs = VMDirs(base / name)
        return replace(template, name=name, runtime_dir=dirs.run, console_log=dirs.console_log,
                       qemu_log=dirs.qemu_log, memory=FileMemory(shm / "template.mem", shared=False),
                       incoming_defer=True)

    async def scenario():
        vm = QemuVM(template)
        await vm.start()
        try:
            await first_health(template.agent_socket, time.monotonic() + 240)
            async with await AgentClient.connect_unix(str(template.agent_socket)) as client:
                await random_bytes(client, "warm")  # the template has created a container once
            await vm.save_state(state)  # right after the host left: the guest may not have noticed
        finally:
            await vm.stop()

        clones, samples = [], []
        try:
            for name in ("c1", "c2"):
                clone = QemuVM(clone_spec(name))
                clones.append(clone)
                await clone.start()
                started = time.monotonic()
                await clone.restore_state(state)
                await first_health(clone.spec.agent_socket, time.monotonic() + 30)
                print(f"{name}: restore -> first Health {time.monotonic() - started:.3f} s")
                async with await AgentClient.connect_unix(str(clone.spec.agent_socket), timeout=60) as client:
                    await client.post_restore(time.time_ns(), os.urandom(64), hostname=name)
                    samples.append(await random_bytes(client, "rng"))
        finally:
            for clone in clones:
                await clone.stop()
        assert len(samples) == 2 and all(len(s) == 32 for s in samples)
        assert samples[0] != samples[1]

    asyncio.run(scenario())
