"""The start path's shortcuts keep what they skip: credentials, /dev nodes, the pod's /dev/shm, oom_score_adj,
idle work after a pod's sandbox started, NICs warmed before a template is saved."""
import asyncio
import os
import stat
import subprocess
import sys
import tempfile

import pytest

from agent.container import child_process, devices, pod_shm
from agent.container.devices import DEFAULT_DEVICES
from agent.idle import IdleWork
from agent.linux import capabilities as caps
from agent.oci.fields import Fields
from agent.oci.process import parse_process
from agent.oci.spec import ContainerSpec, Device
from agent.oci.mounts import Mount

from .helpers import process as process_doc


def _process(**extra):
    return parse_process(Fields(process_doc(["true"], **extra), "process"))


def _record(monkeypatch, module, names, calls):
    for name in names:
        monkeypatch.setattr(module, name, lambda *a, _n=name: calls.append((_n, a)))


def test_switching_to_the_ids_a_child_has_commits_nothing(monkeypatch):
    calls = []
    _record(monkeypatch, os, ("setgroups", "setresgid", "setresuid"), calls)
    _record(monkeypatch, child_process, ("prctl",), calls)
    uid, gid = os.getuid(), os.getgid()
    same = _process(user={"uid": uid, "gid": gid, "additionalGids": sorted(set(os.getgroups()))})
    child_process._switch_user(same)
    assert calls == []


