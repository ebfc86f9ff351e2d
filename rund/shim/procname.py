"""A forked shim takes on the command line and name an exec'd `start` would have had: /proc/<pid>/cmdline is what
peer.py reads to identify a shim (its -address and -namespace), and what ps and operators see.

PR_SET_MM_MAP (no capability needed without exe_fd; CAP_SYS_RESOURCE, which PR_SET_MM_ARG_START needs, is often
dropped for root in containers) points the kernel's argument area at a buffer of ours, every other field given as
it is now. The buffer is kept for the life of the process (and of its forks, which copy the mapping)."""
from __future__ import annotations

import ctypes
import os

PR_SET_NAME = 15
PR_SET_MM = 35
PR_SET_MM_MAP = 14

_libc = ctypes.CDLL(None, use_errno=True)
_libc.sbrk.restype = ctypes.c_void_p
_libc.sbrk.argtypes = [ctypes.c_long]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
_kept: list[ctypes.Array] = []


class _MMMap(ctypes.Structure):    # struct prctl_mm_map (include/uapi/linux/prctl.h)
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "start_code", "end_code", "start_data", "end_data", "start_brk", "brk", "start_stack",
        "arg_start", "arg_end", "env_start", "env_end")] + [
        ("auxv", ctypes.c_void_p), ("auxv_size", ctypes.c_uint32), ("exe_fd", ctypes.c_uint32)]


def _stat_fields() -> list[int]:
    with open("/proc/self/stat", "rb") as f:
        raw = f.read()
    rest = raw[raw.rindex(b")") + 2:].split()      # field 3 (state) onward; the name may hold spaces
    return [0, 0, 0] + [int(x) if x.lstrip(b"-").isdigit() else 0 for x in rest]


def set_cmdline(args: list[str], env: dict[str, str] | None = None) -> None:
    """Make /proc/self/cmdline read `args` (and /proc/self/environ `env`, if given). OSError if the kernel refuses."""
    data = b"".join(os.fsencode(a) + b"\0" for a in args)
    envdata = b"".join(os.fsencode(k) + b"=" + os.fsencode(v) + b"\0" for k, v in (env or {}).items())
    buf = ctypes.create_string_buffer(data + envdata, len(data) + len(envdata))
    at = ctypes.addressof(buf)
    f = _stat_fields()
    env_start, env_end = (at + len(data), at + len(data) + len(envdata)) if env is not None else (f[50], f[51])
    mm = _MMMap(start_code=f[26], end_code=f[27], start_stack=f[28], start_data=f[45], end_data=f[46],
                start_brk=f[47], arg_start=at, arg_end=at + len(data), env_start=env_start, env_end=env_end,
                auxv=None, auxv_size=0, exe_fd=0xFFFFFFFF)
    for _ in range(3):                              # brk is read just before the call: retry if the heap moved
        mm.brk = _libc.sbrk(0)
        if _libc.prctl(PR_SET_MM, PR_SET_MM_MAP, ctypes.addressof(mm), ctypes.sizeof(mm), 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_MM_MAP): {os.strerror(err)}")
        if _libc.sbrk(0) == mm.brk:
            _kept.append(buf)
            return
    raise OSError("prctl(PR_SET_MM_MAP): the heap kept moving")


def set_comm(name: str) -> None:
    """/proc/self/comm (15 bytes at most)."""
    buf = ctypes.create_string_buffer(os.fsencode(name)[:15])
    if _libc.prctl(PR_SET_NAME, ctypes.addressof(buf), None, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NAME): {os.strerror(err)}")
