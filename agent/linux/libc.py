"""The libc handle and the one helper every binding uses to turn -1 into OSError."""
import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

# Numbers for syscalls glibc has no wrapper for (or not on every glibc we meet).
_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "capset": 126, "capget": 125, "finit_module": 313, "bpf": 321, "seccomp": 317},
    "aarch64": {"pivot_root": 41, "capset": 91, "capget": 90, "finit_module": 273, "bpf": 280, "seccomp": 277},
}
SYSCALL_NUMBERS = _SYSCALLS[os.uname().machine]


def check(result: int, what: str) -> int:
    """Raise OSError(errno) naming `what` when a libc call returned -1."""
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def syscall(name: str, *args) -> int:
    return check(libc.syscall(SYSCALL_NUMBERS[name], *args), name)


def fsencode(path: str | bytes | None) -> bytes | None:
    return None if path is None else os.fsencode(path)
