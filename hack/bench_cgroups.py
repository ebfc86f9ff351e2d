"""The cgroup pool against plain mkdir/rmdir, side by side in one run, on this host's real cgroups.

    python3 hack/bench_cgroups.py [--concurrency 200] [--rounds 3] [--cycles 10000] [--cache-kib 16] [--leased 0]

1. Latency: --concurrency forked processes each take one sandbox cgroup with a pod's limits at the
   same moment (pool: acquire + configure; baseline: mkdir in every hierarchy + the same configure),
   then all give it back at the same moment (pool: release; baseline: rmdir). Each process times its
   own call, after one untimed warm-up round and 1.5 s for the kernel's deferred work from it; one
   write to a pipe they all poll starts a phase. --leased N holds N more pool cgroups leased through
   both sides' rounds, as on a host already running N sandboxes (the pool then has to find its free
   slots among them, and every cgroup write that walks the hierarchy sees them).
   Rounds alternate which side goes first, each after the kernel has finished tearing down the
   previous round's cgroups; p50/p99 are over every sample of every round. Besides wall time the
   table shows wall time minus the call's run-queue wait (/proc/self/schedstat), and how many calls
   slept (voluntary context switch, e.g. on a kernel mutex) or were preempted.
   Each worker runs in a session of its own, as the shim daemon does (setsid), so on a host whose
   shims sit in the root cpu cgroup each is its own autogroup. (In one shared session all 200 form
   one group, which every waking kernel thread preempts: 3-5 % of pool calls were preempted then,
   against 0.5-2 % now.) On a host with far fewer cpus than workers, a preempted call waits until
   most of the other runnable workers have had their turn (the scheduler's fairness): tens of ms
   here, with 200 workers on 2 cpus. The wall p99 then depends on how many calls were preempted,
   which the busy p99 leaves out.
2. Dying cgroups: --cycles create/destroy cycles each way. In every cycle a process joins the cgroup,
   reads --cache-kib of a file not yet cached (clean page cache charged to that cgroup, no readahead)
   and exits. Dying cgroups are counted as nr_dying_descendants on a v2 pool, else as the memory
   line's num_cgroups in /proc/cgroups (live and dying) minus the live directories of the memory
   hierarchy; growth is from before to right after the cycles (other activity on the host moves the
   count by a few).

Prints tables, then as the last line one JSON object:
{"pool_p99_ms", "mkdir_p99_ms", "speedup_p99", "dying_growth_pool", "dying_growth_mkdir"} (wall p99),
plus the busy p99s ("pool_p99_busy_ms", "mkdir_p99_busy_ms", "speedup_p99_busy") and the share of
preempted pool calls ("preempted_pct_pool").
Needs root. Removes every cgroup, file and process it made, also when interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shutil
import struct
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hack.spec import print_aims  # noqa: E402
from rund.resources.cgroups import CgroupLimits, PoolConfig, names, open_pool, select_driver  # noqa: E402
from rund.resources.cgroups.lease import CgroupPlacement  # noqa: E402
from rund.resources.cgroups.mounts import read_mounts  # noqa: E402

# What a small pod asks for: half a core, one cpu, 256 MiB, 512 pids.
LIMITS = CgroupLimits(cpu_quota_us=50_000, cpu_period_us=100_000, cpu_shares=512, cpuset_cpus="0",
                      cpuset_mems="0", memory_limit_bytes=256 << 20, pids_limit=512)
# Wall seconds, seconds of it spent waiting for a CPU (run queue), voluntary and involuntary context switches.
SAMPLE = struct.Struct("ddII")


def _limits_for(controllers: frozenset[str]) -> CgroupLimits:
    """LIMITS without the fields whose controller this layout lacks (e.g. v2 on a hybrid host)."""
    needs = {"cpu_quota_us": "cpu", "cpu_period_us": "cpu", "cpu_shares": "cpu", "cpuset_cpus": "cpuset",
             "cpuset_mems": "cpuset", "memory_limit_bytes": "memory", "pids_limit": "pids"}
    return replace(LIMITS, **{field: None for field, c in needs.items() if c not in controllers})


# -- 1. latency under concurrency --------------------------------------------------------------


def _run_delay() -> float:
    """Seconds this process has waited on a run queue so far (/proc/self/schedstat, second field)."""
    with open("/proc/self/schedstat", "rb") as f:
        return int(f.read().split()[1]) / 1e9


def _timed(call, *args):
    """Run call(*args); return its result and a SAMPLE for it.

    The run-queue wait lets the report separate what the call costs (CPU work, sleeping on kernel
    locks) from waiting for one of this host's CPUs behind the other workers; the context switch
    counts say whether the call slept (e.g. on a kernel mutex) or was preempted. These readings are
    taken outside the timed window, so the wall time is the call's alone.
    """
    before = resource.getrusage(resource.RUSAGE_SELF)
    waited = _run_delay()
    start = time.perf_counter()
    result = call(*args)
    elapsed = time.perf_counter() - start
    waited = min(_run_delay() - waited, elapsed)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return result, SAMPLE.pack(elapsed, waited, after.ru_nvcsw - before.ru_nvcsw, after.ru_nivcsw - before.ru_nivcsw)


def _wait_for(go: int) -> None:
    """Block until the parent writes to `go`; every worker wakes on the same write.

    poll(2) leaves the byte in the pipe, so the parent's one write wakes all workers at once. A
    read(2) per worker would wake them one by one, each woken by the previous one right as that one
    starts its timed call, so every call would pay for a wake-up that is the harness's, not its own.
    """
    poller = select.poll()
    poller.register(go, select.POLLIN)
    poller.poll()


def _worker(take, give, go: tuple[int, int], out_w: int, ready_w: int) -> None:
    """Child: warm up, say ready, wait for go, time take(), report; wait for the second go, time give(), report."""
    # One untimed round first: a forked Python child pays copy-on-write faults on the first run of any
    # code path, which is a cost of this harness, not of cgroups (and is larger for the longer path).
    _timed(give, take())
    os.write(ready_w, b"r")
    _wait_for(go[0])
    held, sample = _timed(take)
    os.write(out_w, sample)
    _wait_for(go[1])
    _, sample = _timed(give, held)
    os.write(out_w, sample)


def _concurrent(n: int, take, give) -> tuple[list[float], list[float]]:
    gos = (os.pipe(), os.pipe())  # one per phase: the byte that starts a phase stays in its pipe
    out_r, out_w = os.pipe()
    ready_r, ready_w = os.pipe()
    children = []
    try:
        for _ in range(n):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    # A session of its own, as the shim daemon takes (rund/shim/start.py): the
                    # scheduler then treats each worker as the shims are treated, as its own
                    # autogroup, rather than all 200 as one group that any kernel thread waking
                    # up preempts (with a call in flight stranded until the rest have run).
                    os.setsid()
                    for _, w in gos:
                        os.close(w)
                    os.close(out_r)
                    os.close(ready_r)
                    _worker(take, give, (gos[0][0], gos[1][0]), out_w, ready_w)
                    code = 0
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(code)
            children.append(pid)
        for r, _ in gos:
            os.close(r)
        os.close(out_w)
        os.close(ready_w)
        ready, waiting = 0, select.poll()
        waiting.register(ready_r, select.POLLIN)
        while ready < n:
            if not waiting.poll(60_000):  # the other children hold the pipe open, so no EOF tells
                raise RuntimeError("a benchmark worker did not finish warming up; see its traceback above")
            ready += len(os.read(ready_r, n - ready))
        # Every child has warmed up. Wait out the kernel's deferred work from those warm-ups before
        # the timed phase: a v1 release reads cgroup.procs, and the kernel frees each list it built
        # for that read one second later (CGROUP_PIDLIST_DESTROY_DELAY) in a kworker, which would
        # otherwise preempt timed calls.
        time.sleep(1.5)
        phases = []
        os.set_blocking(out_r, False)
        for _, go_w in gos:
            os.write(go_w, b"g")
            data = b""
            # Collect by polling, not by a blocking read: waking up on every worker's report would
            # make this process preempt the workers still being timed. The reports fit in the pipe.
            # The first look comes after a pool phase is over (~0.3 ms of CPU per worker), so this
            # process does not wake up, and preempt a worker, in the middle of one.
            deadline = time.monotonic() + 120
            pause = 0.3 + n * 0.003
            while len(data) < n * SAMPLE.size:
                time.sleep(pause)
                pause = 0.1
                try:
                    chunk = os.read(out_r, n * SAMPLE.size - len(data))
                except BlockingIOError:
                    chunk = None
                if chunk == b"" or time.monotonic() > deadline:
                    raise RuntimeError("a benchmark worker died; see its traceback above")
                data += chunk or b""
            phases.append(list(SAMPLE.iter_unpack(data)))
            time.sleep(0.1)
        return phases[0], phases[1]
    finally:
        for _, w in gos:
            os.close(w)
        os.close(out_r)
        os.close(ready_r)
        for pid in children:
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"benchmark worker {pid} failed")


def _cgroup_counts() -> str:
    with open("/proc/cgroups") as f:
        return f.read()


def _settle(timeout_s: float = 30.0, quiet_s: float = 1.5) -> None:
    """Wait until the kernel has finished destroying the cgroups of the previous round.

    rmdir returns before the kernel's work does: css offlining and freeing run in kworkers, and
    while any cgroup of a hierarchy is made or removed, every path lookup in it (kernfs takes its
    root's rwsem for each component) waits. Timing the next round in the middle of that would
    charge one side's teardown to the other side's calls. Settled = /proc/cgroups unchanged for
    `quiet_s`.
    """
    deadline = time.monotonic() + timeout_s
    last, since = _cgroup_counts(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        time.sleep(0.25)
        now = _cgroup_counts()
        if now != last:
            last, since = now, time.monotonic()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3


def _row(label: str, samples: list[tuple[float, float, int, int]]) -> str:
    wall = [s[0] for s in samples]
    busy = [max(s[0] - s[1], 0.0) for s in samples]  # wall minus run-queue wait
    slept = 100.0 * sum(1 for s in samples if s[2]) / len(samples)
    preempted = 100.0 * sum(1 for s in samples if s[3]) / len(samples)
    return (f"{label:<26}{_pct(wall, 0.5):>9.3f}{_pct(wall, 0.99):>9.3f}{_pct(wall, 1):>9.3f}"
            f"{_pct(busy, 0.5):>11.3f}{_pct(busy, 0.99):>9.3f}{slept:>9.1f}{preempted:>11.1f}")


# -- 2. dying cgroups ---------------------------------------------------------------------------


def _dying_v1() -> int:
    """Dying memory cgroups: /proc/cgroups counts live and dying ones, the mounted tree only live ones."""
    with open("/proc/cgroups") as f:
        counted = next(int(line.split()[2]) for line in f if line.startswith("memory\t"))
    mount = next(m.path for m in read_mounts() if m.version == 1 and "memory" in m.controllers)
    live = sum(1 for _ in os.walk(mount))
    return counted - live


def _dying_v2(hierarchy: str) -> int:
    with open(os.path.join(os.path.dirname(hierarchy), "cgroup.stat")) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("nr_dying_descendants"))


def _touch_cache(placement: CgroupPlacement, fd: int, offset: int, size: int) -> None:
    """Fork a process into the cgroup that reads [offset, offset+size) of fd: page cache charged there."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            placement()
            os.pread(fd, size, offset)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("page cache toucher failed")


def _cache_file(directory: str, size: int) -> int:
    """A file of `size` bytes on disk, written, synced and dropped from the page cache."""
    path = os.path.join(directory, "cache-toucher.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    block = os.urandom(1 << 20)
    for offset in range(0, size, len(block)):
        os.pwrite(fd, block[: min(len(block), size - offset)], offset)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    # No readahead: otherwise one cycle's read caches (and charges) the next cycles' ranges.
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    return fd


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--leased", type=int, default=0, help="pool cgroups held leased during the latency rounds")
    parser.add_argument("--cache-kib", type=int, default=16)
    parser.add_argument("--version", default="auto", choices=["auto", "v1", "v2"])
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_cgroups needs root")

    tag = f"rund-bench-{os.getpid()}"
    scratch = tempfile.mkdtemp(prefix=f"{tag}-", dir="/var/tmp")  # disk-backed: tmpfs pages are not page cache
    # Records on tmpfs, as /run is on most hosts (here / is ext4, so /run would not be).
    state = tempfile.mkdtemp(prefix=f"{tag}-", dir="/dev/shm")
    pool = open_pool(PoolConfig(parent=tag, size=args.concurrency, version=args.version, state_dir=state))
    plain = select_driver(f"{tag}-mkdir", args.version)
    plain.prepare()  # same parent setup as the pool (v1 cpuset inheritance, v2 subtree_control)
    fd = -1
    try:
        limits = _limits_for(pool.driver.controllers)
        pool.fill(args.concurrency + args.leased)
        running = [pool.acquire(f"running-{i}") for i in range(args.leased)]

        def pool_take():
            return pool.acquire(f"bench-{os.getpid()}", limits)

        def mkdir_take():
            paths = plain.paths(names.new_slot())
            for path in paths:
                os.mkdir(path)
            plain.apply(paths, limits, fresh=True)  # the same writes as the pool's
            return paths

        def mkdir_give(paths):
            for path in paths:
                os.rmdir(path)

        samples = {"pool": ([], []), "mkdir": ([], [])}
        by_round = {"pool": [], "mkdir": []}  # wall p99 of each round's takes
        sides = {"pool": (pool_take, pool.release), "mkdir": (mkdir_take, mkdir_give)}
        for r in range(args.rounds):
            for side in (("pool", "mkdir") if r % 2 == 0 else ("mkdir", "pool")):
                _settle()
                take, give = _concurrent(args.concurrency, *sides[side])
                samples[side][0].extend(take)
                samples[side][1].extend(give)
                by_round[side].append(_pct([t[0] for t in take], 0.99))

        for lease in running:
            pool.release(lease)
        print(f"cgroup v{pool.driver.version}, {len(pool.driver.hierarchies)} hierarchies, "
              f"{args.concurrency} concurrent processes x {args.rounds} rounds"
              f"{f' with {args.leased} more leased' if args.leased else ''}, {os.cpu_count()} cpus, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"limits applied: {limits}")
        print(f"{'':<26}{'-------- wall ms --------':>27}{'- minus run-queue wait -':>20}")
        print(f"{'operation':<26}{'p50':>9}{'p99':>9}{'max':>9}{'p50':>11}{'p99':>9}{'slept %':>9}{'preempted %':>11}")
        print(_row("pool acquire+configure", samples["pool"][0]))
        print(_row("mkdir+configure", samples["mkdir"][0]))
        print(_row("pool release", samples["pool"][1]))
        print(_row("rmdir", samples["mkdir"][1]))
        for side, p99s in by_round.items():
            print(f"{side} take p99 by round (ms): {' '.join(f'{v:.3f}' for v in p99s)}")

        size = args.cache_kib << 10
        fd = _cache_file(scratch, 2 * args.cycles * size)
        count = (lambda: _dying_v2(pool.driver.hierarchies[0])) if pool.driver.version == 2 else _dying_v1
        what = ("nr_dying_descendants" if pool.driver.version == 2
                else "dying memory cgroups (/proc/cgroups num_cgroups minus live directories)")

        before = count()
        start = time.perf_counter()
        for i in range(args.cycles):
            lease = pool.acquire(f"cycle-{i}", limits)
            _touch_cache(lease.placement(), fd, i * size, size)
            pool.release(lease)
        pool_s = time.perf_counter() - start
        growth_pool = count() - before

        before = count()
        start = time.perf_counter()
        for i in range(args.cycles):
            paths = mkdir_take()
            joins = tuple(os.path.join(p, plain.join_file) for p in paths)  # joined the same way as the pool's
            _touch_cache(CgroupPlacement(joins, joins), fd, (args.cycles + i) * size, size)
            mkdir_give(paths)
        mkdir_s = time.perf_counter() - start
        growth_mkdir = count() - before

        print(f"\n{args.cycles} create/destroy cycles each way, {args.cache_kib} KiB of page cache per cycle; "
              f"growth of {what}")
        print(f"{'way':<34}{'growth':>10}{'ms/cycle':>10}")
        print(f"{'pool (acquire ... release)':<34}{growth_pool:>10}{pool_s / args.cycles * 1e3:>10.3f}")
        print(f"{'mkdir ... rmdir':<34}{growth_mkdir:>10}{mkdir_s / args.cycles * 1e3:>10.3f}")
        print(f"pool statistics: {pool.statistics()}")
        os.close(fd)
        fd = -1
        os.unlink(os.path.join(scratch, "cache-toucher.bin"))  # drops the page cache that pins them
        dying = count()
        deadline = time.monotonic() + 10
        while count() > dying - growth_mkdir and time.monotonic() < deadline:
            time.sleep(0.2)
        print(f"dying cgroups {dying} right after the cycles, {count()} once the cached file is deleted")

        pool_p99 = _pct([s[0] for s in samples["pool"][0]], 0.99)
        mkdir_p99 = _pct([s[0] for s in samples["mkdir"][0]], 0.99)
        pool_busy_p99 = _pct([s[0] - s[1] for s in samples["pool"][0]], 0.99)
        mkdir_busy_p99 = _pct([s[0] - s[1] for s in samples["mkdir"][0]], 0.99)
        result = {
            "pool_p99_ms": round(pool_p99, 3),
            "mkdir_p99_ms": round(mkdir_p99, 3),
            "speedup_p99": round(mkdir_p99 / pool_p99, 1),
            "dying_growth_pool": growth_pool,
            "dying_growth_mkdir": growth_mkdir,
            # The same p99s without the time spent waiting for a CPU (see the docstring).
            "pool_p99_busy_ms": round(pool_busy_p99, 3),
            "mkdir_p99_busy_ms": round(mkdir_busy_p99, 3),
            "speedup_p99_busy": round(mkdir_busy_p99 / pool_busy_p99, 1),
            "preempted_pct_pool": round(100.0 * sum(1 for s in samples["pool"][0] if s[3]) / len(samples["pool"][0]), 1),
        }
        print_aims("cgroups", result)
        print(json.dumps(result))
    finally:
        if fd >= 0:
            os.close(fd)
        pool.destroy()
        for hierarchy in plain.hierarchies:
            for name in os.listdir(hierarchy):
                if name.startswith("slot-"):
                    os.rmdir(os.path.join(hierarchy, name))
            os.rmdir(hierarchy)
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
