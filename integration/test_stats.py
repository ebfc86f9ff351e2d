"""A container's stats through containerd follow what it allocates: `ctr task metrics` on a rund container, and CRI's
ContainerStats side by side for runc and rund (a rund failure where runc passes is rund's).

The allocation is 64 MiB of anonymous memory: busybox `dd` reads /dev/zero into one 64 MiB buffer, then blocks
writing it into a pipe nobody reads, holding the buffer until `killall dd`. rund's figures come from the container's
cgroup v2 group in the guest, runc's from its cgroup on this (v1 hybrid) host.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import time

import grpc
import pytest

from integration.cri.client import container_config, sandbox_config
from integration.test_cri_pods import HANDLERS, Steps

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]

RUNTIME = "io.containerd.rund.v2"
MiB = 1 << 20
HOG = "dd if=/dev/zero bs=64M count=1 2>/dev/null | sleep 600"
BACKGROUND_HOG = f"({HOG}) </dev/null >/dev/null 2>&1 &"   # ExecSync returns once its output closes


def poll(read, done, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not done(value := read()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value}")
        time.sleep(0.5)
    return value


# ---- ctr task metrics


def ctr_metrics(ctd, cid: str) -> dict:
    """`ctr task metrics --format json`: the task's Metrics as ctr decodes them (cgroups v1 or v2, by type)."""
    return json.loads(ctd.ctr("task", "metrics", "--format", "json", cid).stdout)


def figures(data: dict) -> dict:
    """usage, rss, page faults and the working set's inactive file from either Metrics type's JSON."""
    memory = data.get("memory", {})
    if "usage" in memory and isinstance(memory["usage"], dict):   # v1: MemoryEntry usage, total_* (hierarchical)
        return {"usage": memory["usage"].get("usage", 0), "rss": memory.get("total_rss", 0),
                "pgfault": memory.get("total_pgfault", memory.get("total_pg_fault", 0)),
                "inactive_file": memory.get("total_inactive_file", 0)}
    return {"usage": memory.get("usage", 0), "rss": memory.get("anon", 0), "pgfault": memory.get("pgfault", 0),
            "inactive_file": memory.get("inactive_file", 0)}


@pytest.fixture
def sleeper(rund_containerd):
    ctd, cid = rund_containerd, "stats-box"
    ctd.ctr("run", "-d", "--runtime", RUNTIME, ctd.image, cid, "sleep", "600", timeout=300)
    try:
        yield cid
    finally:
        ctd.ctr("task", "kill", "-s", "KILL", cid, check=False)
        ctd.ctr("task", "delete", "-f", cid, check=False)
        ctd.ctr("container", "delete", cid, check=False)


