"""Give the shim's free heap memory back to the host once a burst of calls is over (glibc's malloc_trim).

A pod's shim does most of its allocating while its pod starts (Create, Start: the VM, the agent, protobuf messages,
a thread's arena for the blocking calls) and then idles for the pod's life. What those calls freed stays in glibc's
heap and arenas as resident pages, free but counted in the shim's PSS; malloc_trim(0) returns the free pages of
every arena (MADV_DONTNEED). Called QUIET_AFTER seconds after the last call ended (idle.IdleWatch), so once per
burst, and never while a pod idles without calls.
"""
from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("rund.shim")

QUIET_AFTER = 2.0           # seconds without a call before the shim trims

_malloc_trim = None


def malloc_trim() -> bool:
    """True if glibc released memory; False if none was free, or the C library has no malloc_trim (musl)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
            _malloc_trim.argtypes = [ctypes.c_size_t]
            _malloc_trim.restype = ctypes.c_int
        except (OSError, AttributeError):
            _malloc_trim = False
    if not _malloc_trim:
        return False
    return bool(_malloc_trim(0))
