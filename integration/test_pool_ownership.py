"""Issue 13, item 2, end to end: two runtime configurations that differ only in `state_dir` share `[cgroups] parent`.
A `kill -9` of one sandbox's shim makes containerd run `shim delete`, whose cleanup reconciles that
configuration's cgroup pool; the other configuration's sandbox must keep running, its QEMU alive in its cgroup.
(Before the fix the reconcile killed every cgroup under the parent it had no record of.)"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from rund.config import load
from rund.procfs import argvs
from rund.resources.cgroups import CgroupError, open_pool
from rund.runtime.resource_config import pool_config
from rund.shim import address

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]

RUNTIME = "io.containerd.rund.v2"
TIMEOUT = 300


@pytest.fixture
def two_configs(tmp_path):
    """Two runtime config files: state dirs of their own, one cgroup parent unique to this test."""
    parent = f"rund-e2e-own-{os.getpid()}"
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.toml"
        path.write_text(f'state_dir = "{tmp_path / ("state-" + name)}"\n[cgroups]\nparent = "{parent}"\n')
        paths.append(path)
    yield paths
    for path in paths:  # the pools' free cgroups, then the parent (once both are gone)
        try:
            open_pool(pool_config(load(str(path)))).destroy()
        except CgroupError as e:
            print(f"cleaning up the pool of {path}: {e}")


def run_detached(ctd, cid: str, config: Path) -> None:
    ctd.ctr("run", "-d", "--runtime", RUNTIME, "--runtime-config-path", str(config), ctd.image, cid,
            "sleep", "600", timeout=TIMEOUT)


def task_status(ctd, cid: str) -> str | None:
    for line in ctd.ctr("task", "ls").stdout.decode().splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[-1]
    return None


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def qemu_of(state_dir: Path, cid: str) -> int | None:
    """The QEMU whose command line names the sandbox's state directory."""
    marker = str(state_dir / "default" / cid).encode()
    return next((pid for pid, argv in argvs() if b"qemu-system" in argv[0] and any(marker in a for a in argv)), None)


def cgroups_of(pid: int) -> set[str]:
    with open(f"/proc/{pid}/cgroup") as f:
        return {line.strip().split(":", 2)[2] for line in f}


def listener_pid(sock: str) -> int:
    """The pid of the process listening on the unix socket `sock` (the shim daemon)."""
    with open("/proc/net/unix") as f:
        inode = next(line.split()[6] for line in f if line.split()[-1:] == [sock])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]" for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no process holds {sock}")


def test_a_crashed_shims_cleanup_leaves_another_configurations_sandbox_running(rund_containerd, two_configs):
    ctd = rund_containerd
    config_a, config_b = two_configs
    state_a, state_b = (Path(load(str(c)).state_dir) for c in two_configs)
    parent = load(str(config_a)).cgroups.parent
    try:
        run_detached(ctd, "own-a", config_a)
        run_detached(ctd, "own-b", config_b)
        wait_for(lambda: task_status(ctd, "own-a") == task_status(ctd, "own-b") == "RUNNING", 60, "both running")
        qemu_a, qemu_b = qemu_of(state_a, "own-a"), qemu_of(state_b, "own-b")
        assert qemu_a and qemu_b
        cgroups_b = cgroups_of(qemu_b)
        assert any(f"/{parent}/slot-" in c for c in cgroups_b), cgroups_b  # both pools hand out slots there
        assert any(f"/{parent}/slot-" in c for c in cgroups_of(qemu_a))

        shim_a = listener_pid(address.socket_path(address.socket_address(ctd.address, "default", "own-a")))
        os.kill(shim_a, signal.SIGKILL)
        # containerd runs `delete` for the dead shim: it kills A's QEMU and reconciles A's pool.
        wait_for(lambda: qemu_of(state_a, "own-a") is None and not (state_a / "default" / "own-a").exists(),
                 60, "the crashed sandbox's cleanup")
        wait_for(lambda: task_status(ctd, "own-a") != "RUNNING", 30, "containerd to see own-a stopped")

        assert qemu_of(state_b, "own-b") == qemu_b, ctd.log_tail()
        assert cgroups_of(qemu_b) == cgroups_b  # still in its slot: the slot was not removed under it
        assert task_status(ctd, "own-b") == "RUNNING"
        res = ctd.ctr("task", "exec", "--exec-id", "alive", "own-b", "echo", "alive", check=False, timeout=TIMEOUT)
        assert res.returncode == 0 and res.stdout == b"alive\n", res
    finally:
        for cid in ("own-a", "own-b"):
            ctd.ctr("task", "kill", "-s", "KILL", cid, check=False)
            wait_for(lambda: task_status(ctd, cid) in (None, "STOPPED", "UNKNOWN"), 60, f"{cid} to stop")
            ctd.ctr("task", "delete", "-f", cid, check=False)
            ctd.ctr("container", "delete", cid, check=False)
