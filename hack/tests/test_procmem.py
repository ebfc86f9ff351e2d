"""hack/procmem.py's host-wide CPU snapshots: what busied the host between two of them."""
import os
import time

from hack import procmem


def test_a_snapshot_holds_this_process_by_pid_and_start_time():
    snap = procmem.cpu_snapshot()
    mine = [v for (pid, _start), v in snap.items() if pid == os.getpid()]
    assert len(mine) == 1 and mine[0][1] >= 0


def test_busiest_ranks_commands_by_cpu_and_folds_kernel_workers():
    hz = procmem.CLK_TCK
    before = {(1, 5): ("qemu-system-x86", 0), (2, 5): ("qemu-system-x86", 10), (3, 5): ("kworker/0:1", 0),
              (7, 5): ("sleepy", 3)}
    after = {(1, 5): ("qemu-system-x86", hz), (2, 5): ("qemu-system-x86", 10 + hz), (3, 5): ("kworker/0:1", hz // 2),
             (4, 5): ("kworker/u8:2", hz // 2), (7, 5): ("sleepy", 3),
             (8, 9): ("containerd", hz // 4)}        # started inside the window: all its time counts
    ranked = procmem.busiest(before, after, seconds=2.0)
    assert ranked == [("qemu-system-x86", 100.0, 2), ("kworker", 50.0, 2), ("containerd", 12.5, 1)]


def test_a_reused_pid_is_a_new_process():
    hz = procmem.CLK_TCK
    before = {(10, 100): ("old", 5 * hz)}
    after = {(10, 200): ("new", hz)}            # same pid, later start: not the old one's ticks minus
    assert procmem.busiest(before, after, seconds=1.0) == [("new", 100.0, 1)]


def test_busy_work_shows_up_in_two_real_snapshots():
    a = procmem.cpu_snapshot()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        pass
    b = procmem.cpu_snapshot()
    me = procmem.comm(os.getpid())
    assert any(name == me and pct > 0 for name, pct, _ in procmem.busiest(a, b, 0.3, top=50))
