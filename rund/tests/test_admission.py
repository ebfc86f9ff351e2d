"""Node-wide admission: N slots held with flock(2) across processes; waiters wait their turn, bounded."""
import asyncio
import fcntl
import os

import pytest

from rund.errors import ResourceExhausted
from rund.runtime.admission import Admission, slot_count


async def test_at_most_n_hold_a_slot_and_the_rest_wait_their_turn(tmp_path):
    admission = Admission(tmp_path, slots=2, max_wait_s=10)
    inside, most = 0, 0

    async def work():
        nonlocal inside, most
        async with admission.slot():
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.05)
            inside -= 1

    await asyncio.gather(*(work() for _ in range(7)))
    assert most == 2


async def test_waiting_is_bounded(tmp_path):
    admission = Admission(tmp_path, slots=1, max_wait_s=0.2)
    async with admission.slot():
        with pytest.raises(ResourceExhausted, match="max_starts"):
            async with admission.slot():
                pass


async def test_a_dead_holders_slot_is_free_again(tmp_path):
    admission = Admission(tmp_path, slots=1, max_wait_s=5)
    (tmp_path / "slot-0").touch()
    taken_r, taken_w = os.pipe()
    die_r, die_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                     # another shim takes the slot, then dies holding it
        fd = os.open(tmp_path / "slot-0", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(taken_w, b"x")
        os.read(die_r, 1)
        os._exit(0)
    os.read(taken_r, 1)
    with pytest.raises(ResourceExhausted):
        async with Admission(tmp_path, slots=1, max_wait_s=0.1).slot():
            pass
    os.write(die_w, b"x")
    os.waitpid(pid, 0)
    for fd in (taken_r, taken_w, die_r, die_w):
        os.close(fd)
    async with admission.slot() as number:
        assert number == 0


def test_zero_means_one_slot_per_cpu():
    assert slot_count(0) == os.cpu_count() and slot_count(3) == 3


async def test_in_use_counts_the_held_slots_without_taking_one(tmp_path):
    """What the spare VM keeper reads before making a spare (rund/runtime/spares.py): starts in flight, read from
    /proc/locks, so that reading never holds a slot a start is about to take."""
    admission = Admission(tmp_path, slots=2, max_wait_s=1)
    assert admission.in_use() == 0
    async with admission.slot():
        assert admission.in_use() == 1
        async with admission.slot():
            assert admission.in_use() == 2
        assert admission.in_use() == 1
    assert admission.in_use() == 0
