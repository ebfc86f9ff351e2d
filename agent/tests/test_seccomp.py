"""linux.seccomp: parsed and validated, compiled with libseccomp into classic BPF, and installed in a forked child
the way a container's process gets it (no root needed: no_new_privs first)."""
import ctypes
import errno
import json
import os
from pathlib import Path

import pytest

from agent.container.seccomp import compile_profile
from agent.errors import InvalidArgument
from agent.linux import seccomp
from agent.linux.prctl import PR_SET_NO_NEW_PRIVS, prctl
from agent.oci.fields import Fields
from agent.oci.seccomp import parse_seccomp

# `ctr run --seccomp` (containerd 1.6.20, default capabilities): 360 names, three architectures, argument rules.
CONTAINERD_DEFAULT = json.loads((Path(__file__).parent / "data/containerd-1.6-default-seccomp.json").read_text())
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {"unshare": 272, "personality": 135, "clone3": 435, "getpid": 39}  # x86_64


def profile(doc: dict):
    return parse_seccomp(Fields(doc, "linux.seccomp"))


def in_child(seccomp_filter: seccomp.SeccompFilter, calls: list[tuple[str, tuple]]) -> list[int | str]:
    """Fork; the child sets no_new_privs, installs the filter and makes `calls`: each result is 0 or -errno.
    The last item is the child's Seccomp: line."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            prctl(PR_SET_NO_NEW_PRIVS, 1)
            seccomp.install(seccomp_filter)
            results = []
            for name, args in calls:
                rc = libc.syscall(NR[name], *(ctypes.c_ulong(a) for a in args))  # full 64-bit registers
                results.append(-ctypes.get_errno() if rc < 0 else 0)
            with open("/proc/self/status") as f:
                results.append(next(line.split()[1] for line in f if line.startswith("Seccomp:")))
            os.write(write_end, json.dumps(results).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return json.loads(out)


def test_the_containerd_default_profile_parses_and_compiles():
    parsed = profile(CONTAINERD_DEFAULT)
    assert parsed.default_action == "SCMP_ACT_ERRNO" and parsed.default_errno == errno.EPERM
    assert parsed.architectures == ("x86_64", "x86", "x32")
    assert sum(len(rule.names) for rule in parsed.syscalls) == 360
    compiled = compile_profile(parsed)
    assert 0 < compiled.length < seccomp.BPF_MAXINSNS and compiled.flags == 0
    assert compile_profile(profile(CONTAINERD_DEFAULT)) is compiled  # cached: one compile per profile


def test_the_default_profile_refuses_what_it_lacks_and_honours_errno_ret():
    compiled = compile_profile(profile(CONTAINERD_DEFAULT))
    results = in_child(compiled, [("getpid", ()), ("unshare", (0,)), ("clone3", (0, 0)),
                                  ("personality", (0xFFFFFFFF,)), ("personality", (0x1,))])
    assert results == [0, -errno.EPERM, -errno.ENOSYS, 0, -errno.EPERM, "2"]


def test_argument_conditions_and_an_argument_named_twice():
    compiled = compile_profile(profile({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
             "args": [{"index": 0, "value": 0xFF, "valueTwo": 0x8, "op": "SCMP_CMP_MASKED_EQ"}]},
            # Index 0 twice: runc makes this an OR of two rules (libseccomp cannot AND them).
            {"names": ["unshare"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 0x20000, "op": "SCMP_CMP_EQ"},
                      {"index": 0, "value": 0x40000, "op": "SCMP_CMP_EQ"}]},
            {"names": ["no_such_syscall_anywhere"], "action": "SCMP_ACT_ERRNO"},   # ignored, as runc does
            {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},                     # the default: skipped
        ]}))
    results = in_child(compiled, [("personality", (0x108,)), ("personality", (0xFFFFFFFF,)),
                                  ("unshare", (0x20000,)), ("unshare", (0x40000,)), ("unshare", (0,))])
    assert results == [-errno.EACCES, 0, -errno.EPERM, -errno.EPERM, 0, "2"]


@pytest.mark.parametrize("doc, field", [
    ({}, "linux.seccomp.defaultAction"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "linux.seccomp.defaultAction"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}, "linux.seccomp.listenerPath"),
    ({"defaultAction": "SCMP_ACT_NOPE"}, "linux.seccomp.defaultAction"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["x86_64"]}, "linux.seccomp.architectures[0]"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]}, "linux.seccomp.flags[0]"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]},
     "linux.seccomp.syscalls[0].names"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                       "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].index"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                       "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SOME"}]}]},
     "linux.seccomp.syscalls[0].args[0].op"),
])
def test_profiles_that_cannot_be_applied_are_refused_naming_the_field(doc, field):
    with pytest.raises(InvalidArgument) as info:
        profile(doc)
    assert info.value.field == field


def test_an_architecture_libseccomp_does_not_know_is_refused():
    with pytest.raises(InvalidArgument) as info:
        compile_profile(profile({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}))
    assert info.value.field == "linux.seccomp.architectures[0]"


def test_flags_reach_the_filter():
    compiled = compile_profile(profile({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]}))
    assert compiled.flags == 2
    assert in_child(compiled, [("getpid", ())]) == [0, "2"]
