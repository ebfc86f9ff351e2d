"""The host's process state machine: one transition table decides which verb applies in which state."""
import asyncio

import pytest

from rund.errors import FailedPrecondition
from rund.runtime.process import TRANSITIONS, Exit, Process, Status, Stdio, Verb


def process() -> Process:
    return Process("c1", "", Stdio())


def test_the_table_is_the_documented_lifecycle():
    reachable = {(s.value, v.value, t.value) for (s, v), t in TRANSITIONS.items()}
    assert reachable == {
        ("created", "start", "running"), ("running", "pause", "paused"), ("paused", "resume", "running"),
        ("created", "exit", "stopped"), ("running", "exit", "stopped"), ("paused", "exit", "stopped"),
        ("created", "delete", "deleted"), ("stopped", "delete", "deleted"),
    }


def test_a_running_process_cannot_be_deleted_and_is_told_to_kill_first():
    p = process()
    p.mark_started(7)
    with pytest.raises(FailedPrecondition, match="is running, cannot delete; kill it first"):
        p.mark_deleted()
    with pytest.raises(FailedPrecondition, match="cannot start"):
        p.mark_started(8)


def test_pause_resume_and_an_exit_while_paused():
    p = process()
    p.mark_started(7)
    p.mark_paused()
    assert p.status is Status.PAUSED
    with pytest.raises(FailedPrecondition):
        p.check_running("exec")
    p.mark_resumed()
    p.mark_paused()
    assert p.mark_exited(Exit.now(255)) and p.status is Status.STOPPED
    assert not p.mark_exited(Exit.now(0))          # the first exit is the exit
    p.mark_deleted()
    assert p.status is Status.DELETED and p.exit.status == 255


def test_pause_and_resume_leave_processes_they_do_not_apply_to():
    p = process()
    p.mark_paused()                                # a created process is not paused with its VM's vCPUs
    assert p.status is Status.CREATED
    assert not p.can(Verb.RESUME)


def test_a_process_whose_start_failed_has_exited_and_its_waiters_return():
    async def scenario():
        p = process()
        waiter = asyncio.ensure_future(p.wait())
        await asyncio.sleep(0)
        assert p.mark_exited(Exit.now(255))
        assert (await waiter).status == 255
        with pytest.raises(FailedPrecondition, match="stopped, cannot start"):
            p.mark_started(1)
    asyncio.run(scenario())


def test_deleting_a_created_process_releases_its_waiters():
    async def scenario():
        p = process()
        waiter = asyncio.ensure_future(p.wait())
        await asyncio.sleep(0)
        p.mark_deleted()
        assert (await waiter).status == 0
    asyncio.run(scenario())
