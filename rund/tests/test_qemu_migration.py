"""Template primitives against real QEMU: save_state, then restore into a second QEMU started
with incoming_defer. Works without a guest OS: the firmware's RAM and device state migrate.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from rund.hypervisor import FileMemory, HypervisorError, Machine, MigrationError, QemuVM
from rund.hypervisor.testing import VMDirs, leak_checked_dirs, minimal_spec, process_alive

pytestmark = pytest.mark.vm


@pytest.fixture
def work():
    """A dir for logs and state on /tmp and one for template RAM on tmpfs, as templates use them."""
    with leak_checked_dirs(with_shm=True) as (base, shm):
        yield base, shm


def template_and_clone_specs(base, shm, machine, **kw):
    ram = shm / "template.mem"
    tdirs, cdirs = VMDirs(base / "t"), VMDirs(base / "c")
    tdirs.base.mkdir()
    cdirs.base.mkdir()
    template = minimal_spec(tdirs, machine, name="template", memory=FileMemory(ram, shared=True), **kw)
    clone = replace(template, name="clone", runtime_dir=cdirs.run, console_log=cdirs.console_log,
                    qemu_log=cdirs.qemu_log, memory=FileMemory(ram, shared=False), incoming_defer=True)
    return template, clone


async def save_template(template, state) -> None:
    vm = QemuVM(template)
    await vm.start()
    try:
        await asyncio.sleep(0.3)  # let the firmware run and dirty its RAM
        await vm.save_state(state)
        assert await vm.query_status() == "postmigrate"  # saved and paused, never to run on
    finally:
        await vm.stop()


@pytest.mark.parametrize("machine", list(Machine))
def test_save_then_restore_into_a_clone(work, machine):
    base, shm = work

    async def scenario():
        template, clone_spec = template_and_clone_specs(base, shm, machine)
        state = base / "template.state"
        await save_template(template, state)
        # x-ignore-shared: RAM stays in the shm file, the state file holds only device state.
        assert 0 < state.stat().st_size < 2 * 1024 * 1024
        assert (shm / "template.mem").stat().st_size == template.memory_mib * 1024 * 1024

        clone = QemuVM(clone_spec)
        await clone.start()
        try:
            assert await clone.query_status() == "inmigrate"
            await clone.restore_state(state)
            assert await clone.query_status() == "running"
            info = await clone.execute("query-migrate")
            assert info["status"] == "completed"
        finally:
            assert await clone.stop() == 0
        assert not clone_spec.runtime_dir.exists()

    asyncio.run(scenario())


def test_two_clones_restore_from_one_template_at_once(work):
    base, shm = work

    async def scenario():
        template, clone_spec = template_and_clone_specs(base, shm, Machine.MICROVM)
        state = base / "template.state"
        await save_template(template, state)
        specs = [replace(clone_spec, name=f"clone{i}", runtime_dir=base / f"run{i}") for i in range(2)]
        clones = [QemuVM(s) for s in specs]
        try:
            await asyncio.gather(*(c.start() for c in clones))
            await asyncio.gather(*(c.restore_state(state) for c in clones))
            assert [await c.query_status() for c in clones] == ["running", "running"]
        finally:
            await asyncio.gather(*(c.stop() for c in clones if c.pid is not None))

    asyncio.run(scenario())


def test_restore_of_a_mismatched_state_fails_typed_and_cleans_up(work):
    base, shm = work

    async def scenario():
        template, clone_spec = template_and_clone_specs(base, shm, Machine.MICROVM)
        state = base / "template.state"
        await save_template(template, state)
        # Different RAM size than the stream: QEMU refuses the load and exits.
        bad = replace(clone_spec, memory_mib=template.memory_mib * 2, memory=FileMemory(shm / "other.mem", False))
        clone = QemuVM(bad)
        await clone.start()
        with pytest.raises(MigrationError) as err:
            await clone.restore_state(state)
        assert err.value.status == "failed"
        assert "load of migration failed" in err.value.description
        assert await asyncio.wait_for(clone.wait(), 10) != 0
        assert not process_alive(clone.pid) and not bad.runtime_dir.exists()

    asyncio.run(scenario())


def test_restore_of_a_missing_file_is_refused_and_the_clone_lives_on(work):
    base, shm = work

    async def scenario():
        _, clone_spec = template_and_clone_specs(base, shm, Machine.MICROVM)
        clone = QemuVM(clone_spec)
        await clone.start()
        try:
            with pytest.raises(MigrationError) as err:
                await clone.restore_state(base / "missing.state")
            assert err.value.status == "refused"
            assert await clone.query_status() == "inmigrate"
        finally:
            await clone.stop()

    asyncio.run(scenario())


def test_restore_needs_incoming_defer(work):
    base, _ = work

    async def scenario():
        vm = QemuVM(minimal_spec(VMDirs(base)))
        await vm.start()
        try:
            with pytest.raises(HypervisorError):
                await vm.restore_state(base / "any.state")
        finally:
            await vm.stop()

    asyncio.run(scenario())


def test_save_to_an_unwritable_place_fails_and_leaves_no_partial_file(work):
    base, _ = work

    async def scenario():
        vm = QemuVM(minimal_spec(VMDirs(base)))
        await vm.start()
        try:
            with pytest.raises(OSError):
                await vm.save_state(base / "no-such-dir" / "state")
        finally:
            await vm.stop()

    asyncio.run(scenario())


def test_refused_migration_is_typed_and_leaves_no_partial_file(work):
    base, shm = work

    async def scenario():
        _, clone_spec = template_and_clone_specs(base, shm, Machine.MICROVM)
        vm = QemuVM(clone_spec)  # still waiting for its own incoming state: QEMU refuses to migrate out
        await vm.start()
        try:
            with pytest.raises(MigrationError) as err:
                await vm.save_state(base / "out.state")
            assert err.value.status == "refused"
            assert not (base / "out.state").exists()
        finally:
            await vm.stop()

    asyncio.run(scenario())


def test_a_migration_that_does_not_finish_in_time_is_cancelled(work):
    base, _ = work

    async def scenario():
        # 1 GiB of anonymous RAM has to go into the stream (no shared file to skip), and a
        # 1 ms deadline cannot be met: the save must end typed, cancelled, with no partial file.
        vm = QemuVM(minimal_spec(VMDirs(base), memory_mib=1024), migration_timeout=0.001)
        await vm.start()
        try:
            with pytest.raises(MigrationError) as err:
                await vm.save_state(base / "slow.state")
            assert err.value.status == "timeout"
            assert not (base / "slow.state").exists()
            assert (await vm.execute("query-migrate"))["status"] in ("cancelling", "cancelled")
        finally:
            await vm.stop()

    asyncio.run(scenario())
