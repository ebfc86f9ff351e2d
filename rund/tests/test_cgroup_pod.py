"""The VMM's cgroup at a CRI pod's cgroupsPath (rund/resources/cgroups/pod_cgroup.py): path layout without root, and
the real thing on this host's hierarchies (root)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from rund.config import CgroupConfig, Config
from rund.resources.cgroups import CgroupLimits, CgroupUnavailable, InvalidCgroupPath, PodCgroup, \
    resolve_cgroups_path, select_driver
from rund.resources.cgroups.mounts import read_mounts
from rund.resources.cgroups.pod_cgroup import expand_slice
from rund.runtime import vmm_cgroup


@pytest.mark.parametrize("spec, path", [
    ("/kubepods/burstable/pod1/abc", "/kubepods/burstable/pod1/abc"),
    ("kubepods/pod1//abc/", "/kubepods/pod1/abc"),                       # cleaned as runc cleans it
    ("/k8s.io/abc", "/k8s.io/abc"),                                      # containerd's default without a parent
    ("kubepods-burstable-pod1.slice:cri-containerd:abc",
     "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc.scope"),
    (":cri-containerd:abc", "/system.slice/cri-containerd-abc.scope"),
    ("-.slice:p:abc", "/p-abc.scope"),
    ("kubepods.slice:p:sub.slice", "/kubepods.slice/sub.slice"),
])
def test_a_cgroups_path_resolves_as_runc_lays_it_out(spec, path):
    assert resolve_cgroups_path(spec) == path


@pytest.mark.parametrize("spec", ["/", "", "../x", "/a/../../b", "/a/./b", "/a\0b", "/" + "x" * 256,
                                  "notaslice:p:n", "a--b.slice:p:n", "-a.slice:p:n", "a.slice:p:", "a:b",
                                  "a.slice:p:n:extra", "a/b.slice:p:n"])
def test_a_cgroups_path_that_leaves_the_hierarchy_or_is_malformed_is_refused(spec):
    with pytest.raises(InvalidCgroupPath):
        resolve_cgroups_path(spec)


def test_slices_nest_by_their_dashes():
    assert expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert expand_slice("-.slice") == ""


def test_only_a_cri_pod_with_a_cgroups_path_and_the_switch_on_is_placed():
    on, off = Config(), Config(cgroups=CgroupConfig(pod_cgroup=False))
    assert vmm_cgroup.pod_cgroup_path(on, "/kubepods/pod1/abc") == "/kubepods/pod1/abc"
    assert vmm_cgroup.pod_cgroup_path(on, "") == ""
    assert vmm_cgroup.pod_cgroup_path(off, "/kubepods/pod1/abc") == ""


# ---- on this host's hierarchies (root)

needs_v1 = pytest.mark.skipif(os.geteuid() != 0 or not any(m.version == 1 for m in read_mounts()),
                              reason="needs root and a cgroup v1 hierarchy")


@pytest.fixture
def pod_parent():
    """A kubelet-like pod cgroup (made in every v1 hierarchy, cpuset filled as kubelet does), removed afterwards."""
    driver = select_driver("rund", "v1")
    parent = f"/rund-test-kubepods-{os.getpid()}/pod{time.monotonic_ns()}"
    driver.prepare_parent(parent)
    yield driver, parent
    for root in driver.roots:
        for directory in (root + parent, os.path.dirname(root + parent)):
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass


def _cgroup_of(pid: int, controller: str) -> str:
    for line in open(f"/proc/{pid}/cgroup"):
        _, controllers, path = line.strip().split(":", 2)
        if controller in controllers.split(","):
            return path
    raise AssertionError(f"{pid} has no {controller} cgroup")


@pytest.mark.root
@needs_v1
def test_the_vmm_runs_in_the_pod_cgroup_bounded_and_nothing_is_left(pod_parent):
    driver, parent = pod_parent
    path = f"{parent}/sandbox1"
    limits = CgroupLimits(memory_limit_bytes=300 << 20)
    cgroup = PodCgroup.create(driver, path, limits)
    try:
        memory = next(p for p in cgroup.paths if "/memory/" in p)
        assert int(open(f"{memory}/memory.limit_in_bytes").read()) == 300 << 20
        cpuset = next((p for p in cgroup.paths if "/cpuset/" in p), None)
        if cpuset:      # a v1 cpuset under a parent without clone_children starts empty: filled from the parent
            assert open(f"{cpuset}/cpuset.cpus").read().strip()
        vmm = subprocess.Popen(["sleep", "600"], preexec_fn=cgroup.placement())
        assert _cgroup_of(vmm.pid, "memory") == path
        assert _cgroup_of(vmm.pid, "cpu") == path
        # A second create of the same path is refused while a process is inside: it is someone else's.
        with pytest.raises(CgroupUnavailable):
            PodCgroup.create(driver, path)
        cgroup.update(CgroupLimits(memory_limit_bytes=400 << 20))
        assert int(open(f"{memory}/memory.limit_in_bytes").read()) == 400 << 20
    finally:
        cgroup.remove()
    assert vmm.wait(timeout=10) == -9
    assert not any(os.path.exists(p) for p in cgroup.paths)
    assert all(os.path.isdir(root + parent) for root in driver.roots)    # kubelet's pod cgroup stays
    cgroup.remove()                                                      # idempotent


@pytest.mark.root
@needs_v1
def test_delete_after_a_crash_removes_the_recorded_pod_cgroup(pod_parent):
    driver, parent = pod_parent
    path = f"{parent}/sandbox2"
    cgroup = PodCgroup.create(driver, path)
    orphan = subprocess.Popen(["sleep", "600"], preexec_fn=cgroup.placement())   # the crashed shim's VMM
    vmm_cgroup.release_recorded(Config(), leased=False, placed_path=path)
    assert orphan.wait(timeout=10) == -9
    assert not any(os.path.exists(p) for p in cgroup.paths)


def test_v2_enables_controllers_down_to_the_pod_cgroup_but_not_in_the_vmm_s_own(tmp_path):
    """cgroup v2's no-internal-process rule: the cgroup the VMM joins must not enable controllers for children."""
    from rund.resources.cgroups.mounts import CgroupMount
    from rund.resources.cgroups.v2 import V2Driver
    root = tmp_path / "unified"
    for level in (root, root / "kubepods", root / "kubepods" / "pod1"):      # kubelet's levels
        level.mkdir(parents=True, exist_ok=True)
        (level / "cgroup.subtree_control").write_text("")
    (root / "cgroup.controllers").write_text("cpu memory pids")
    driver = V2Driver((CgroupMount(str(root), 2, frozenset()),), "rund")
    driver.make_cgroup("/kubepods/pod1/sandbox1")
    for level in (root, root / "kubepods", root / "kubepods" / "pod1"):
        assert (level / "cgroup.subtree_control").read_text() == "+cpu +memory +pids", level
    assert (root / "kubepods" / "pod1" / "sandbox1").is_dir()
    assert not (root / "kubepods" / "pod1" / "sandbox1" / "cgroup.subtree_control").exists()
