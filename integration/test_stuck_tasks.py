"""Tasks that must always be removable, through a real containerd: a paused VM, a VM whose QEMU is stopped, a
process that cannot start (issue: every task is removable). runc does each in well under a second; rund bounds a
guest that does not answer by [agent] teardown_timeout_s, then kills its VM."""
from __future__ import annotations

import os
import signal
import time

import pytest

from integration.rund_leaks import qemu_processes_of
from integration.test_ctr_run import RUNTIME, TIMEOUT, assert_gone, wait_status

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]


def run_detached(ctd, cid: str, *args: str) -> int:
    ctd.ctr("run", "-d", "--runtime", RUNTIME, ctd.image, cid, *args, timeout=TIMEOUT)
    wait_status(ctd, cid, "RUNNING")
    (pid,) = qemu_processes_of(cid)
    return pid


def remove(ctd, cid: str) -> None:
    ctd.ctr("task", "rm", "-f", cid, check=False)
    ctd.ctr("container", "rm", cid, check=False)


def timed(fn, *args, **kwargs):
    start = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - start


def test_a_paused_task_is_removed_by_rm_force(rund_containerd):
    ctd = rund_containerd
    try:
        run_detached(ctd, "paused", "sleep", "600")
        ctd.ctr("task", "pause", "paused")
        wait_status(ctd, "paused", "PAUSED")
        res, took = timed(ctd.ctr, "task", "rm", "-f", "paused", check=False)
        assert res.returncode == 0, res.stderr.decode() + ctd.log_tail()
        assert took < 5, f"rm -f of a paused task took {took:.1f} s"
        ctd.ctr("container", "rm", "paused")
        assert_gone(ctd, "paused")
    finally:
        remove(ctd, "paused")


def test_a_stopped_qemu_is_declared_dead_and_its_task_removed(rund_containerd):
    ctd = rund_containerd
    qemu = 0
    try:
        qemu = run_detached(ctd, "hung", "sleep", "600")
        os.kill(qemu, signal.SIGSTOP)            # the guest stops answering anything
        res, took = timed(ctd.ctr, "task", "kill", "-s", "SIGKILL", "hung", check=False)
        assert res.returncode == 0, res.stderr.decode()
        assert took < 15, f"kill of a hung guest took {took:.1f} s"   # default teardown_timeout_s is 5
        wait_status(ctd, "hung", "STOPPED", 30)
        assert qemu_processes_of("hung") == []
        res = ctd.ctr("task", "rm", "hung", check=False)
        assert res.returncode == 0, res.stderr.decode()
        assert "exit code 255" in res.stderr.decode()     # containerd's "unknown" status: the guest never said
        ctd.ctr("container", "rm", "hung")
        assert_gone(ctd, "hung")
        assert "declaring the guest dead" in ctd.log_tail(400)
    finally:
        if qemu:
            with_suppressed(os.kill, qemu, signal.SIGKILL)
        remove(ctd, "hung")


def test_a_stopped_qemu_does_not_block_rm_force(rund_containerd):
    ctd = rund_containerd
    qemu = 0
    try:
        qemu = run_detached(ctd, "hung2", "sleep", "600")
        os.kill(qemu, signal.SIGSTOP)
        res, took = timed(ctd.ctr, "task", "rm", "-f", "hung2", check=False)
        assert res.returncode == 0, res.stderr.decode() + ctd.log_tail()
        assert took < 15, f"rm -f of a hung guest took {took:.1f} s"
        ctd.ctr("container", "rm", "hung2")
        assert_gone(ctd, "hung2")
    finally:
        if qemu:
            with_suppressed(os.kill, qemu, signal.SIGKILL)
        remove(ctd, "hung2")


def test_a_process_that_cannot_start_leaves_nothing(rund_containerd):
    ctd = rund_containerd
    try:
        res = ctd.ctr("run", "--rm", "--runtime", RUNTIME, ctd.image, "noexec", "/etc/passwd", check=False,
                      timeout=TIMEOUT)
        assert res.returncode != 0
        assert "/etc/passwd" in res.stderr.decode()
        assert ctd.ctr("task", "ls").stdout.decode().count("noexec") == 0
        assert_gone(ctd, "noexec")
    finally:
        remove(ctd, "noexec")


def test_an_exec_that_cannot_start_fails_at_once_and_the_task_stays_usable(rund_containerd):
    ctd = rund_containerd
    try:
        run_detached(ctd, "execfail", "sleep", "600")
        res, took = timed(ctd.ctr, "task", "exec", "--exec-id", "missing", "execfail", "/nonexistent", check=False)
        assert res.returncode != 0 and took < 10, (took, res.stderr.decode())
        # The failed exec's id is free again and the container still runs execs.
        ok = ctd.ctr("task", "exec", "--exec-id", "missing", "execfail", "sh", "-c", "exit 7", check=False)
        assert ok.returncode == 7, ok.stderr.decode()
    finally:
        remove(ctd, "execfail")
    assert_gone(ctd, "execfail")


def with_suppressed(fn, *args) -> None:
    try:
        fn(*args)
    except OSError:
        pass
