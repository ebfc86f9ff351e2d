"""The pod's VM grows with its containers, end to end through containerd (ctr and CRI), and its VMM's host cgroup
bounds it: a container with a 400 MiB limit allocates 300 MiB, one without a limit allocates 100 MB, the VMM's host
memory limit is the VM's memory plus the VMM's overhead, UpdateContainerResources resizes the VM live, and a
container that leaves gives its memory back.

Allocation is `dd bs=<N>M count=1`: dd holds one buffer of N MiB and read(2) from /dev/zero fills all of it, so
that much anonymous memory is really touched (no tmpfs, no page cache)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from integration.cri.client import api, container_config, sandbox_config
from integration.rund_leaks import qemu_processes_of
from rund.config import Config

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]

RUNTIME = "io.containerd.rund.v2"
TIMEOUT = 300
MiB = 1 << 20
HV = Config().hypervisor                 # the shims run with rund's defaults here
BOOT, HEADROOM, OVERHEAD = HV.memory_mib, HV.default_container_memory_mib, HV.vmm_overhead_mib


def vmm_memory_limit_mib(sandbox_id: str, namespace: str = "default") -> int:
    """The memory limit of the cgroup the sandbox's QEMU runs in (v1 memory controller or v2), in MiB."""
    [pid] = qemu_processes_of(sandbox_id, namespace)
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return int(Path(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes").read_text()) // MiB
    path = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
    return int(Path(f"/sys/fs/cgroup{path}/memory.max").read_text()) // MiB


def eventually(read, expected, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while (got := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert got == expected
    return got


# ---- ctr ---------------------------------------------------------------------------------------------------------


def run(ctd, cid: str, script: str, *opts: str):
    return ctd.ctr("run", "--rm", "--runtime", RUNTIME, *opts, ctd.image, cid, "sh", "-c", script, check=False,
                   timeout=TIMEOUT)


def test_a_container_with_a_400_mib_limit_allocates_300_mib(rund_containerd):
    res = run(rund_containerd, "mem400", "dd if=/dev/zero of=/dev/null bs=300M count=1 && grep MemTotal "
              "/proc/meminfo", "--memory-limit", str(400 * MiB))
    assert res.returncode == 0, res.stderr.decode() + rund_containerd.log_tail()
    total_mib = int(res.stdout.split()[-2]) // 1024
    assert total_mib >= BOOT // 2 + 400, total_mib     # the guest grew by the limit (its boot memory shows ~153)


def test_a_container_without_a_limit_allocates_100_mb_with_the_default_headroom(rund_containerd):
    res = run(rund_containerd, "memfree", "dd if=/dev/zero of=/dev/null bs=100M count=1 && grep MemTotal "
              "/proc/meminfo")
    assert res.returncode == 0, res.stderr.decode() + rund_containerd.log_tail()
    total_mib = int(res.stdout.split()[-2]) // 1024
    assert total_mib >= BOOT // 2 + HEADROOM, total_mib


def test_the_vmms_host_cgroup_is_bounded_at_the_vm_plus_its_overhead(rund_containerd):
    ctd = rund_containerd
    ctd.ctr("run", "-d", "--runtime", RUNTIME, "--memory-limit", str(400 * MiB), ctd.image, "bounded",
            "sleep", "600", timeout=TIMEOUT)
    try:
        assert vmm_memory_limit_mib("bounded") == BOOT + 400 + OVERHEAD
    finally:
        ctd.ctr("task", "kill", "-s", "KILL", "bounded", check=False)
        eventually(lambda: any(line.split()[:1] == ["bounded"] and line.endswith("STOPPED")
                               for line in ctd.ctr("task", "ls").stdout.decode().splitlines()), True)
        ctd.ctr("task", "delete", "bounded", check=False)
        ctd.ctr("container", "delete", "bounded", check=False)


# ---- CRI: a pod of several containers, UpdateContainerResources -------------------------------------------------


def guest_mem_total_mib(cri, cid: str) -> int:
    res = cri.exec_sync(cid, ["grep", "MemTotal", "/proc/meminfo"], timeout=60)
    assert res.exit_code == 0, res.stderr
    return int(res.stdout.split()[1]) // 1024


def pod_helpers(cri, ctd, sid: str, config):
    """start(name, memory_limit=0): a started `sleep` container of the pod; limit(): its VMM's host bound, MiB."""
    def start(name: str, memory_limit: int = 0) -> str:
        cid = cri.create_container(sid, container_config(name, ctd.image, ["sleep", "600"],
                                                         memory_limit=memory_limit), config)
        cri.start_container(cid)
        return cid

    def limit() -> int:
        return vmm_memory_limit_mib(sid, "k8s.io")
    return start, limit


def test_a_pods_vm_follows_its_containers_and_resource_updates(cri, cri_containerd):
    ctd = cri_containerd
    config = sandbox_config("memory-pod", log_directory=str(ctd.log_dir / "memory-pod"))
    sid = cri.run_pod_sandbox(config, "rund")
    try:
        start, limit = pod_helpers(cri, ctd, sid, config)

        # The pause container adds nothing; a container without a limit adds the default headroom.
        watcher = start("watcher")
        base_total = guest_mem_total_mib(cri, watcher) - HEADROOM
        assert limit() == BOOT + HEADROOM + OVERHEAD
        app = start("app", 200 * MiB)
        assert guest_mem_total_mib(cri, watcher) == base_total + HEADROOM + 200
        assert limit() == BOOT + HEADROOM + 200 + OVERHEAD

        # UpdateContainerResources resizes the VM live: up at once, down once the guest has unplugged.
        cri.update_container_resources(app, api.LinuxContainerResources(memory_limit_in_bytes=600 * MiB))
        assert guest_mem_total_mib(cri, watcher) == base_total + HEADROOM + 600
        assert limit() == BOOT + HEADROOM + 600 + OVERHEAD
        res = cri.exec_sync(app, ["dd", "if=/dev/zero", "of=/dev/null", "bs=450M", "count=1"], timeout=120)
        assert res.exit_code == 0, res.stderr                 # the new limit is usable in the guest
        cri.update_container_resources(app, api.LinuxContainerResources(memory_limit_in_bytes=300 * MiB))
        eventually(lambda: guest_mem_total_mib(cri, watcher), base_total + HEADROOM + 300)
        eventually(limit, BOOT + HEADROOM + 300 + OVERHEAD)

        # A container that leaves gives its memory back; the pod's VM stays.
        cri.stop_container(app, timeout=0)
        cri.remove_container(app)
        eventually(lambda: guest_mem_total_mib(cri, watcher), base_total + HEADROOM)
        eventually(limit, BOOT + HEADROOM + OVERHEAD)
    finally:
        cri.remove_pod(sid)
