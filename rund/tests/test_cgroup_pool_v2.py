"""The cgroup pool's v2 driver on the real unified hierarchy.

On this hybrid host the unified hierarchy holds no resource controllers (cpu, memory, pids... are bound
to v1), so these tests cover claiming, placement, killing, reconcile and dying-cgroup behaviour on v2;
limits are checked only for the controllers the host really offers there.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess

import pytest

from rund.resources.cgroups import CgroupLimits, ControllerMissing, PoolConfig, open_pool
from rund.resources.cgroups.mounts import read_mounts

UNIFIED = next((m.path for m in read_mounts() if m.version == 2), None)
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for cgroups"),
    pytest.mark.skipif(UNIFIED is None, reason="no cgroup2 hierarchy mounted"),
]
FORK = multiprocessing.get_context("fork")


@pytest.fixture
def pool(tmp_path):
    config = PoolConfig(parent=f"rund-test-v2-{os.getpid()}", size=8, version="v2", state_dir=str(tmp_path / "state"))
    pool = open_pool(config)
    yield pool
    pool.destroy()
    assert not os.path.exists(pool.driver.hierarchies[0])
    assert not os.path.exists(pool.registry.path)


def unified_cgroup_of(pid):
    with open(f"/proc/{pid}/cgroup") as f:
        return next(line.strip()[3:] for line in f if line.startswith("0::"))


def test_placement_and_release_kill_on_the_unified_hierarchy(pool):
    pool.fill()
    lease = pool.acquire("v2-sb")
    assert lease.paths == (os.path.join(pool.driver.hierarchies[0], "slot-" + lease.slot),)
    proc = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300 & wait"], preexec_fn=lease.placement())
    try:
        assert unified_cgroup_of(proc.pid).endswith("/slot-" + lease.slot)
    finally:
        pool.release(lease)  # cgroup.kill takes the shell and both children
    assert proc.wait(5) != 0
    assert open(lease.procs_paths[0]).read() == ""
    assert pool.statistics().free == 8


def _hold(pool, worker, pipe):
    leases = [pool.acquire(f"v2-w{worker}-{i}") for i in range(4)]
    pipe.send([lease.slot for lease in leases])
    os._exit(0)  # die holding every lease


def test_concurrent_holders_never_share_and_dead_holders_are_taken_back(pool):
    pool.fill()
    pipes, procs = [], []
    for w in range(3):  # 12 acquires against 8 free slots
        ours, theirs = FORK.Pipe(duplex=False)
        procs.append(FORK.Process(target=_hold, args=(pool, w, theirs)))
        pipes.append(ours)
    for p in procs:
        p.start()
    slots = [slot for pipe in pipes if pipe.poll(30) for slot in pipe.recv()]
    for p in procs:
        p.join(30)
    assert len(slots) == len(set(slots)) == 12
    assert pool.statistics().leased == 12
    assert pool.reconcile() == 12
    assert pool.statistics().free == 12


def test_limits_for_controllers_the_host_offers_read_back_and_others_are_refused(pool):
    pool.fill()
    lease = pool.acquire("v2-limits")
    try:
        if "pids" in pool.driver.controllers:
            pool.update(lease, CgroupLimits(pids_limit=55))
            assert open(os.path.join(lease.paths[0], "pids.max")).read().strip() == "55"
        else:
            with pytest.raises(ControllerMissing) as info:
                pool.update(lease, CgroupLimits(pids_limit=55))
            assert info.value.controller == "pids"
        if "cpu" in pool.driver.controllers:
            pool.update(lease, CgroupLimits(cpu_quota_us=20_000, cpu_period_us=100_000, cpu_shares=1024))
            assert open(os.path.join(lease.paths[0], "cpu.max")).read().strip() == "20000 100000"
            assert open(os.path.join(lease.paths[0], "cpu.weight")).read().strip() == "39"
        else:
            with pytest.raises(ControllerMissing):
                pool.update(lease, CgroupLimits(cpu_quota_us=20_000))
    finally:
        pool.release(lease)


def test_reusing_pool_cgroups_leaves_no_dying_cgroups(pool):
    pool.fill()
    stat = os.path.join(pool.driver.hierarchies[0], "cgroup.stat")

    def dying():
        return int(next(l.split()[1] for l in open(stat) if l.startswith("nr_dying_descendants")))

    before = dying()
    for i in range(50):
        lease = pool.acquire(f"v2-cycle-{i}")
        subprocess.run(["true"], preexec_fn=lease.placement(), check=True)
        pool.release(lease)
    assert dying() == before
    assert pool.statistics().created == 8