def test_ctr_metrics_of_a_rund_container_follow_its_allocation(rund_containerd, sleeper):
    ctd = rund_containerd
    before = figures(ctr_metrics(ctd, sleeper))
    hog = subprocess.Popen(["ctr", "--address", ctd.address, "task", "exec", "--exec-id", "hog", sleeper,
                            "sh", "-c", HOG], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        held = poll(lambda: figures(ctr_metrics(ctd, sleeper)), lambda f: f["rss"] >= before["rss"] + 60 * MiB,
                    60, "rss to grow by 60 MiB")
        assert held["usage"] - before["usage"] >= 60 * MiB, (before, held)
        assert held["usage"] - held["inactive_file"] >= 60 * MiB, held          # CRI's working set
        assert held["pgfault"] - before["pgfault"] >= 0.9 * (64 * MiB // 4096), (before, held)
        ctd.ctr("task", "exec", "--exec-id", "free", sleeper, "killall", "dd")
        freed = poll(lambda: figures(ctr_metrics(ctd, sleeper)), lambda f: f["rss"] <= held["rss"] - 60 * MiB,
                     30, "rss to fall by 60 MiB once dd is killed")
        assert held["usage"] - freed["usage"] >= 60 * MiB, (held, freed)
    finally:
        hog.kill()
        hog.wait()


# ---- CRI ContainerStats, runc and rund


def cri_memory(cri, cid: str) -> dict:
    s = cri.container_stats(cid)
    m = s.memory
    return {"working_set": m.working_set_bytes.value, "usage": m.usage_bytes.value, "rss": m.rss_bytes.value,
            "available": m.available_bytes.value, "page_faults": m.page_faults.value,
            "major_page_faults": m.major_page_faults.value, "cpu": s.cpu.usage_core_nano_seconds.value}


@pytest.mark.parametrize("handler", HANDLERS)
def test_cri_container_stats_follow_allocation(cri, cri_containerd, handler):
    ctd = cri_containerd
    name = f"stats-{handler}"
    pod = sandbox_config(name, log_directory=str(ctd.log_dir / name))
    step = Steps(ctd, handler)
    limit = 192 * MiB
    sid = None
    try:
        with step("RunPodSandbox"):
            sid = cri.run_pod_sandbox(pod, handler)
            step.ids.append(sid)
        with step("CreateContainer, StartContainer"):
            cid = cri.create_container(sid, container_config("app", ctd.image, ["sleep", "600"]), pod)
            step.ids.append(cid)
            capped = cri.create_container(sid, container_config("capped", ctd.image, ["sleep", "600"],
                                                                memory_limit=limit), pod)
            step.ids.append(capped)
            cri.start_container(cid)
            cri.start_container(capped)
        with step("ContainerStats before"):
            before = cri_memory(cri, cid)
            assert before["usage"] > 0 and before["available"] == 0, before   # no limit: nothing "available"
        with step("ExecSync: allocate 64 MiB"):
            res = cri.exec_sync(cid, ["sh", "-c", BACKGROUND_HOG], timeout=30)
            assert res.exit_code == 0, res
        with step("ContainerStats: rss, usage, working set and page faults grow"):
            held = poll(lambda: cri_memory(cri, cid), lambda m: m["rss"] >= before["rss"] + 60 * MiB, 60,
                        f"[{handler}] rss to grow by 60 MiB")
            for key in ("usage", "working_set"):
                assert held[key] - before[key] >= 60 * MiB, (key, before, held)
            assert held["page_faults"] - before["page_faults"] >= 0.9 * (64 * MiB // 4096), (before, held)
            assert held["major_page_faults"] >= before["major_page_faults"]
            assert held["cpu"] > before["cpu"] > 0, (before, held)
        with step("ContainerStats of a limited container: available = limit - working set"):
            assert cri.exec_sync(capped, ["sh", "-c", BACKGROUND_HOG], timeout=30).exit_code == 0
            m = poll(lambda: cri_memory(cri, capped), lambda m: m["rss"] >= 60 * MiB, 60,
                     f"[{handler}] the limited container's rss to reach 60 MiB")
            assert m["available"] == limit - m["working_set"], m
        with step("ListContainerStats"):
            listed = {s.attributes.id: s for s in cri.list_container_stats(pod_sandbox_id=sid)}
            assert set(listed) == {cid, capped}
            assert listed[cid].memory.rss_bytes.value >= before["rss"] + 60 * MiB
        with step("ContainerStats: the memory comes back when freed"):
            assert cri.exec_sync(cid, ["killall", "dd"], timeout=30).exit_code == 0
            # the 64 MiB go; the working set also counts page cache the exec and killall just read (a few MiB), and
            # the guest kernel uncharges freed pages in batches: usage can trail rss for a moment (25 MiB seen)
            freed = poll(lambda: cri_memory(cri, cid),
                         lambda m: (m["rss"] <= held["rss"] - 60 * MiB
                                    and held["working_set"] - m["working_set"] >= 56 * MiB), 30,
                         f"[{handler}] rss to fall by 60 MiB and the working set by 56")
            assert freed["page_faults"] >= held["page_faults"]
    finally:
        if sid is not None:
            with contextlib.suppress(grpc.RpcError):
                cri.remove_pod(sid)


# ---- CRI PodSandboxStats, runc and rund: the pod's cgroup holds what runs the pod


@pytest.fixture
def pod_cgroup_parent():
    """A pod cgroup the way kubelet makes one before RunPodSandbox (cgroup_parent), removed afterwards."""
    import os
    import uuid
    from rund.resources.cgroups import select_driver
    driver = select_driver("rund", "v1")
    uid = uuid.uuid4().hex
    parent = f"/rund-test-kubepods/pod{uid}"
    driver.prepare_parent(parent)
    yield driver, parent, uid
    for root in driver.roots:
        for directory in (f"{root}{parent}", f"{root}/rund-test-kubepods"):
            with contextlib.suppress(FileNotFoundError, OSError):
                os.rmdir(directory)


def cri_pod_figures(cri, sid: str) -> dict:
    s = cri.pod_sandbox_stats(sid).linux
    return {"cpu": s.cpu.usage_core_nano_seconds.value, "working_set": s.memory.working_set_bytes.value,
            "usage": s.memory.usage_bytes.value, "containers": {c.attributes.metadata.name for c in s.containers}}


@pytest.mark.parametrize("handler", HANDLERS)
def test_cri_pod_stats_count_what_runs_the_pod(cri, cri_containerd, handler, pod_cgroup_parent):
    """kubelet and containerd's PodSandboxStats read the pod's cgroup_parent: runc's pause and containers are there;
    rund's VMM must be too (at the sandbox's cgroupsPath), or the pod reads as using nothing."""
    import os
    ctd = cri_containerd
    driver, parent, uid = pod_cgroup_parent
    name = f"podstats-{handler}"
    pod = sandbox_config(name, uid=uid, log_directory=str(ctd.log_dir / name), cgroup_parent=parent)
    step = Steps(ctd, handler)
    sid = None
    try:
        with step("RunPodSandbox, CreateContainer, StartContainer"):
            sid = cri.run_pod_sandbox(pod, handler)
            step.ids.append(sid)
            cid = cri.create_container(sid, container_config("app", ctd.image, ["sleep", "600"]), pod)
            step.ids.append(cid)
            cri.start_container(cid)
        memory_root = next(r for r in driver.roots if r.endswith("/memory"))
        sandbox_cgroup = f"{memory_root}{parent}/{sid}"
        with step("the sandbox's cgroup (its cgroupsPath) holds what runs the pod"):
            pids = [int(p) for p in open(f"{sandbox_cgroup}/cgroup.procs").read().split()]
            assert pids, sandbox_cgroup
            if handler == "rund":
                assert {open(f"/proc/{p}/comm").read().strip() for p in pids} == {"qemu-system-x86"}, pids
        with step("PodSandboxStats: cpu and memory of the pod, its container listed"):
            before = poll(lambda: cri_pod_figures(cri, sid), lambda f: f["cpu"] > 0 and f["working_set"] > 0, 30,
                          f"[{handler}] pod stats to show cpu and memory")
            assert before["containers"] == {"app"}, before
        with step("PodSandboxStats grow with a container's allocation"):
            assert cri.exec_sync(cid, ["sh", "-c", BACKGROUND_HOG], timeout=30).exit_code == 0
            held = poll(lambda: cri_pod_figures(cri, sid),
                        lambda f: f["working_set"] >= before["working_set"] + 60 * MiB, 60,
                        f"[{handler}] the pod's working set to grow by 60 MiB")
            assert held["cpu"] > before["cpu"], (before, held)
        with step("RemovePodSandbox: the sandbox's cgroup is gone in every hierarchy"):
            cri.remove_pod(sid)
            sid = None
            left = [f"{root}{parent}" for root in driver.roots if os.listdir(f"{root}{parent}") and any(
                os.path.isdir(os.path.join(f"{root}{parent}", d)) for d in os.listdir(f"{root}{parent}"))]
            assert not left, left
    finally:
        if sid is not None:
            with contextlib.suppress(grpc.RpcError):
                cri.remove_pod(sid)
