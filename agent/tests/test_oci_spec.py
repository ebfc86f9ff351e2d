"""OCI runtime-spec validation and translation (pure, no root)."""
import json

import pytest

from agent.errors import InvalidArgument
from agent.linux import mounts as m
from agent.oci.process import U64_MAX
from agent.oci.resources import MAX
from agent.oci.spec import parse_process_document, parse_resources_document, parse_spec


def doc(**overrides) -> dict:
    spec = {"ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"]}}
    spec.update(overrides)
    return spec


def parse(spec: dict):
    return parse_spec(json.dumps(spec).encode())


def field_of(spec) -> str:
    raw = spec if isinstance(spec, bytes) else json.dumps(spec).encode()
    with pytest.raises(InvalidArgument) as info:
        parse_spec(raw)
    assert str(info.value).startswith(info.value.field + ": ")
    return info.value.field


def with_process(**process) -> dict:
    spec = doc()
    spec["process"].update(process)
    return spec


def test_minimal_spec_gets_isolated_namespaces_and_essential_mounts():
    spec = parse(doc(hostname="box"))
    assert spec.process.args == ("sh",)
    assert spec.process.env_dict() == {"PATH": "/bin"}
    assert spec.hostname == "box"
    assert {ns.type for ns in spec.namespaces} == {"pid", "mount", "ipc", "uts", "cgroup"}
    assert all(ns.path is None for ns in spec.namespaces)
    assert [mt.destination for mt in spec.mounts] == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/sys"]
    sys_mount = spec.mounts[-1]
    assert sys_mount.flags & m.MS_RDONLY and sys_mount.flags & m.MS_NOSUID


