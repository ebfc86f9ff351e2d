"""The cgroup pool on real cgroup v1 hierarchies (this machine: hybrid). Root only."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from rund.resources.cgroups import (
    CgroupLimits,
    LeaseNotHeld,
    LimitRejected,
    PoolConfig,
    names,
    open_pool,
)
from rund.resources.cgroups.mounts import read_mounts
from rund.resources.cgroups.owners import current_owner

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for cgroups"),
    pytest.mark.skipif(not any(m.version == 1 for m in read_mounts()), reason="no cgroup v1 hierarchy"),
]

FORK = multiprocessing.get_context("fork")
LIMITS = CgroupLimits(
    cpu_quota_us=50_000, cpu_period_us=200_000, cpu_shares=512, cpuset_cpus="1", cpuset_mems="0",
    memory_limit_bytes=256 << 20, pids_limit=77,
)


@pytest.fixture
def make_pool(tmp_path):
    """Pools under a parent unique to this test; everything is removed afterwards, even on failure."""
    made = []

    def make(size: int = 4):
        config = PoolConfig(parent=f"rund-test-{os.getpid()}", size=size, version="v1", state_dir=str(tmp_path / "state"))
        pool = open_pool(config)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.destroy()
        assert not any(os.path.exists(h) for h in pool.driver.hierarchies)
        assert not os.path.exists(pool.registry.path)


def read(lease, controller, name):
    path = next(p for p in lease.paths if f"/{controller}/" in p)
    return open(os.path.join(path, name)).read().strip()


def cgroups_of(pid):
    with open(f"/proc/{pid}/cgroup") as f:
        return {line.split(":")[1]: line.strip().split(":", 2)[2] for line in f}


def wait_gone(pid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.01)
    return False


def test_a_slot_exists_in_every_hierarchy_and_the_pool_fills_to_size(make_pool):
    pool = make_pool(size=5)
    assert pool.fill() == 5
    assert pool.fill() == 0
    stats = pool.statistics()
    assert (stats.free, stats.leased, stats.created) == (5, 0, 5)
    controllers = {"cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer"}
    assert pool.driver.controllers == controllers
    lease = pool.acquire("sb-a")
    assert all(os.path.isdir(p) for p in lease.paths) and len(lease.paths) == len(controllers)
    # A new v1 cpuset would hold no cpus; the pool parent makes children inherit them.
    assert read(lease, "cpuset", "cpuset.cpus") == open("/sys/fs/cgroup/cpuset/cpuset.cpus").read().strip()
    # The root cpuset balances every cpu here, so a slot's own flag is off: its cpuset writes then skip
    # rebuilding the scheduler domains under the kernel's global cpuset_mutex.
    assert open("/sys/fs/cgroup/cpuset/cpuset.sched_load_balance").read().strip() == "1"
    assert read(lease, "cpuset", "cpuset.sched_load_balance") == "0"
    pool.release(lease)


def _acquire_many(pool, worker, count, barrier, results):
    leases = [pool.acquire(f"w{worker}-{i}") for i in range(count)]
    results.put([(lease.slot, lease.fallback) for lease in leases])
    barrier.wait()  # hold every lease until the parent has checked them
    for lease in leases:
        pool.release(lease)


def test_concurrent_acquires_from_several_processes_never_share_a_cgroup(make_pool):
    pool = make_pool(size=60)
    pool.fill()
    workers, per_worker = 6, 15  # 90 acquires from 60 free: the pool runs dry and some fall back
    barrier = FORK.Barrier(workers + 1)
    results = FORK.Queue()
    procs = [FORK.Process(target=_acquire_many, args=(pool, w, per_worker, barrier, results)) for w in range(workers)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    slots = [slot for batch in got for slot, _ in batch]
    fallbacks = sum(fallback for batch in got for _, fallback in batch)
    assert len(slots) == len(set(slots)) == workers * per_worker
    assert fallbacks == workers * per_worker - 60
    assert pool.statistics().leased == workers * per_worker
    barrier.wait(timeout=60)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert pool.statistics().free == workers * per_worker


def test_limits_read_back_as_applied_and_release_resets_them(make_pool):
    pool = make_pool()
    pool.fill()
    lease = pool.acquire("sb-limits", LIMITS)
    assert read(lease, "cpu", "cpu.cfs_quota_us") == "50000"
    assert read(lease, "cpu", "cpu.cfs_period_us") == "200000"
    assert read(lease, "cpu", "cpu.shares") == "512"
    assert read(lease, "cpuset", "cpuset.cpus") == "1"
    assert read(lease, "cpuset", "cpuset.mems") == "0"
    assert read(lease, "memory", "memory.limit_in_bytes") == str(256 << 20)
    assert read(lease, "pids", "pids.max") == "77"
    pool.update(lease, CgroupLimits(memory_limit_bytes=128 << 20))
    assert read(lease, "memory", "memory.limit_in_bytes") == str(128 << 20)
    pool.release(lease)
    assert read(lease, "cpu", "cpu.cfs_quota_us") == "-1"
    assert read(lease, "cpu", "cpu.cfs_period_us") == "100000"
    assert read(lease, "cpu", "cpu.shares") == "1024"
    assert read(lease, "cpuset", "cpuset.cpus") == open("/sys/fs/cgroup/cpuset/cpuset.cpus").read().strip()
    assert int(read(lease, "memory", "memory.limit_in_bytes")) > 1 << 60
    assert read(lease, "pids", "pids.max") == "max"


def test_default_valued_limits_hold_on_a_reused_slot_without_being_written(make_pool):
    # acquire skips writing a value equal to the default (a free slot was reset); it must still hold.
    pool = make_pool(size=1)
    pool.fill()
    lease = pool.acquire("sb-first", CgroupLimits(cpu_period_us=200_000, cpu_shares=512))
    pool.release(lease)
    again = pool.acquire("sb-second", CgroupLimits(cpu_quota_us=20_000, cpu_period_us=100_000, cpu_shares=1024))
    assert again.slot == lease.slot
    assert read(again, "cpu", "cpu.cfs_period_us") == "100000"
    assert read(again, "cpu", "cpu.cfs_quota_us") == "20000"
    assert read(again, "cpu", "cpu.shares") == "1024"
    pool.update(again, CgroupLimits(cpu_period_us=100_000, cpu_shares=1024))  # update writes whatever is given
    assert read(again, "cpu", "cpu.cfs_period_us") == "100000"
    pool.release(again)


def test_a_limit_the_kernel_refuses_is_a_typed_error_and_the_slot_goes_back(make_pool):
    pool = make_pool(size=1)
    pool.fill()
    with pytest.raises(LimitRejected) as info:
        pool.acquire("sb-bad", CgroupLimits(cpuset_cpus=str(os.cpu_count() + 7)))
    assert info.value.path.endswith("cpuset.cpus")
    assert pool.statistics().free == 1 and pool.statistics().leased == 0


def test_the_vmm_starts_inside_the_cgroup_and_its_memory_is_charged_there(make_pool):
    pool = make_pool(size=1)
    pool.fill()
    lease = pool.acquire("sb-vmm")
    touch = "import sys; b = bytearray(48 << 20); sys.stdout.write('ok\\n'); sys.stdout.flush(); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", touch], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            preexec_fn=lease.placement())
    try:
        assert proc.stdout.readline() == b"ok\n"
        where = cgroups_of(proc.pid)
        for controller in ("cpu", "memory", "pids", "freezer"):
            assert where[controller].endswith("/slot-" + lease.slot)
        assert int(read(lease, "memory", "memory.usage_in_bytes")) >= 48 << 20
    finally:
        pool.release(lease)  # kills the process: nothing may be left in a returned slot
    assert proc.wait(5) == -signal.SIGKILL
    assert int(read(lease, "memory", "memory.usage_in_bytes")) < 1 << 20


def test_a_running_process_can_be_moved_in_whole(make_pool):
    pool = make_pool(size=1)
    pool.fill()
    lease = pool.acquire("sb-move")
    proc = subprocess.Popen([sys.executable, "-c", "import threading, time; "
                             "threading.Thread(target=time.sleep, args=(300,)).start(); time.sleep(300)"])
    try:
        deadline = time.monotonic() + 5
        while len(os.listdir(f"/proc/{proc.pid}/task")) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        lease.placement().move(proc.pid)
        for tid in os.listdir(f"/proc/{proc.pid}/task"):  # every thread, not only the leader
            with open(f"/proc/{proc.pid}/task/{tid}/cgroup") as f:
                assert f"pids:/{os.path.basename(os.path.dirname(lease.paths[0]))}/slot-{lease.slot}" in f.read()
    finally:
        pool.release(lease)
    assert proc.wait(5) == -signal.SIGKILL


def test_release_kills_leftover_processes_and_their_children(make_pool):
    pool = make_pool(size=1)
    pool.fill()
    lease = pool.acquire("sb-forks")
    shell = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300 & (sleep 300 &) ; wait"], preexec_fn=lease.placement())
    deadline = time.monotonic() + 5
    while len(open(lease.procs_paths[0]).read().split()) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    inside = [int(p) for p in open(lease.procs_paths[0]).read().split()]
    assert len(inside) >= 4
    pool.release(lease)
    shell.wait(5)
    assert all(wait_gone(pid) for pid in inside)
    assert all(open(p).read() == "" for p in lease.procs_paths)


def test_release_twice_is_refused(make_pool):
    pool = make_pool(size=1)
    pool.fill()
    lease = pool.acquire("sb-twice")
    pool.release(lease)
    with pytest.raises(LeaseNotHeld):
        pool.release(lease)


def test_an_empty_pool_falls_back_to_creating_a_cgroup_with_a_warning(make_pool, caplog):
    pool = make_pool(size=1)  # not filled yet: empty
    with caplog.at_level(logging.WARNING, logger="rund.resources.cgroups.pool"):
        lease = pool.acquire("sb-fallback", LIMITS)
    assert lease.fallback
    assert [r.levelno for r in caplog.records if "empty" in r.getMessage()] == [logging.WARNING]
    assert read(lease, "pids", "pids.max") == "77"
    stats = pool.statistics()
    assert (stats.free, stats.leased, stats.created, stats.reused, stats.fallbacks) == (0, 1, 1, 0, 1)
    pool.release(lease)
    assert pool.statistics().free == 1  # a fallback cgroup joins the pool instead of being removed
    again = pool.acquire("sb-again")
    assert again.slot == lease.slot and not again.fallback
    pool.release(again)


def test_without_a_pool_each_sandbox_gets_a_new_cgroup_that_release_removes(make_pool, caplog):
    pool = make_pool(size=0)
    with caplog.at_level(logging.WARNING, logger="rund.resources.cgroups.pool"):
        lease = pool.acquire("sb-nopool")
    assert lease.fallback and not caplog.records  # no pool is the plan, not a warning
    pool.release(lease)
    assert not any(os.path.exists(p) for p in lease.paths)
    assert pool.statistics().free == 0


def _lease_and_die(pool, ready):
    lease = pool.acquire("sb-orphaned", CgroupLimits(pids_limit=33))
    child = subprocess.Popen(["sleep", "300"], preexec_fn=lease.placement())
    ready.send((lease.slot, child.pid))
    os._exit(0)  # a crashed shim: no release


def test_a_lease_whose_owner_died_is_taken_back_on_reconcile(make_pool):
    pool = make_pool(size=2)
    pool.fill()
    ready, child_end = FORK.Pipe(duplex=False)
    proc = FORK.Process(target=_lease_and_die, args=(pool, child_end))
    proc.start()
    assert ready.poll(30)
    slot, sleeper = ready.recv()
    proc.join(30)
    assert pool.statistics().leased == 1
    live = pool.acquire("sb-live")  # held by a live owner: reconcile must leave it alone
    assert pool.reconcile() == 1
    assert wait_gone(sleeper)
    stats = pool.statistics()
    assert (stats.free, stats.leased) == (1, 1)
    dead_paths = pool.driver.paths(slot)
    assert all(open(os.path.join(p, "cgroup.procs")).read() == "" for p in dead_paths)
    assert open(next(p for p in dead_paths if "/pids/" in p) + "/pids.max").read().strip() == "max"
    assert pool.registry.holds(names.parse(live.record))
    assert list(pool.registry.free_map.candidates()) == [slot]  # the next acquire finds it without listing
    pool.release(live)


def _hold_and_die(pool, count):
    for i in range(count):
        pool.acquire(f"sb-dead-{i}")
    os._exit(0)


def _reconcile(pool, barrier, pipe):
    barrier.wait()
    pipe.send(pool.reconcile())
    os._exit(0)


def test_racing_reconcilers_take_each_dead_lease_back_exactly_once(make_pool):
    pool = make_pool(size=12)
    pool.fill()
    holder = FORK.Process(target=_hold_and_die, args=(pool, 12))
    holder.start()
    holder.join(30)
    assert pool.statistics().leased == 12
    barrier = FORK.Barrier(3)
    pipes, procs = [], []
    for _ in range(3):
        ours, theirs = FORK.Pipe(duplex=False)
        procs.append(FORK.Process(target=_reconcile, args=(pool, barrier, theirs)))
        pipes.append(ours)
    for p in procs:
        p.start()
    taken = [pipe.recv() for pipe in pipes if pipe.poll(30)]
    for p in procs:
        p.join(30)
    assert len(taken) == 3 and sum(taken) == 12
    stats = pool.statistics()
    assert (stats.free, stats.leased) == (12, 0)


def _start_creating_and_die(pool, ready):
    slot = names.new_slot()
    pool.registry.create(names.claimed(names.NEW, slot, current_owner()))
    os.mkdir(pool.driver.paths(slot)[0])  # crashed after the first mkdir
    ready.send(slot)
    os._exit(0)


def test_a_half_created_slot_of_a_dead_creator_is_completed(make_pool):
    pool = make_pool(size=1)
    ready, child_end = FORK.Pipe(duplex=False)
    proc = FORK.Process(target=_start_creating_and_die, args=(pool, child_end))
    proc.start()
    assert ready.poll(30)
    slot = ready.recv()
    proc.join(30)
    assert pool.reconcile() == 0
    assert pool.statistics().free == 1
    assert all(os.path.isdir(p) for p in pool.driver.paths(slot))


def test_a_slot_directory_a_crash_left_without_a_record_is_pruned_once_old(make_pool):
    # A creator that died between mkdir of the slot directory and writing its record leaves an empty
    # directory: reconcile removes it, but only once it is old enough not to be a live creator's.
    pool = make_pool(size=1)
    stale, fresh = "00000000000a", "00000000000b"
    for slot in (stale, fresh):
        os.mkdir(pool.registry._dir(slot))
    os.utime(pool.registry._dir(stale), (time.time() - 3600, time.time() - 3600))
    pool.reconcile()
    assert not os.path.exists(pool.registry._dir(stale))
    assert os.path.isdir(pool.registry._dir(fresh))
    assert pool.statistics().free == 0  # neither counts as a slot
