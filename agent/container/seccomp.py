"""A container's seccomp profile compiled to a classic BPF program, in the agent (before any fork), with
libseccomp as runc uses it: names resolved per architecture, rules with argument conditions, the same fallbacks.
The setup child only installs the bytes (agent/linux/seccomp.py), so nothing heavy runs between fork and exec."""
import functools
import os

from ..errors import InvalidArgument, SetupFailed
from ..linux import libseccomp as ls
from ..linux.seccomp import FILTER_FLAGS, SeccompFilter
from ..oci.seccomp import ArgCondition, SeccompProfile, SyscallRule

_ACTION = {
    "SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000, "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000, "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")  # the low 16 bits carry errnoRet
_OPERATOR = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
             "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_FIELD = "linux.seccomp"


def action_value(action: str, errno_ret: int) -> int:
    return _ACTION[action] | (errno_ret & 0xFFFF if action in _WITH_ERRNO else 0)


@functools.lru_cache(maxsize=8)  # a pod's containers usually share one profile
def compile_profile(profile: SeccompProfile) -> SeccompFilter:
    lib = ls.lib()
    default = action_value(profile.default_action, profile.default_errno)
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise InvalidArgument(f"{_FIELD}.defaultAction", f"libseccomp refused {profile.default_action}")
    try:
        _check(lib.seccomp_attr_set(ctx, ls.SCMP_FLTATR_CTL_NNP, 0), "seccomp_attr_set")  # we set it ourselves
        for i, arch in enumerate(profile.architectures):
            token = lib.seccomp_arch_resolve_name(arch.encode())
            if not token:
                raise InvalidArgument(f"{_FIELD}.architectures[{i}]", f"unknown architecture {arch!r}")
            result = lib.seccomp_arch_add(ctx, token)
            if result not in (0, -17):  # -EEXIST: the native one is there from the start
                raise InvalidArgument(f"{_FIELD}.architectures[{i}]", f"{arch}: {os.strerror(-result)}")
        for rule in profile.syscalls:
            _add_rule(lib, ctx, rule, default)
        return SeccompFilter(_export(lib, ctx), sum(FILTER_FLAGS[flag] for flag in profile.flags))
    finally:
        lib.seccomp_release(ctx)


def _add_rule(lib, ctx, rule: SyscallRule, default: int) -> None:
    action = action_value(rule.action, rule.errno_ret)
    if action == default:
        return  # libseccomp refuses a rule that changes nothing; runc skips it too
    # libseccomp ANDs conditions on different arguments only; runc adds one rule per condition (an OR) when
    # an argument is named twice, and so do we.
    indexes = [cond.index for cond in rule.args]
    groups = [(c,) for c in rule.args] if len(set(indexes)) < len(indexes) else [rule.args]
    for name in rule.names:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number == ls.NR_SCMP_ERROR:
            continue  # a syscall libseccomp does not know: not on this kernel's architectures (runc: ignored)
        for group in groups:
            array = (ls.ArgCmp * max(len(group), 1))(*(_condition(c) for c in group))
            result = lib.seccomp_rule_add_array(ctx, action, number, len(group), array)
            if result < 0:
                raise InvalidArgument(rule.field, f"seccomp rule for {name}: {os.strerror(-result)}")


def _condition(cond: ArgCondition) -> ls.ArgCmp:
    return ls.ArgCmp(cond.index, _OPERATOR[cond.op], cond.value, cond.value_two)


def _export(lib, ctx) -> bytes:
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    try:
        _check(lib.seccomp_export_bpf(ctx, fd), "seccomp_export_bpf")
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def _check(result: int, what: str) -> None:
    if result < 0:
        raise SetupFailed("seccomp", f"{what}: {os.strerror(-result)}")