def test_spec_mounts_are_kept_and_essentials_not_duplicated():
    mounts = [{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
              {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro", "rslave"]}]
    spec = parse(doc(mounts=mounts))
    assert [mt.destination for mt in spec.mounts] == ["/proc", "/sys", "/dev", "/data"]
    dev, data = spec.mounts[2], spec.mounts[3]
    assert dev.data == "mode=755" and dev.flags == m.MS_NOSUID
    assert data.is_bind and data.flags == m.MS_BIND | m.MS_REC | m.MS_RDONLY
    assert data.propagation == m.MS_SLAVE | m.MS_REC
    assert data.field == "mounts[1]"


@pytest.mark.parametrize("spec, field", [
    (b"[1, 2]", "oci_spec_json"),
    (b"\xff", "oci_spec_json"),
    ({"ociVersion": "1.0.2"}, "process"),
    (with_process(args=[]), "process.args"),
    (with_process(args="sh"), "process.args"),
    (with_process(args=["sh", 3]), "process.args[1]"),
    (with_process(cwd="relative"), "process.cwd"),
    (with_process(env=["NOEQUALS"]), "process.env[0]"),
    (with_process(user={"uid": "0", "gid": 0}), "process.user.uid"),
    (with_process(user={"uid": 0}), "process.user.gid"),
    (with_process(user={"uid": -1, "gid": 0}), "process.user.uid"),
    (with_process(user={"uid": 0, "gid": 0, "additionalGids": [True]}), "process.user.additionalGids[0]"),
    (with_process(terminal="yes"), "process.terminal"),
    (with_process(capabilities={"effective": ["CAP_KILL", "CAP_NOPE"]}), "process.capabilities.effective[1]"),
    (with_process(rlimits=[{"type": "RLIMIT_NOPE", "hard": 1, "soft": 1}]), "process.rlimits[0].type"),
    (with_process(rlimits=[{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 2}]), "process.rlimits[0].soft"),
    (with_process(oomScoreAdj=5000), "process.oomScoreAdj"),
    (doc(hostname="h" * 65), "hostname"),
    (doc(hostname="a\u0000b"), "hostname"),
    (doc(mounts=[{"destination": "rel", "type": "tmpfs"}]), "mounts[0].destination"),
    (doc(mounts=[{"destination": "/x"}]), "mounts[0].type"),
    (doc(mounts=[{"destination": "/x", "type": "bind", "source": "rel"}]), "mounts[0].source"),
    (doc(mounts=[{"destination": "/x", "type": "tmpfs", "options": ["a,b"]}]), "mounts[0].options[0]"),
    (doc(linux={"namespaces": [{"type": "user"}]}), "linux.namespaces[0].type"),
    (doc(linux={"namespaces": [{"type": "pid"}, {"type": "pid"}]}), "linux.namespaces[1].type"),
    (doc(linux={"namespaces": [{"type": "bogus"}]}), "linux.namespaces[0].type"),
    (doc(linux={"namespaces": [{"type": "network", "path": "netns"}]}), "linux.namespaces[0].path"),
    (doc(linux={"namespaces": [{"type": "mount", "path": "/proc/1/ns/mnt"}]}), "linux.namespaces[0].path"),
    (doc(hostname="h", linux={"namespaces": [{"type": "uts", "path": "/proc/1/ns/uts"}]}), "hostname"),
    (doc(linux={"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}), "linux.uidMappings"),
    (doc(linux={"sysctl": {"vm.swappiness": "10"}}), "linux.sysctl.vm.swappiness"),
    (doc(linux={"sysctl": {"net.ipv4.ip_forward": 1}}), "linux.sysctl.net.ipv4.ip_forward"),
    (doc(linux={"maskedPaths": ["proc/kcore"]}), "linux.maskedPaths[0]"),
    (doc(linux={"devices": [{"path": "/etc/x", "type": "c", "major": 1, "minor": 3}]}), "linux.devices[0].path"),
    (doc(linux={"devices": [{"path": "/dev/x", "type": "z", "major": 1, "minor": 3}]}), "linux.devices[0].type"),
    (doc(linux={"devices": [{"path": "/dev/x", "type": "c", "minor": 3}]}), "linux.devices[0].major"),
    (doc(linux={"rootfsPropagation": "sideways"}), "linux.rootfsPropagation"),
    (doc(linux={"resources": {"memory": {"limit": "1G"}}}), "linux.resources.memory.limit"),
    (doc(linux={"resources": {"memory": {"limit": 100, "swap": 50}}}), "linux.resources.memory.swap"),
    (doc(linux={"resources": {"cpu": {"shares": 1 << 20}}}), "linux.resources.cpu.shares"),
    (doc(linux={"resources": {"unified": {"../escape": "1"}}}), "linux.resources.unified.../escape"),
])
def test_invalid_specs_name_the_field(spec, field):
    assert field_of(spec) == field


def test_process_details():
    spec = parse(with_process(
        terminal=True, consoleSize={"height": 24, "width": 80},
        user={"uid": 1000, "gid": 100, "umask": 0o027, "additionalGids": [10]},
        capabilities={"bounding": ["CAP_KILL"], "ambient": ["CAP_NET_BIND_SERVICE"]},
        rlimits=[{"type": "RLIMIT_NOFILE", "hard": U64_MAX, "soft": 1024}],
        noNewPrivileges=True, oomScoreAdj=-500, env=["A=1", "B=x=y", "A=2"]))
    p = spec.process
    assert p.terminal and p.console_size == (24, 80)
    assert (p.user.uid, p.user.gid, p.user.umask, p.user.additional_gids) == (1000, 100, 0o027, (10,))
    assert p.capabilities.bounding == (5,) and p.capabilities.ambient == (10,) and p.capabilities.effective == ()
    assert p.rlimits[0].resource == 7 and p.rlimits[0].hard == U64_MAX
    assert p.no_new_privileges and p.oom_score_adj == -500
    assert p.env_dict() == {"A": "2", "B": "x=y"}


def test_namespaces_join_paths_and_network():
    spec = parse(doc(linux={"namespaces": [
        {"type": "pid", "path": "/proc/5/ns/pid"}, {"type": "network"}, {"type": "mount"}]}))
    assert spec.namespace("pid").path == "/proc/5/ns/pid"
    assert spec.namespace("network").path is None
    assert spec.namespace("uts") is not None  # always private, listed or not
    assert spec.namespace("cgroup").path is None   # private too: /sys/fs/cgroup shows its own cgroup


def test_namespaced_sysctls_are_accepted():
    spec = parse(doc(linux={"sysctl": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1024",
                                       "fs.mqueue.msg_max": "20"}}))
    assert dict(spec.sysctl) == {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1024", "fs.mqueue.msg_max": "20"}


def test_resources():
    r = parse_resources_document(json.dumps({
        "memory": {"limit": 1 << 30, "swap": -1, "reservation": 1 << 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1"},
        "pids": {"limit": 100}, "blockIO": {"weight": 500},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}],
        "unified": {"memory.high": "500M"}}).encode())
    assert (r.memory_limit, r.memory_swap, r.memory_reservation) == (1 << 30, MAX, 1 << 20)
    assert (r.cpu_shares, r.cpu_quota, r.cpu_period, r.cpuset_cpus) == (512, 50000, 100000, "0-1")
    assert (r.pids_limit, r.blkio_weight, r.hugepage_limits) == (100, 500, (("2MB", 1 << 21),))
    assert r.unified == (("memory.high", "500M"),)
    assert parse_resources_document(b"{}").is_empty()


def test_exec_process_document():
    p = parse_process_document(json.dumps({"args": ["ls"], "cwd": "/tmp", "user": {"uid": 0, "gid": 0}}).encode())
    assert p.args == ("ls",) and p.cwd == "/tmp" and p.capabilities is None
    with pytest.raises(InvalidArgument) as info:
        parse_process_document(b'{"args": ["ls"], "user": {"uid": 0, "gid": 0}}')
    assert info.value.field == "cwd"


def test_hostname_is_taken_as_the_kernel_takes_it_like_runc():
    # runc does not judge a hostname's characters; sethostname(2) refuses only more than 64 bytes.
    assert parse(doc(hostname="a_b")).hostname == "a_b"
    assert parse(doc(hostname="h" * 64)).hostname == "h" * 64
    with pytest.raises(InvalidArgument) as info:
        parse(doc(hostname="h" * 65))
    assert "sethostname: invalid argument" in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        parse(doc(hostname="h", linux={"namespaces": [{"type": "uts", "path": "/proc/1/ns/uts"}]}))
    assert str(info.value) == "hostname: unable to set hostname without a private UTS namespace"
