"""A pool touches only the slots its own registry records: pools of other configurations (another state_dir)
and other software may keep cgroups under the same parent. Root only; real cgroups, v1 and v2 where mounted."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time

import pytest

from rund.resources.cgroups import PoolConfig, open_pool
from rund.resources.cgroups.mounts import read_mounts

VERSIONS = [v for v, n in (("v1", 1), ("v2", 2)) if any(m.version == n for m in read_mounts())]
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for cgroups"),
    pytest.mark.skipif(not VERSIONS, reason="no cgroup hierarchy mounted"),
]
FORK = multiprocessing.get_context("fork")


@pytest.fixture(params=VERSIONS)
def pools(request, tmp_path):
    """`pools(name)`: a pool with a registry of its own (state dir `name`) under one parent shared by the test.

    Afterwards every pool is destroyed and every foreign cgroup the test registered (`pools.foreign`) is
    emptied and removed; then the shared parent must be gone.
    """
    parent = f"rund-test-own-{os.getpid()}"
    made, foreign = [], []

    def make(name: str, size: int = 2):
        pool = open_pool(PoolConfig(parent=parent, size=size, version=request.param,
                                    state_dir=str(tmp_path / name)))
        made.append(pool)
        return pool

    make.foreign = foreign
    yield make
    for pool in made:
        pool.destroy()
    for path in foreign:
        _kill_and_remove(path)
    for pool in made:
        assert not os.path.exists(pool.registry.path)
        for hierarchy in pool.driver.hierarchies:
            try:
                os.rmdir(hierarchy)  # the last pool's destroy left it to the foreign cgroups
            except FileNotFoundError:
                pass


def _kill_and_remove(path: str) -> None:
    for pid in _procs(path):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _procs(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.rmdir(path)


def _procs(cgroup: str) -> list[int]:
    try:
        with open(os.path.join(cgroup, "cgroup.procs")) as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not _alive(pid)


def _lease_place_and_die(pool, sandbox_id, pipe):
    """A shim that crashes: it leases a slot, starts its VMM there, and dies without releasing."""
    lease = pool.acquire(sandbox_id)
    vmm = subprocess.Popen(["sleep", "300"], preexec_fn=lease.placement(), start_new_session=True)
    pipe.send((lease.slot, vmm.pid))
    os._exit(0)


def crashed_lease(pool, sandbox_id):
    """(slot, pid of the process left in it) of a lease whose owner has died."""
    ours, theirs = FORK.Pipe(duplex=False)
    proc = FORK.Process(target=_lease_place_and_die, args=(pool, sandbox_id, theirs))
    proc.start()
    assert ours.poll(30)
    slot, pid = ours.recv()
    proc.join(30)
    return slot, pid


def test_reconcile_after_a_crash_takes_back_only_its_own_slots(pools):
    mine, theirs = pools("state-a"), pools("state-b")
    mine.fill()
    theirs.fill()
    my_slot, my_vmm = crashed_lease(mine, "sb-mine")
    their_slot, their_vmm = crashed_lease(theirs, "sb-theirs")  # dead owner too: but not `mine`'s record
    live = theirs.acquire("sb-live")
    live_vmm = subprocess.Popen(["sleep", "300"], preexec_fn=live.placement())
    their_free = [e.slot for e in theirs.registry.entries() if e.state == "free"]
    try:
        assert mine.reconcile() == 1
        assert _wait_gone(my_vmm)
        assert _alive(their_vmm) and live_vmm.poll() is None
        for slot in (their_slot, live.slot, *their_free):
            assert all(os.path.isdir(p) for p in theirs.driver.paths(slot)), slot
        assert their_vmm in _procs(theirs.driver.paths(their_slot)[0])
        stats = theirs.statistics()
        assert (stats.free, stats.leased) == (len(their_free), 2)
        assert theirs.reconcile() == 1  # its own dead lease is its own to take back
        assert _wait_gone(their_vmm)
        assert live_vmm.poll() is None
    finally:
        theirs.release(live)
        live_vmm.wait(5)
    assert (mine.statistics().free, mine.statistics().leased) == (2, 0)


def test_a_foreign_cgroup_under_the_parent_is_left_alone_with_its_process(pools):
    pool = pools("state")
    pool.fill()
    crashed_lease(pool, "sb-crashed")
    # Another software's cgroup, and one named like a slot (of a pool whose records are elsewhere).
    foreign = [os.path.join(h, name) for h in pool.driver.hierarchies for name in ("other-sw", "slot-0123456789ab")]
    for path in foreign:
        os.mkdir(path)
        pools.foreign.append(path)
    procs = [subprocess.Popen(["sleep", "300"], preexec_fn=_joiner(path))
             for path in foreign if path.startswith(pool.driver.hierarchies[0])]
    try:
        assert pool.reconcile() == 1
        pool.destroy()
        assert all(p.poll() is None for p in procs)
        assert all(os.path.isdir(path) for path in foreign)
        assert {pid for path in foreign for pid in _procs(path)} == {p.pid for p in procs}
    finally:
        for p in procs:
            p.kill()
            p.wait(5)


def _joiner(cgroup: str):
    def join() -> None:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write("0")
    return join


@pytest.mark.parametrize("where", ["every hierarchy", "one hierarchy"])
def test_destroy_survives_slots_removed_underneath(pools, where):
    pool = pools("state", size=3)
    if where == "one hierarchy" and len(pool.driver.hierarchies) == 1:
        pytest.skip("a single hierarchy: the same as every hierarchy")
    pool.fill()
    lease = pool.acquire("sb-held")
    vmm = subprocess.Popen(["sleep", "300"], preexec_fn=lease.placement())
    free = next(e.slot for e in pool.registry.entries() if e.state == "free")
    try:
        if where == "every hierarchy":
            for path in pool.driver.paths(free):
                os.rmdir(path)
            for path in lease.paths:
                _kill_and_remove(path)  # an admin's cleanup: the VMM is killed first
        else:  # the last hierarchy only (v1's freezer): the VMM left there, but lives on in the others
            os.rmdir(pool.driver.paths(free)[-1])
            with open(os.path.join(os.path.dirname(pool.driver.hierarchies[-1]), "cgroup.procs"), "w") as f:
                f.write(str(vmm.pid))
            os.rmdir(lease.paths[-1])
        pool.destroy()
        assert vmm.wait(5) == -signal.SIGKILL  # a process the pool placed goes with its slot
        assert not any(os.path.exists(h) for h in pool.driver.hierarchies)
        assert not os.path.exists(pool.registry.path)
    finally:
        if vmm.poll() is None:
            vmm.kill()
            vmm.wait(5)


def test_pool_objects_of_one_state_dir_are_one_pool(pools):
    # The registry is what a pool owns: a second pool object on the same state dir recovers the first one's slots.
    first = pools("state")
    first.fill()
    _, vmm = crashed_lease(first, "sb-crashed")
    second = pools("state")
    assert second.registry.path == first.registry.path
    assert second.reconcile() == 1
    assert _wait_gone(vmm)
