"""QemuVM against the real qemu-system-x86_64: start, QMP, pause/resume, stop, failures, cleanup.

No guest kernel is needed: with none, QEMU runs its firmware (SeaBIOS on q35, qboot on microvm).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import pytest

from rund.hypervisor import (
    HypervisorError,
    Machine,
    PmemHotplugSlot,
    PmemSlot,
    PmemSlotMismatch,
    QemuVM,
    VMDied,
    VMNotRunning,
    VMStartError,
    pmem_slot_address,
)
from rund.hypervisor.layout import MiB
from rund.hypervisor.spec import BlockDevice
from rund.tests.test_hypervisor_spec import erofs_image
from rund.hypervisor.testing import VMDirs, leak_checked_dirs, minimal_spec, process_alive

pytestmark = pytest.mark.vm


@pytest.fixture
def dirs():
    with leak_checked_dirs() as (base, _):
        yield VMDirs(base)


def assert_nothing_left(vm: QemuVM, dirs: VMDirs) -> None:
    assert vm.pid is not None and not process_alive(vm.pid)
    assert not dirs.run.exists()  # sockets and runtime dir gone
    assert {p.name for p in dirs.base.iterdir()} <= {"console.log", "qemu.log"}


@pytest.mark.parametrize("machine", list(Machine))
def test_start_pause_resume_stop_leaves_nothing(dirs, machine):
    async def scenario():
        vm = QemuVM(minimal_spec(dirs, machine))
        await vm.start()
        assert process_alive(vm.pid)
        assert await vm.query_status() == "running"
        # Only the agent socket stays: QMP's listening path is unlinked once QEMU connected.
        assert sorted(p.name for p in dirs.run.iterdir()) == ["agent.sock"]
        assert (dirs.run.stat().st_mode & 0o777) == 0o700
        await vm.pause()
        assert await vm.query_status() == "paused"
        await vm.resume()
        assert await vm.query_status() == "running"
        assert await vm.stop() == 0
        assert vm.returncode == 0
        assert_nothing_left(vm, dirs)
        with pytest.raises(VMNotRunning):
            await vm.pause()
        assert await vm.wait() == 0  # wait() after the end keeps answering

    asyncio.run(scenario())


def test_agent_socket_accepts_a_connection(dirs):
    async def scenario():
        vm = QemuVM(minimal_spec(dirs))
        await vm.start()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(vm.agent_address.path))
        finally:
            await vm.stop()
        assert_nothing_left(vm, dirs)

    asyncio.run(scenario())


def test_bad_argument_gives_start_error_with_log_tail(dirs):
    async def scenario():
        # A disk that does not exist: QEMU prints why and exits 1.
        spec = minimal_spec(dirs, disks=(BlockDevice(dirs.base / "no-such.img"),))
        vm = QemuVM(spec)
        with pytest.raises(VMStartError) as err:
            await vm.start()
        assert "no-such.img" in err.value.log_tail
        assert "No such file" in err.value.log_tail
        assert err.value.returncode == 1
        assert_nothing_left(vm, dirs)

    asyncio.run(scenario())


def test_missing_binary_gives_start_error_and_cleans_up(dirs):
    async def scenario():
        vm = QemuVM(minimal_spec(dirs), qemu_binary=dirs.base / "no-qemu")
        with pytest.raises(VMStartError):
            await vm.start()
        assert not dirs.run.exists()

    asyncio.run(scenario())


def test_pre_exec_failure_gives_start_error(dirs):
    def refuse():
        raise OSError("cgroup full")

    async def scenario():
        vm = QemuVM(minimal_spec(dirs))
        with pytest.raises(VMStartError):
            await vm.start(pre_exec=refuse)
        assert not dirs.run.exists()

    asyncio.run(scenario())


def test_existing_runtime_dir_is_refused_and_kept(dirs):
    async def scenario():
        dirs.run.mkdir()
        (dirs.run / "someone-elses").write_text("x")
        with pytest.raises(VMStartError):
            await QemuVM(minimal_spec(dirs)).start()
        assert (dirs.run / "someone-elses").exists()

    asyncio.run(scenario())


def test_pre_exec_runs_in_the_child_and_thp_is_off(dirs):
    marker = dirs.base / "pre-exec-pid"

    def hook():
        marker.write_text(str(os.getpid()))

    async def scenario():
        vm = QemuVM(minimal_spec(dirs))
        await vm.start(pre_exec=hook)
        try:
            assert int(marker.read_text()) == vm.pid  # ran in the child, before exec
            status = Path(f"/proc/{vm.pid}/status").read_text()
            assert "THP_enabled:\t0" in status
            assert os.getsid(vm.pid) == vm.pid  # own session: a ^C to ours does not reach it
        finally:
            await vm.stop()

    asyncio.run(scenario())


def test_sigkill_is_noticed_by_wait_and_cleaned_up(dirs):
    async def scenario():
        vm = QemuVM(minimal_spec(dirs))
        await vm.start()
        os.kill(vm.pid, signal.SIGKILL)  # a crash, not a stop we asked for
        assert await asyncio.wait_for(vm.wait(), 10) == -signal.SIGKILL
        assert_nothing_left(vm, dirs)
        with pytest.raises(VMDied) as err:
            await vm.query_status()
        assert err.value.returncode == -signal.SIGKILL

    asyncio.run(scenario())


def test_death_during_a_command_raises_vmdied(dirs):
    async def scenario():
        vm = QemuVM(minimal_spec(dirs))
        await vm.start()
        os.kill(vm.pid, signal.SIGSTOP)  # the command will hang until the process dies
        query = asyncio.ensure_future(vm.query_status())
        await asyncio.sleep(0.2)
        os.kill(vm.pid, signal.SIGKILL)
        with pytest.raises(VMDied):
            await asyncio.wait_for(query, 10)
        await vm.wait()
        assert_nothing_left(vm, dirs)

    asyncio.run(scenario())


def test_stop_escalates_to_sigkill_when_qemu_does_not_answer(dirs):
    async def scenario():
        vm = QemuVM(minimal_spec(dirs))
        await vm.start()
        os.kill(vm.pid, signal.SIGSTOP)  # deaf to QMP and to SIGTERM; only SIGKILL ends it
        assert await asyncio.wait_for(vm.stop(timeout=0.3), 10) == -signal.SIGKILL
        assert_nothing_left(vm, dirs)

    asyncio.run(scenario())


def test_powerdown_without_a_guest_falls_back_to_quit(dirs):
    async def scenario():
        vm = QemuVM(minimal_spec(dirs, Machine.Q35))
        await vm.start()
        # Firmware alone ignores the ACPI button, so quit must end it.
        assert await asyncio.wait_for(vm.stop(timeout=0.5, powerdown=True), 10) == 0
        assert_nothing_left(vm, dirs)

    asyncio.run(scenario())


def test_kill_and_wait(dirs):
    async def scenario():
        vm = QemuVM(minimal_spec(dirs))
        await vm.start()
        vm.kill()
        assert await vm.wait() == -signal.SIGKILL
        assert_nothing_left(vm, dirs)
        vm.kill()  # harmless once reaped

    asyncio.run(scenario())


def test_start_twice_and_wait_before_start_are_errors(dirs):
    async def scenario():
        vm = QemuVM(minimal_spec(dirs))
        with pytest.raises(VMNotRunning):
            await vm.wait()
        await vm.start()
        try:
            with pytest.raises(HypervisorError):
                await vm.start()
        finally:
            await vm.stop()

    asyncio.run(scenario())


def test_cancelled_start_leaves_nothing(dirs):
    async def scenario():
        vm = QemuVM(minimal_spec(dirs))
        task = asyncio.ensure_future(vm.start())
        await asyncio.sleep(0.005)  # QEMU is exec'd but has not answered QMP yet
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not dirs.run.exists()
        if vm.pid is not None:
            assert not process_alive(vm.pid)

    asyncio.run(scenario())


def test_q35_pmem_slots_land_at_the_pinned_addresses(dirs):
    async def scenario():
        sizes = (64 * MiB, 32 * MiB)
        slots = []
        for i, size in enumerate(sizes):
            image = dirs.base / f"slot{i}.img"
            image.touch()
            os.truncate(image, size)  # sparse placeholder of exactly the slot size
            slots.append(PmemSlot(image, size, pmem_slot_address(64, i)))
        vm = QemuVM(minimal_spec(dirs, Machine.Q35, pmem=tuple(slots)))
        await vm.start()
        try:
            devices = await vm.execute("query-memory-devices")
        finally:
            await vm.stop()
        found = sorted((d["data"]["memaddr"], d["data"]["size"]) for d in devices if d["type"] == "virtio-pmem")
        assert found == [(s.memaddr, s.size) for s in slots]

    asyncio.run(scenario())


def test_q35_pmem_hotplug_binds_an_image_to_a_reserved_slot(dirs):
    async def scenario():
        size = 32 * MiB
        image, short = dirs.base / "hot.img", dirs.base / "short.img"
        for path, length in ((image, size), (short, size // 2)):
            path.touch()
            os.truncate(path, length)
        slot = PmemHotplugSlot(size, pmem_slot_address(64, 1))
        vm = QemuVM(minimal_spec(dirs, Machine.Q35, pmem_hotplug=(slot,)))
        await vm.start()
        try:
            with pytest.raises(PmemSlotMismatch):           # QEMU would take a wrong size silently
                await vm.hotplug_pmem(0, short)
            await vm.hotplug_pmem(0, image)
            with pytest.raises(HypervisorError):
                await vm.hotplug_pmem(1, image)             # no such slot
            devices = await vm.execute("query-memory-devices")
        finally:
            await vm.stop()
        found = [(d["data"]["memaddr"], d["data"]["size"]) for d in devices if d["type"] == "virtio-pmem"]
        assert found == [(slot.memaddr, size)]

    asyncio.run(scenario())


def test_q35_pmem_hotplug_maps_only_what_an_erofs_image_holds(dirs):
    async def scenario():
        size = 32 * MiB
        image = erofs_image(dirs.base / "hot.erofs", size, blocks=700)     # 2.7 MiB of 4 KiB blocks
        slot = PmemHotplugSlot(size, pmem_slot_address(64, 1))
        vm = QemuVM(minimal_spec(dirs, Machine.Q35, pmem_hotplug=(slot,)))
        await vm.start()
        try:
            await vm.hotplug_pmem(0, image)
            devices = await vm.execute("query-memory-devices")
        finally:
            await vm.stop()
        found = [(d["data"]["memaddr"], d["data"]["size"]) for d in devices if d["type"] == "virtio-pmem"]
        assert found == [(slot.memaddr, 4 * MiB)]

    asyncio.run(scenario())


def test_pmem_image_of_the_wrong_size_is_refused_before_exec(dirs):
    async def scenario():
        image = dirs.base / "short.img"
        image.touch()
        os.truncate(image, 2 * MiB)
        spec = minimal_spec(dirs, Machine.Q35, pmem=(PmemSlot(image, 4 * MiB, pmem_slot_address(64, 0)),))
        vm = QemuVM(spec)
        with pytest.raises(PmemSlotMismatch):
            await vm.start()
        assert vm.pid is None and not dirs.run.exists()

    asyncio.run(scenario())


@pytest.mark.parametrize("machine", list(Machine))
def test_every_device_kind_is_accepted_by_qemu(dirs, machine):
    """The argv for disks, rng and the agent port is real QEMU syntax on both machines."""

    async def scenario():
        disk = dirs.base / "disk.img"
        disk.touch()
        os.truncate(disk, 1 * MiB)
        spec = minimal_spec(dirs, machine, rng=True, disks=(BlockDevice(disk, serial="base"),))
        vm = QemuVM(spec)
        await vm.start()
        try:
            blocks = await vm.execute("query-block")
        finally:
            await vm.stop()
        assert [b["inserted"]["ro"] for b in blocks] == [True]

    asyncio.run(scenario())


OWNER = """
import asyncio, sys
sys.path.insert(0, {root!r})
from rund.hypervisor import QemuVM
from rund.hypervisor.testing import VMDirs, minimal_spec
from pathlib import Path

async def main():
    vm = QemuVM(minimal_spec(VMDirs(Path({base!r}))))
    await vm.start()
    print(vm.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_qemu_dies_with_its_owner(dirs):
    """A shim that is SIGKILLed must not leave its QEMU running (PR_SET_PDEATHSIG)."""
    import subprocess
    import sys
    import time

    root = str(Path(__file__).resolve().parents[2])
    owner = subprocess.Popen([sys.executable, "-c", OWNER.format(root=root, base=str(dirs.base))],
                             stdout=subprocess.PIPE, text=True)
    try:
        qemu_pid = int(owner.stdout.readline())
        assert process_alive(qemu_pid)
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()
    deadline = time.monotonic() + 10
    while process_alive(qemu_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(qemu_pid)