def test_switching_to_other_ids_sets_them_keeping_capabilities_across(monkeypatch):
    calls = []
    _record(monkeypatch, os, ("setgroups", "setresgid", "setresuid"), calls)
    _record(monkeypatch, child_process, ("prctl",), calls)
    _record(monkeypatch, caps, ("capset", "set_ambient", "drop_bounding"), calls)
    other = _process(user={"uid": os.getuid() + 1000, "gid": os.getgid() + 1000, "additionalGids": [4242]},
                     capabilities={"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]})
    child_process._switch_user(other)
    names = [name for name, _ in calls]
    assert names == ["drop_bounding", "prctl", "setgroups", "setresgid", "setresuid", "prctl", "capset",
                     "set_ambient"]
    assert calls[3][1] == (os.getgid() + 1000,) * 3 and calls[4][1] == (os.getuid() + 1000,) * 3
    assert calls[1][1] == (child_process.PR_SET_KEEPCAPS, 1) and calls[5][1] == (child_process.PR_SET_KEEPCAPS, 0)


@pytest.mark.parametrize("known_empty", [True, False])
def test_ambient_set_is_cleared_unless_known_empty(monkeypatch, known_empty):
    calls = []
    monkeypatch.setattr(caps, "prctl", lambda *a: calls.append(a))
    monkeypatch.setattr(caps, "_ambient_empty", known_empty)
    caps.set_ambient(caps.mask([caps.NUMBER["CAP_KILL"]]), 40)
    clear = (caps.PR_CAP_AMBIENT, caps.PR_CAP_AMBIENT_CLEAR_ALL)
    assert (clear in calls) is not known_empty
    assert (caps.PR_CAP_AMBIENT, caps.PR_CAP_AMBIENT_RAISE, caps.NUMBER["CAP_KILL"]) in calls


def test_the_agents_ambient_set_is_read():
    caps.note_ambient_empty()
    with open("/proc/self/status") as f:
        amb = next(line for line in f if line.startswith("CapAmb:")).split()[1]
    assert caps._ambient_empty is (int(amb, 16) == 0)


@pytest.mark.parametrize("wanted, written", [(None, False), (0, False), (500, True)])
def test_oom_score_adj_is_written_only_when_it_changes(monkeypatch, wanted, written):
    calls = []
    monkeypatch.setattr(child_process, "_write", lambda *a: calls.append(a))
    monkeypatch.setattr(child_process, "_inherited_oom_score_adj", 0)
    child_process._set_oom_score_adj(_process(**({} if wanted is None else {"oomScoreAdj": wanted})))
    assert calls == ([("/proc/self/oom_score_adj", "500", "process.oomScoreAdj")] if written else [])


def test_the_agents_oom_score_adj_is_read():
    child_process.note_oom_score_adj()
    with open("/proc/self/oom_score_adj") as f:
        assert child_process._inherited_oom_score_adj == int(f.read())


@pytest.mark.root
def test_default_devices_in_a_fresh_dev_are_what_create_device_makes():
    if os.geteuid() != 0:
        pytest.skip("needs root (mknod)")
    with tempfile.TemporaryDirectory() as fresh, tempfile.TemporaryDirectory() as reference:
        with open(os.path.join(fresh, "null"), "w"):
            pass                        # something in the way: replaced
        os.chmod(fresh, 0o2755)         # a setgid /dev: nodes must still get the device's group
        os.chown(fresh, 0, 5)
        odd = Device("/dev/odd", "c", 1, 3, 0o640, 1000, 1001)
        old_umask = os.umask(0o077)
        try:
            devices.create_in_fresh_dev(fresh, DEFAULT_DEVICES + (odd,))
            for device in DEFAULT_DEVICES + (odd,):
                devices.create_device(os.path.join(reference, device.path[5:]), device)
        finally:
            os.umask(old_umask)
        assert os.umask(0o022) == 0o022 and os.umask(0o022) == 0o022
        for device in DEFAULT_DEVICES + (odd,):
            got, want = (os.lstat(os.path.join(d, device.path[5:])) for d in (fresh, reference))
            assert stat.S_ISCHR(got.st_mode) and got.st_rdev == want.st_rdev
            assert (stat.S_IMODE(got.st_mode), got.st_uid, got.st_gid) == \
                   (stat.S_IMODE(want.st_mode), want.st_uid, want.st_gid) == (device.mode, device.uid, device.gid)


def test_symlinks_in_dev_replace_what_is_there(tmp_path):
    (tmp_path / "fd").write_text("x")
    devices.create_symlinks(str(tmp_path), True)
    assert os.readlink(tmp_path / "fd") == "/proc/self/fd" and os.readlink(tmp_path / "ptmx") == "pts/ptmx"


def _shm_spec(size: int) -> ContainerSpec:
    mount = Mount(destination="/dev/shm", type="bind", source=f"{pod_shm.PREFIX}{size}", field="mounts[0]")
    return ContainerSpec(process=_process(), mounts=(mount,))


@pytest.mark.parametrize("size, remounts", [(pod_shm.DEFAULT_BYTES, 0), (1 << 20, 1)])
def test_the_pod_shm_mounted_ahead_is_resized_only_for_another_size(monkeypatch, tmp_path, size, remounts):
    calls = []
    monkeypatch.setattr(pod_shm.m, "mount", lambda *a: calls.append(a))
    directory = str(tmp_path / "pod-shm")
    pod_shm.prepare(directory)
    assert calls == [("shm", directory, "tmpfs", pod_shm._FLAGS, f"mode=1777,size={pod_shm.DEFAULT_BYTES}")]
    placed = pod_shm.place(_shm_spec(size), directory)
    assert placed.mounts[0].source == directory
    assert calls[1:] == [("shm", directory, "tmpfs", pod_shm.m.MS_REMOUNT | pod_shm._FLAGS,
                          f"mode=1777,size={size}")] * remounts
    assert directory not in pod_shm._unsized


async def test_idle_work_runs_right_after_the_request_once_the_pod_started():
    ran = []
    idle = IdleWork(idle_s=30)
    try:
        idle.enter()
        idle.defer("job", lambda: ran.append(1))
        idle.soon()                 # inside the request (StartContainer of the pod's holder)
        await asyncio.sleep(0.02)
        assert ran == []            # not while the request runs
        idle.leave()
        await asyncio.sleep(0.02)
        assert ran == [1]           # not after 30 s of quiet
        idle.defer("later", lambda: ran.append(2))
        await asyncio.sleep(0.05)
        assert ran == [1]           # the next job waits for quiet again
    finally:
        idle.close()


def _in_private_netns(setup: str, python: str, after: str) -> str:
    """Run shell `setup`, then `python` (agent.network.configure imported as `configure`), then shell `after` in a
    network namespace of their own (needs root); their output."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a network namespace)")
    script = "import sys; sys.path.insert(0, %r); from agent.network import configure; %s" % (os.getcwd(), python)
    shell = f"{setup} && {sys.executable} -c \"{script}\" && {after}"
    res = subprocess.run(["unshare", "--net", "sh", "-c", shell], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.root
def test_warming_links_leaves_them_down_and_skips_those_up():
    out = _in_private_netns(
        "ip link add d0 type veth peer name d0p && ip link add d1 type veth peer name d1p && ip link set d1 up",
        "print(' '.join(configure.warm_links())); print(*sorted(configure._known_index)); "
        "print(configure._index('d1', 'f') == configure.socket.if_nametoindex('d1')); "
        "print(*sorted(configure._dad_off))",
        "ip -o link show d0 && ip -o link show d1 && "
        "cat /proc/sys/net/ipv6/conf/d0/accept_dad /proc/sys/net/ipv6/conf/d1/accept_dad")
    warmed, known, same_index, dad_off, d0, d1, d0_dad, d1_dad = out.splitlines()
    assert warmed == "d0 d0p d1p"
    assert known == "d0 d0p d1 d1p lo" and same_index == "True"     # PostRestore's checks need no syscall
    assert dad_off == "d0 d0p d1p" and d0_dad == "0" and d1_dad != "0"  # the NIC in use is left as it is

    def flags(line: str) -> list[str]:
        return line.split("<", 1)[1].split(">", 1)[0].split(",")
    assert "UP" not in flags(d0) and "UP" in flags(d1)


def test_the_next_container_gets_the_spare_group_with_its_device_program(monkeypatch, tmp_path):
    from agent.cgroups import v2
    from agent.cgroups.device_programs import code_for
    from agent.cgroups.device_rules import effective_policy
    from agent.oci.resources import DeviceRule

    attached = []

    def attach(group, code):
        attached.append((group.path, code))
        group._device_code = code
    monkeypatch.setattr(v2.CgroupV2, "attach_device_code", attach)
    driver = v2.CgroupV2Driver(str(tmp_path))
    driver.prepare_spare()
    first = driver.create("c1")
    assert first.path == str(tmp_path / ".spare-1")
    assert attached == [(first.path, code_for(effective_policy(())))]
    first.restrict_devices((DeviceRule(allow=False, type="a", access="rwm"),))   # CRI's rules: runc's defaults
    assert len(attached) == 1
    second = driver.create("c2")
    assert second.path == str(tmp_path / "c2") and os.path.isdir(second.path)
    driver.prepare_spare()
    assert os.path.isdir(tmp_path / ".spare-2")
    driver.close()
    assert not os.path.exists(tmp_path / ".spare-2")


@pytest.mark.root
def test_a_pods_ipv6_address_is_usable_at_once():
    """CNI settles addresses before the pod starts; the guest takes them over without a second detection."""
    out = _in_private_netns(
        "ip link add d0 type veth peer name d0p && ip link set d0p up",
        "from agent.network.types import Interface, IPAddress, NetworkConfig; "
        "configure.apply(NetworkConfig(interfaces=(Interface('d0', addresses=(IPAddress('fd00:99::5', 64),)),)), None)",
        "ip -o addr show d0")
    assert "fd00:99::5/64" in out and "tentative" not in out, out


@pytest.mark.root
def test_a_warmed_nic_is_configured_without_writing_accept_dad_again():
    """The template turned detection off when it warmed the NIC: a clone's apply() takes that as done."""
    out = _in_private_netns(
        "ip link add d0 type veth peer name d0p && ip link set d0p up",
        "from agent.network.types import Interface, IPAddress, NetworkConfig; configure.warm_links(); "
        "import builtins; real = builtins.open; "
        "builtins.open = lambda path, *a, **k: (_ for _ in ()).throw(AssertionError(path)) "
        "if 'accept_dad' in str(path) else real(path, *a, **k); "
        "configure.apply(NetworkConfig(interfaces=(Interface('d0', addresses=(IPAddress('fd00:99::5', 64),)),)), None)",
        "ip -o addr show d0 && cat /proc/sys/net/ipv6/conf/d0/accept_dad")
    assert "fd00:99::5/64" in out and "tentative" not in out and out.splitlines()[-1] == "0", out
