"""The device allowlist: OCI rules folded as runc folds them, the BPF program built from them (its bytes and, through
a small interpreter, its verdicts), and, as root, the kernel's verifier accepting it and the kernel enforcing it."""
import errno
import json
import os
import struct
import subprocess

import pytest

from agent.cgroups import device_filter as df
from agent.cgroups.device_rules import effective_policy, fold
from agent.errors import InvalidArgument
from agent.oci.resources import DeviceRule
from agent.oci.spec import parse_resources_document

from .bpf_interp import run

# What `ctr run` puts in the spec (containerd 1.6: the default spec and WithDefaultUnixDevices).
CONTAINERD_DEFAULT = [{"allow": False, "access": "rwm"}] + [
    {"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
    for major, minor in ((1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 1), (136, None), (5, 2), (10, 200))]
PRIVILEGED = [{"allow": True, "access": "rwm"}]


def rules(items: list[dict]) -> tuple[DeviceRule, ...]:
    return parse_resources_document(json.dumps({"devices": items}).encode()).devices


def test_rules_parse_with_runc_defaults_and_refusals():
    assert rules([{"allow": False, "access": "rwm"}, {"allow": True, "type": "b", "major": 8, "minor": -1,
                                                      "access": "mr"}]) == (
        DeviceRule(False, "a", None, None, "rwm"), DeviceRule(True, "b", 8, None, "rm"))
    for bad, field in (({"allow": True, "access": ""}, "access"), ({"allow": True, "access": "rx"}, "access"),
                       ({"allow": True, "type": "p", "access": "r"}, "type"), ({"access": "r"}, "allow"),
                       ({"allow": True, "access": "r", "major": "1"}, "major")):
        with pytest.raises(InvalidArgument) as info:
            rules([bad])
        assert info.value.field == f"devices[0].{field}"


def test_containerd_default_spec_allows_its_devices_and_mknod_only_of_the_rest():
    policy = effective_policy(rules(CONTAINERD_DEFAULT))
    assert not policy.default_allow and all(rule.allow for rule in policy.exceptions)
    assert policy.allows("c", 1, 3, "rw") and policy.allows("c", 136, 7, "rw") and policy.allows("c", 5, 1, "r")
    assert policy.allows("b", 254, 0, "m") and policy.allows("c", 4, 1, "m")       # runc: mknod of anything
    assert not policy.allows("b", 254, 0, "r") and not policy.allows("b", 259, 0, "w")  # but not its use
    assert not policy.allows("c", 1, 1, "r")                                          # /dev/mem


def test_fold_follows_the_v1_controller():
    assert fold(rules(PRIVILEGED)) == (True, ())
    # A deny in allow-all mode is an exception; an allow of part of it narrows it; "a" starts over.
    policy = fold(rules([{"allow": True, "access": "rwm"}, {"allow": False, "type": "b", "major": 8, "access": "rwm"},
                         {"allow": True, "type": "b", "major": 8, "access": "m"}]))
    assert policy == (True, (DeviceRule(False, "b", 8, None, "rw"),))
    assert fold(rules([{"allow": True, "type": "c", "access": "r"}, {"allow": False, "access": "rwm"}])) == (False, ())
    # Removing part of a wildcard exception is ignored by cgroup v1: runc refuses it rather than mislead.
    with pytest.raises(InvalidArgument) as info:
        fold(rules([{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "access": "rw"},
                     {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]))
    assert info.value.field == "linux.resources.devices[2]" and "wildcard" in info.value.problem
    # The defaults come last, so a spec cannot deny /dev/null (runc's behaviour, however questionable).
    assert effective_policy(rules([{"allow": False, "type": "c", "major": 1, "minor": 3, "access": "rwm"}])
                            ).allows("c", 1, 3, "rw")


def test_program_bytes_for_one_rule():
    policy = fold((DeviceRule(True, "c", 1, 3, "rw"),))
    code = df.program(policy)
    insns = [struct.unpack("<BBhi", code[i:i + 8]) for i in range(0, len(code), 8)]
    assert insns == [
        (0x61, 0x12, 0, 0), (0x54, 0x02, 0, 0xFFFF),      # r2 = ctx->access_type & 0xffff
        (0x61, 0x13, 0, 0), (0x74, 0x03, 0, 16),          # r3 = ctx->access_type >> 16
        (0x61, 0x14, 4, 0), (0x61, 0x15, 8, 0),           # r4 = major, r5 = minor
        (0x56, 0x02, 7, df.DEV_CHAR),                     # not a char device: skip the block
        (0xBC, 0x31, 0, 0), (0x54, 0x01, 0, 6), (0x5E, 0x31, 4, 0),  # access not within rw: skip
        (0x56, 0x04, 3, 1), (0x56, 0x05, 2, 3),           # major 1, minor 3
        (0xB4, 0x00, 0, 1), (0x95, 0, 0, 0),              # allow
        (0xB4, 0x00, 0, 0), (0x95, 0, 0, 0),              # default: refuse
    ]


@pytest.mark.parametrize("items", [CONTAINERD_DEFAULT, PRIVILEGED, [], [
    {"allow": True, "access": "rwm"}, {"allow": False, "type": "b", "access": "rw"},
    {"allow": False, "type": "c", "major": 1, "minor": 1, "access": "rwm"},
    {"allow": False, "type": "c", "major": 4000000000, "minor": 3000000000, "access": "r"}]])
def test_program_verdicts_match_the_policy_for_every_access(items):
    policy = effective_policy(rules(items))
    insns = df.instructions(policy)
    samples = [(kind, major, minor) for kind in "bc" for major in (0, 1, 5, 10, 136, 254, 259, 4000000000)
               for minor in (0, 1, 2, 3, 5, 7, 8, 9, 200, 3000000000)]
    for kind, major, minor in samples:
        for access in ("m", "r", "w", "rw", "rwm", "rm"):
            want = policy.allows(kind, major, minor, access)
            assert run(insns, kind, major, minor, access) == int(want), (kind, major, minor, access)


# ---- as root: the kernel's verifier and the kernel's enforcement ---------------------------------------------

def _unified_mount() -> str:
    for path in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):  # unified: a hybrid host's v2 tree
        if os.path.exists(os.path.join(path, "cgroup.controllers")):
            return path
    pytest.skip("no cgroup v2 hierarchy")


@pytest.fixture
def root_only():
    if os.geteuid() != 0:
        pytest.skip("needs root (bpf(2))")


@pytest.mark.root
@pytest.mark.parametrize("items", [CONTAINERD_DEFAULT, PRIVILEGED, []])
def test_the_kernel_verifier_accepts_the_program(root_only, items):
    from agent.linux import bpf
    fd = bpf.load_device_program(df.program(effective_policy(rules(items))), df.LICENSE)
    os.close(fd)


def _prog_id(fd: int) -> str:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return next(line.split()[1] for line in f if line.startswith("prog_id:"))


@pytest.mark.root
def test_one_allowlist_is_loaded_once_and_each_group_gets_its_own_fd(root_only):
    from agent.cgroups import device_programs
    default, privileged = (df.program(effective_policy(rules(items))) for items in (CONTAINERD_DEFAULT, PRIVILEGED))
    before = dict(device_programs._loaded)
    fds = [device_programs.program_fd(code, df.LICENSE) for code in (default, default, privileged)]
    try:
        assert len(set(fds)) == 3                                      # dups: a group closes its own
        assert len(device_programs._loaded) - len(before) <= 2
        assert device_programs._loaded[default] not in fds
        ids = [_prog_id(fd) for fd in fds]
        assert ids[0] == ids[1] != ids[2]                              # the same program, loaded once
    finally:
        for fd in fds:
            os.close(fd)


@pytest.mark.root
def test_a_refused_program_says_why(root_only):
    from agent.linux import bpf
    with pytest.raises(bpf.BpfLoadError) as info:
        bpf.load_device_program(df.Insn(df.EXIT).encode(), df.LICENSE)  # R0 never set
    assert info.value.errno == errno.EACCES and "R0" in info.value.log


@pytest.mark.root
def test_a_group_with_the_program_refuses_what_the_policy_refuses(root_only, tmp_path):
    """mknod of any device works (runc's `b *:* m`), reading a node the list lacks is EPERM, /dev/null works."""
    from agent.cgroups.v2 import CgroupV2
    group = os.path.join(_unified_mount(), f"rund-devtest-{os.getpid()}")
    os.mkdir(group)
    try:
        CgroupV2(group).restrict_devices(rules(CONTAINERD_DEFAULT))
        st = os.stat("/dev/null")
        script = (f"echo 0 > {group}/cgroup.procs; cd {tmp_path}; "
                  "mknod kmsg c 1 11 && echo mknod-ok; "
                  "head -c1 kmsg >/dev/null 2>err || cat err; "
                  f"mknod null c {os.major(st.st_rdev)} {os.minor(st.st_rdev)} && echo x > null && echo null-ok")
        out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
        assert out.stdout.splitlines()[0] == "mknod-ok", out
        assert "Operation not permitted" in out.stdout, out
        assert out.stdout.splitlines()[-1] == "null-ok", out
    finally:
        os.rmdir(group)
