"""The OCI `linux.seccomp` object (LinuxSeccomp), validated; agent/linux/seccomp.py compiles it."""
import errno
from typing import NamedTuple

from ..errors import InvalidArgument
from .fields import Fields

ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO",
           "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
             "SCMP_CMP_MASKED_EQ")
FLAGS = ("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW")
ARCH_PREFIX = "SCMP_ARCH_"
DEFAULT_ERRNO = errno.EPERM  # runc's, for ERRNO and TRACE without errnoRet
_U64 = 2**64 - 1


class ArgCondition(NamedTuple):
    index: int      # 0..5
    op: str         # one of OPERATORS
    value: int
    value_two: int  # MASKED_EQ: value is the mask, value_two the datum


class SyscallRule(NamedTuple):
    names: tuple[str, ...]
    action: str
    errno_ret: int
    args: tuple[ArgCondition, ...] = ()
    field: str = ""  # "linux.seccomp.syscalls[3]"


class SeccompProfile(NamedTuple):
    default_action: str
    default_errno: int
    architectures: tuple[str, ...] = ()  # libseccomp names ("x86_64", "x86", "x32"); empty: the native one
    flags: tuple[str, ...] = ()
    syscalls: tuple[SyscallRule, ...] = ()


def parse_seccomp(f: Fields | None) -> SeccompProfile | None:
    if f is None:
        return None
    if f.str("listenerPath") or f.str("listenerMetadata"):
        raise InvalidArgument(f.name("listenerPath"), "seccomp user notification is not supported in the guest")
    default_action = _action(f, "defaultAction", required=True)
    architectures = []
    for i, arch in enumerate(f.str_list("architectures")):
        if not arch.startswith(ARCH_PREFIX):
            raise InvalidArgument(f"{f.name('architectures')}[{i}]", f"not a seccomp architecture: {arch!r}")
        architectures.append(arch[len(ARCH_PREFIX):].lower())
    flags = f.str_list("flags")
    for i, flag in enumerate(flags):
        if flag not in FLAGS:
            raise InvalidArgument(f"{f.name('flags')}[{i}]", f"unsupported seccomp flag {flag!r}")
    return SeccompProfile(
        default_action=default_action,
        default_errno=_errno(f, "defaultErrnoRet"),
        architectures=tuple(dict.fromkeys(architectures)),
        flags=tuple(dict.fromkeys(flags)),
        syscalls=tuple(_parse_rule(item) for item in f.obj_list("syscalls")),
    )


def _parse_rule(f: Fields) -> SyscallRule:
    names = f.str_list("names", required=True)
    if not names or any(not name for name in names):
        raise InvalidArgument(f.name("names"), "must list syscall names")
    return SyscallRule(names=names, action=_action(f, "action", required=True), errno_ret=_errno(f, "errnoRet"),
                       args=tuple(_parse_arg(a) for a in f.obj_list("args")), field=f.path)


def _parse_arg(f: Fields) -> ArgCondition:
    op = f.str("op", required=True)
    if op not in OPERATORS:
        raise InvalidArgument(f.name("op"), f"unknown seccomp operator {op!r}")
    return ArgCondition(index=f.int("index", required=True, minimum=0, maximum=5), op=op,
                        value=f.int("value", 0, minimum=0, maximum=_U64),
                        value_two=f.int("valueTwo", 0, minimum=0, maximum=_U64))


def _action(f: Fields, key: str, required: bool) -> str:
    action = f.str(key, required=required)
    if action == "SCMP_ACT_NOTIFY":
        raise InvalidArgument(f.name(key), "seccomp user notification is not supported in the guest")
    if action not in ACTIONS:
        raise InvalidArgument(f.name(key), f"unknown seccomp action {action!r}")
    return action


def _errno(f: Fields, key: str) -> int:
    return f.int(key, DEFAULT_ERRNO, minimum=0, maximum=0xFFFF)
