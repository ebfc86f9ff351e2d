"""guest_spec(): what of the host's OCI spec crosses into the VM. Pure, no root.

The base spec is what containerd 1.6.20's `ctr oci spec` writes (ctr_oci_spec.json, captured on this machine); each
test adds what CRI or `ctr run --mount` would add on top of it.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from rund.errors import InvalidArgument
from rund.runtime.guest_spec import guest_spec
from rund.runtime.pod_namespaces import PodNamespaces

CTR_SPEC = json.loads((Path(__file__).parent / "ctr_oci_spec.json").read_text())


def destinations(spec: dict) -> list[str]:
    return [m["destination"] for m in spec["mounts"]]


@pytest.fixture
def host_spec() -> dict:
    """A ctr spec with what CRI adds for a pod member: host binds, a cgroup mount, namespace paths, hooks, seccomp."""
    spec = copy.deepcopy(CTR_SPEC)
    spec["hooks"] = {"prestart": [{"path": "/usr/bin/nvidia-container-runtime-hook", "args": ["hook", "prestart"]}]}
    spec["mounts"] += [
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        {"destination": "/etc/hosts", "type": "bind",
         "source": "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/hosts",
         "options": ["rbind", "rprivate", "rw"]},
        # ctr run --mount type=bind,... and the CRI's own rbind mounts without a type
        {"destination": "/data", "source": "/srv/data", "options": ["rbind", "ro"]},
        {"destination": "/cache", "type": "none", "source": "/var/cache/app", "options": ["bind"]},
        {"destination": "/nfs", "type": "nfs", "source": "server:/export", "options": ["vers=4"]},
        {"destination": "/overlay", "type": "overlay", "source": "overlay",
         "options": ["lowerdir=/a:/b"]},
    ]
    spec["linux"]["cgroupsPath"] = "kubepods-besteffort-podabc.slice:cri-containerd:abc"
    spec["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}
    spec["linux"]["namespaces"] = [
        {"type": "pid"},
        {"type": "ipc", "path": "/proc/4242/ns/ipc"},
        {"type": "uts", "path": "/proc/4242/ns/uts"},
        {"type": "mount"},
        {"type": "network", "path": "/var/run/netns/cni-1234"},
    ]
    return spec


def test_the_plain_ctr_spec_keeps_every_mount_and_loses_only_the_cgroup_path():
    out = guest_spec(CTR_SPEC)
    assert out.dropped_mounts == ()
    assert out.spec["mounts"] == CTR_SPEC["mounts"]
    assert "cgroupsPath" not in out.spec["linux"]
    assert out.spec["linux"]["namespaces"] == CTR_SPEC["linux"]["namespaces"]
    assert out.spec["process"] == CTR_SPEC["process"]
    assert out.spec["root"] == CTR_SPEC["root"]
    assert out.spec["linux"]["maskedPaths"] == CTR_SPEC["linux"]["maskedPaths"]


def test_hooks_and_cgroups_path_are_dropped_seccomp_kept_for_the_guest(host_spec):
    out = guest_spec(host_spec).spec
    assert "hooks" not in out
    assert "cgroupsPath" not in out["linux"]
    assert out["linux"]["seccomp"] == host_spec["linux"]["seccomp"]    # the agent applies it
    assert out["linux"]["resources"] == host_spec["linux"]["resources"]


@pytest.mark.parametrize("limit", [1, 4096, (6 << 20) - 1])
def test_a_memory_limit_too_small_to_start_is_invalid_argument(host_spec, limit):
    host_spec["linux"]["resources"]["memory"] = {"limit": limit}
    with pytest.raises(InvalidArgument, match="memory.limit"):
        guest_spec(host_spec)


def test_a_memory_limit_of_6_mib_or_none_is_accepted(host_spec):
    host_spec["linux"]["resources"]["memory"] = {"limit": 6 << 20}
    guest_spec(host_spec)
    host_spec["linux"]["resources"]["memory"] = {"limit": 0}
    guest_spec(host_spec)


def test_binds_become_volumes_other_host_mounts_are_dropped_kernel_ones_kept(host_spec):
    out = guest_spec(host_spec)
    assert set(out.dropped_mounts) == {"/nfs", "/overlay"}
    assert destinations(out.spec) == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/run",
                                      "/sys/fs/cgroup", "/etc/hosts", "/data", "/cache"]
    assert [m["source"] for m in out.spec["mounts"][-3:]] == ["rund-volume:0", "rund-volume:1", "rund-volume:2"]
    assert [(v.index, v.source, v.readonly) for v in out.volumes] == [
        (0, "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/hosts", False), (1, "/srv/data", True),
        (2, "/var/cache/app", False)]


@pytest.mark.parametrize("propagation", ["rshared", "shared"])
def test_a_bidirectional_volume_is_refused_naming_the_mount(propagation):
    mount = {"destination": "/shared", "type": "bind", "source": "/srv", "options": ["rbind", propagation]}
    with pytest.raises(InvalidArgument, match=f"mount /shared: propagation '{propagation}'"):
        guest_spec({**copy.deepcopy(CTR_SPEC), "mounts": [mount]})


def test_host_to_container_and_private_volumes_are_kept_with_their_propagation():
    mounts = [{"destination": "/a", "type": "bind", "source": "/srv", "options": ["rbind", "rslave"]},
              {"destination": "/b", "type": "bind", "source": "/srv", "options": ["rbind", "rprivate", "ro"]},
              {"destination": "/c", "type": "bind", "source": "/srv", "options": ["bind"]}]
    out = guest_spec({**copy.deepcopy(CTR_SPEC), "mounts": mounts})
    assert [m["options"] for m in out.spec["mounts"]] == [m["options"] for m in mounts]     # the guest's bind too
    a, b, c = out.volumes
    assert (a.propagation, a.recursive, a.readonly) == (0x80000 | 0x4000, True, False)      # MS_SLAVE | MS_REC
    assert (b.propagation, b.readonly) == (0x40000 | 0x4000, True)                          # MS_PRIVATE | MS_REC
    assert (c.propagation, c.recursive) == (0x40000 | 0x4000, False)                        # private by default


def test_a_relative_volume_source_is_invalid_argument():
    mount = {"destination": "/x", "type": "bind", "source": "srv"}
    with pytest.raises(InvalidArgument, match="mount /x: source 'srv' is not an absolute path"):
        guest_spec({**copy.deepcopy(CTR_SPEC), "mounts": [mount]})


@pytest.mark.parametrize("mount", [
    {"destination": "/x", "type": "bind", "source": "/x"},
    {"destination": "/x", "type": "tmpfs", "source": "/x", "options": ["bind"]},
    {"destination": "/x", "type": "sysfs", "source": "/x", "options": ["rbind", "ro"]},
], ids=["type-bind", "option-bind", "option-rbind"])
def test_each_kind_of_bind_is_a_volume(mount):
    spec = {**copy.deepcopy(CTR_SPEC), "mounts": [mount]}
    out = guest_spec(spec)
    assert out.spec["mounts"] == [{**mount, "source": "rund-volume:0"}] and out.dropped_mounts == ()
    assert [v.source for v in out.volumes] == ["/x"]


@pytest.mark.parametrize("mount", [
    {"destination": "/x", "source": "/x"},
    {"destination": "/x", "type": "ext4", "source": "/dev/sdb1"},
], ids=["no-type", "ext4"])
def test_host_mounts_that_are_not_binds_are_dropped(mount):
    spec = {**copy.deepcopy(CTR_SPEC), "mounts": [mount]}
    out = guest_spec(spec)
    assert out.spec["mounts"] == [] and out.dropped_mounts == ("/x",) and out.volumes == ()


@pytest.mark.parametrize("kind", ["proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"])
def test_kernel_filesystems_are_kept(kind):
    mount = {"destination": "/k", "type": kind, "source": kind, "options": ["nosuid"]}
    out = guest_spec({**copy.deepcopy(CTR_SPEC), "mounts": [mount]})
    assert out.spec["mounts"] == [mount] and out.dropped_mounts == ()


def test_the_sandbox_container_gets_new_ipc_and_uts_and_the_vms_network(host_spec):
    out = guest_spec(host_spec).spec            # the pod's sandbox container: no sandbox pid to join
    assert out["linux"]["namespaces"] == [{"type": t} for t in ("pid", "ipc", "uts", "mount")]


def test_a_pod_member_joins_the_sandbox_containers_namespaces_by_guest_path(host_spec):
    host_spec["linux"]["namespaces"][0] = {"type": "pid", "path": "/proc/4242/ns/pid"}     # pid = POD
    out = guest_spec(host_spec, PodNamespaces(sandbox_pid=57)).spec
    assert out["linux"]["namespaces"] == [
        {"type": "pid", "path": "/proc/57/ns/pid"}, {"type": "ipc", "path": "/proc/57/ns/ipc"},
        {"type": "uts", "path": "/proc/57/ns/uts"}, {"type": "mount"}]


def test_a_plain_ctr_network_namespace_without_path_stays_new():
    out = guest_spec(CTR_SPEC, PodNamespaces(sandbox_pid=57)).spec
    assert out["linux"]["namespaces"] == CTR_SPEC["linux"]["namespaces"]


def test_a_hostname_without_a_private_uts_namespace_is_refused_as_runc_does(host_spec):
    host_spec["hostname"] = "web"                # its uts entry joins the pause container's
    with pytest.raises(InvalidArgument, match="unable to set hostname without a private UTS namespace"):
        guest_spec(host_spec)
    host_spec["linux"]["namespaces"] = [ns for ns in host_spec["linux"]["namespaces"] if ns["type"] != "uts"]
    with pytest.raises(InvalidArgument, match="private UTS"):
        guest_spec(host_spec)                    # no uts entry at all: the host's (a hostNetwork pod)
    host_spec["linux"]["namespaces"].append({"type": "uts"})
    assert guest_spec(host_spec).spec["hostname"] == "web"


def test_cris_dev_shm_becomes_the_pods_tmpfs_in_the_guest_of_the_hosts_size(host_spec, tmp_path):
    host_spec["mounts"].append({"destination": "/dev/shm", "type": "bind", "source": str(tmp_path),
                                "options": ["rbind", "ro"]})
    out = guest_spec(host_spec)
    (shm,) = [m for m in out.spec["mounts"] if m["destination"] == "/dev/shm" and m.get("options") == ["rbind", "ro"]]
    st = os.statvfs(tmp_path)
    assert shm == {"destination": "/dev/shm", "type": "bind", "source": f"rund-pod-shm:{st.f_blocks * st.f_frsize}",
                   "options": ["rbind", "ro"]}
    assert "/dev/shm" not in out.dropped_mounts


def test_the_input_is_not_mutated(host_spec):
    before = copy.deepcopy(host_spec)
    out = guest_spec(host_spec)
    assert host_spec == before
    out.spec["process"]["args"] = ["changed"]
    out.spec["linux"]["namespaces"].append({"type": "user"})
    assert host_spec == before


def test_a_spec_without_mounts_or_linux_is_fine():
    out = guest_spec({"process": {"args": ["/bin/true"], "cwd": "/"}})
    assert out.spec == {"process": {"args": ["/bin/true"], "cwd": "/"}, "mounts": []}
    assert out.dropped_mounts == ()


@pytest.mark.parametrize("bad", [
    [], "config", None, 42,
    {"ociVersion": "1.0.2"},                                  # no process
    {"process": "sh"},                                        # process not an object
    {"process": {}, "mounts": ["/proc"]},                     # a mount that is not an object
    {"process": {}, "mounts": [{"destination": "/proc", "type": "proc"}, None]},
], ids=["list", "str", "none", "int", "no-process", "process-str", "mount-str", "mount-none"])
def test_malformed_specs_are_invalid_argument(bad):
    with pytest.raises(InvalidArgument):
        guest_spec(bad)


def test_small_host_files_are_copied_directories_and_large_files_are_volumes(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    hosts.chmod(0o640)
    big = tmp_path / "big"
    big.write_bytes(b"x" * ((1 << 20) + 1))
    spec = {"process": {"args": ["sh"]}, "mounts": [
        {"destination": "/etc/hosts", "type": "bind", "source": str(hosts), "options": ["rbind", "ro"]},
        {"destination": "/data", "type": "bind", "source": str(tmp_path), "options": ["rbind"]},
        {"destination": "/big", "type": "bind", "source": str(big), "options": ["rbind"]},
        {"destination": "/gone", "type": "bind", "source": str(tmp_path / "missing"), "options": ["rbind"]},
    ]}
    g = guest_spec(spec)
    assert g.spec["mounts"][0] == {"destination": "/etc/hosts", "type": "bind", "source": "rund-file:0",
                                   "options": ["rbind", "ro"]}
    assert [m["source"] for m in g.spec["mounts"][1:]] == ["rund-volume:0", "rund-volume:1", "rund-volume:2"]
    assert [(f.data, f.mode) for f in g.files] == [(b"127.0.0.1 localhost\n", 0o640)]
    # a missing source fails when it is bound (InvalidArgument then, as runc's create fails)
    assert [v.source for v in g.volumes] == [str(tmp_path), str(big), str(tmp_path / "missing")]
    assert g.dropped_mounts == ()
    assert spec["mounts"][0]["source"] == str(hosts)            # the input is left alone


def test_a_privileged_specs_host_device_list_stays_on_the_host(host_spec):
    host_spec["linux"]["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
    host_spec["linux"]["devices"] = [{"path": "/dev/loop4", "type": "b", "major": 7, "minor": 4},
                                     {"path": "/dev/ttyS0", "type": "c", "major": 4, "minor": 64}]
    out = guest_spec(host_spec)
    assert "devices" not in out.spec["linux"] and out.block_devices == ()
    host_spec["linux"]["resources"]["devices"] = [{"allow": False, "access": "rwm"},
                                                  {"allow": True, "type": "b", "major": 7, "minor": 4, "access": "r"}]
    assert [d.key for d in guest_spec(host_spec).block_devices] == ["7:4"]     # a device asked for: plugged
