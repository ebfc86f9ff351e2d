"""Shim groups end to end through ctr (issue 17): `[shim] pods_per_shim = N` puts up to N pods into one shim process,
with a real containerd 1.6 and real VMs; `N = 1` keeps a shim per pod. The config reaches `start` as containerd
passes it (--runtime-config-path: runtime options on start's stdin). Through CRI: test_cri_shim_groups.py.

What they hold: pods of one runtime class share a shim until it serves N, then a new one starts; each pod keeps its
own socket and tasks; deleting one pod leaves the others working and its leftovers none; killing the group shim
takes every pod it serves down (containerd runs `delete` for each and drops its task) and leaves nothing of them
behind."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from integration.rund_leaks import STATE_DIR, qemu_processes_of
from integration.test_shim_fork_server import assert_gone, remove
from rund.shim import address, group_registry, peer

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]

RUNTIME = "io.containerd.rund.v2"
TIMEOUT = 300
RUND = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "rund"


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    d = tmp_path_factory.mktemp("rund-config")
    out = {}
    for n in (1, 3):
        (d / f"group{n}.toml").write_text(f"[shim]\npods_per_shim = {n}\n")
        out[n] = str(d / f"group{n}.toml")
    (d / "exec.toml").write_text("[shim]\npods_per_shim = 2\nfork_server = false\n")
    out["exec"] = str(d / "exec.toml")
    return out


def shim_of(ctd, cid: str) -> int:
    shim = peer.probe(address.socket_path(address.socket_address(ctd.address, "default", cid)))
    assert shim is not None, f"no shim serves {cid}"
    return shim.pid


def run(ctd, cid: str, config: str, *args: str):
    res = ctd.ctr("run", "-d", "--runtime", RUNTIME, "--runtime-config-path", config, ctd.image, cid, *args,
                  check=False, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr.decode() + ctd.log_tail()


def exec_echo(ctd, cid: str, text: str) -> None:
    res = ctd.ctr("task", "exec", "--exec-id", f"e{uuid.uuid4().hex[:6]}", cid, "echo", text, check=False,
                  timeout=TIMEOUT)
    assert res.returncode == 0 and res.stdout.strip() == text.encode(), res.stderr.decode() + ctd.log_tail()


def task_status(ctd, cid: str) -> str:
    for line in ctd.ctr("task", "ls", check=False).stdout.decode().splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] == cid:
            return parts[-1]
    return ""


@contextlib.contextmanager
def running(ctd, prefix: str, n: int, config: str):
    """`n` pods sleeping, started one by one with `config`; the list (a test may add pods) is removed at the end,
    and nothing of any of them may be left."""
    tag = uuid.uuid4().hex[:6]
    pods = [f"{prefix}-{tag}-{i}" for i in range(n)]
    started = []
    try:
        for cid in pods:
            started.append(cid)
            run(ctd, cid, config, "sleep", "600")
        yield pods
    finally:
        for cid in {*started, *pods}:
            remove(ctd, cid)
    for cid in pods:
        assert_gone(cid)


def wait_gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    return not os.path.exists(f"/proc/{pid}")


def rund_ps() -> dict[str, dict]:
    out = subprocess.run([str(RUND), "ps", "--json"], capture_output=True, text=True, check=True).stdout
    return {v["id"]: v for v in json.loads(out)}


def test_pods_share_a_group_shim_until_it_is_full_and_one_pod_goes_alone(rund_containerd, configs):
    ctd = rund_containerd
    with running(ctd, "grp", 4, configs[3]) as pods:
        shims = [shim_of(ctd, cid) for cid in pods]
        assert shims[0] == shims[1] == shims[2] != shims[3], shims     # 3 per shim, then a new one
        for cid in pods:
            exec_echo(ctd, cid, f"hello {cid}")
        ps = rund_ps()
        assert [ps[c]["shim_pid"] for c in pods] == shims
        assert [ps[c]["shim_sandboxes"] for c in pods] == [3, 3, 3, 1]
        assert ps[pods[0]]["shim_pss_bytes"] > 0 and ps[pods[0]]["state"] == "running"

        remove(ctd, pods[0])               # the pod that started the group goes: its bundle (log FIFO) with it
        assert_gone(pods[0])
        for cid in (pods[1], pods[2]):
            exec_echo(ctd, cid, "still here")
            assert task_status(ctd, cid) == "RUNNING"
        assert shim_of(ctd, pods[1]) == shims[0]
        assert not os.path.exists(address.socket_path(address.socket_address(ctd.address, "default", pods[0])))

        for i in (4, 5, 6):                                           # its place in the group is free again
            pods.append(f"{pods[0][:-2]}-{i}")
            run(ctd, pods[-1], configs[3], "sleep", "600")
            exec_echo(ctd, pods[-1], "joined")
        live = pods[1:]
        assert sorted(shim_of(ctd, c) for c in live) == sorted([shims[0]] * 3 + [shims[3]] * 3)   # two full groups
        logged = ctd.log_path.read_text(errors="replace").splitlines()   # the group still logs where containerd reads
        joined = [c for c in pods[4:] if shim_of(ctd, c) == shims[0]]
        assert joined and all(any(f"serving sandbox {c} on " in line and "a group shim" in line for line in logged)
                              for c in joined)
    for pid in set(shims):
        assert wait_gone(pid), f"shim {pid} still runs with no pod left"


def test_killing_a_group_shim_takes_its_pods_down_and_leaves_nothing_behind(rund_containerd, configs):
    ctd = rund_containerd
    with running(ctd, "grpk", 3, configs[3]) as pods:
        shim = shim_of(ctd, pods[0])
        assert {shim_of(ctd, c) for c in pods} == {shim}
        vmms = [p for c in pods for p in qemu_processes_of(c)]
        assert len(vmms) == 3

        os.kill(shim, signal.SIGKILL)
        assert wait_gone(shim)
        deadline = time.monotonic() + 60                              # containerd: connection closed, `delete`
        while any(task_status(ctd, c) == "RUNNING" for c in pods) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [task_status(ctd, c) for c in pods] == [""] * 3, ctd.log_tail()   # deleted: exit 137 published
        for pid in vmms:
            assert wait_gone(pid), f"QEMU {pid} outlived its shim"
    for cid in pods:
        assert not (STATE_DIR / "default" / cid).exists()
    dead = [p for p in (STATE_DIR / group_registry.GROUPS_DIR).glob(f"*/*{group_registry.CONTROL_SUFFIX}")
            if not group_registry._listening(str(p))]
    assert dead == []                                                 # `delete` swept the dead group's control


def test_with_one_pod_per_shim_every_pod_has_its_own_shim(rund_containerd, configs):
    ctd = rund_containerd
    with running(ctd, "grp1", 2, configs[1]) as pods:
        shims = [shim_of(ctd, c) for c in pods]
        assert shims[0] != shims[1]
        logged = ctd.log_path.read_text(errors="replace")
        serving = [line for line in logged.splitlines() if "serving sandbox " in line and any(c in line for c in pods)]
        assert len(serving) == 2 and not any("group" in line for line in serving), serving
        assert all(rund_ps()[c]["shim_sandboxes"] == 1 for c in pods)


def test_a_group_started_without_the_fork_server_takes_pods_too(rund_containerd, configs):
    ctd = rund_containerd
    with running(ctd, "grpx", 3, configs["exec"]) as pods:
        shims = [shim_of(ctd, c) for c in pods]
        assert shims[0] == shims[1] != shims[2], shims
        for cid in pods:
            exec_echo(ctd, cid, cid)
        logged = ctd.log_path.read_text(errors="replace").splitlines()
        assert any(f"started by start with sandbox {pods[0]}" in line for line in logged)
