"""Idle memory back to the host: a process's private memory paged out to swap (the seeds' TMO idea, per sandbox).

`page_out(pid)` asks the kernel to reclaim every page of the process's private mappings but its code now
(process_madvise(2) with MADV_PAGEOUT, Linux >= 5.10): for QEMU that is its heap, the TCG code buffer, the guest
RAM pages the clone copied from its template and the memory plugged for its containers. Pages shared with other
processes (the template's RAM file, libraries' text, pmem images) are left: the kernel skips a page mapped more than
once. Anonymous pages need swap to go anywhere; with zram (compressed swap in RAM, `/sys/block/zram0`) an idle pod's
QEMU shrank from 87 to 26 MiB PSS here while zram held its 62 MiB in ~23 (lz4). A page the process touches again
comes back on its next access (a minor fault from zram, a major one from a disk).

No I/O policy here: when to do it is the caller's (rund/runtime/idle_reclaim.py).
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform

MADV_PAGEOUT = 21
# process_madvise's syscall number: 440 on every architecture with the generic table, x86_64 included.
SYS_PROCESS_MADVISE = 440
# One call advises at most MAX_RW_COUNT bytes (~2 GiB) and stops there: the 4 GiB virtio-mem region alone would end
# it early, so ranges go one at a time, in pieces of at most this.
PIECE = 1 << 30

_libc = ctypes.CDLL(None, use_errno=True)


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def supported() -> bool:
    return platform.machine() in ("x86_64", "aarch64") and hasattr(os, "pidfd_open")


def swap_devices() -> list[tuple[str, int]]:
    """(name, size in KiB) of every swap area the host has (zram, a partition or a file), from /proc/swaps."""
    try:
        with open("/proc/swaps") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    return [(line.split()[0], int(line.split()[2])) for line in lines if len(line.split()) >= 3]


def swap_total_kib() -> int:
    """Swap the host has; 0: paging out would free nothing."""
    return sum(kib for _, kib in swap_devices())


def memory_pressure() -> float | None:
    """The host's memory pressure: the share of the last 10 s some task stalled on memory (/proc/pressure/memory,
    `some avg10`, percent), or None without PSI."""
    try:
        with open("/proc/pressure/memory") as f:
            for line in f:
                if line.startswith("some "):
                    return float(line.split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return None


def resident_anon_kib(pid: int) -> int:
    """The process's resident anonymous memory (RssAnon: what a page-out can send to swap); ProcessLookupError if
    it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    return 0


def private_ranges(pid: int) -> list[tuple[int, int]]:
    """(start, length) of every private mapping of the process but its code: the writable ones, and the read-only
    ones, where a library's relocated pointers sit (RELRO: written at load, then made read-only; ~3 MiB of a QEMU's
    anonymous pages, 1.3 of them capstone's disassembler tables, which nothing reads while the guest runs). Code
    (r-x) is left: it is file pages only, and one process's only mapping would be dropped and read back."""
    ranges = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            span, perms = line.split(" ", 2)[:2]
            if perms[3] != "p" or (perms[1] != "w" and perms[2] == "x"):
                continue
            lo, hi = (int(x, 16) for x in span.split("-"))
            ranges.append((lo, hi - lo))
    return ranges


def page_out(pid: int) -> int:
    """Reclaim the process's private pages now; returns the bytes advised (what the kernel looked at, not what it
    freed). ProcessLookupError if the process is gone; OSError for what the kernel refused (EPERM: no
    CAP_SYS_NICE or no ptrace access)."""
    fd = os.pidfd_open(pid)
    try:
        advised = 0
        for start, length in private_ranges(pid):
            while length > 0:
                piece = min(length, PIECE)
                iov = (_IoVec * 1)(_IoVec(start, piece))
                done = _libc.syscall(SYS_PROCESS_MADVISE, fd, iov, 1, MADV_PAGEOUT, 0)
                if done < 0:
                    err = ctypes.get_errno()
                    if err in (errno.ENOMEM, errno.EINVAL):     # unmapped meanwhile, or a mapping it cannot take
                        break
                    if err == errno.ESRCH:
                        raise ProcessLookupError(err, os.strerror(err))
                    raise OSError(err, f"process_madvise(MADV_PAGEOUT) of pid {pid}: {os.strerror(err)}")
                advised += done
                start, length = start + piece, length - piece
        return advised
    finally:
        os.close(fd)
