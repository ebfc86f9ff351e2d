"""seccomp(2): install a compiled classic-BPF filter on the calling thread. Used in a setup child right before
execve: one syscall, no library."""
import ctypes
from typing import NamedTuple

from .libc import check, libc, SYSCALL_NUMBERS

SECCOMP_SET_MODE_FILTER = 1
FILTER_FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2, "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4}
SOCK_FILTER_SIZE = 8  # struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }
BPF_MAXINSNS = 4096


class SeccompFilter(NamedTuple):
    program: bytes  # struct sock_filter[], as seccomp_export_bpf writes it
    flags: int = 0

    @property
    def length(self) -> int:
        return len(self.program) // SOCK_FILTER_SIZE


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(seccomp_filter: SeccompFilter) -> None:
    """The filter applies to this process and everything it execs; needs no_new_privs or CAP_SYS_ADMIN."""
    code = ctypes.create_string_buffer(seccomp_filter.program, len(seccomp_filter.program))
    prog = _SockFprog(seccomp_filter.length, ctypes.addressof(code))
    check(libc.syscall(SYSCALL_NUMBERS["seccomp"], ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
                       ctypes.c_uint(seccomp_filter.flags), ctypes.byref(prog)), "seccomp")
