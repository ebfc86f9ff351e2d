"""Reading and writing cgroup control files with plain syscalls (one open/write/close each)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from .errors import CgroupBusy, CgroupUnavailable, LimitRejected


def read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def write(path: str, value: str) -> None:
    """Write a control file; the kernel's refusal becomes LimitRejected."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        raise LimitRejected(path, value, e.errno) from e
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise LimitRejected(path, value, e.errno) from e
    finally:
        os.close(fd)


def procs(cgroup: str) -> set[int]:
    """Pids in one cgroup; a cgroup that is gone has none."""
    try:
        return {int(line) for line in read(os.path.join(cgroup, "cgroup.procs")).split()}
    except FileNotFoundError:
        return set()


def procs_of(cgroups: tuple[str, ...]) -> set[int]:
    pids: set[int] = set()
    for cgroup in cgroups:
        pids |= procs(cgroup)
    return pids


def signal_all(pids: set[int]) -> None:
    if os.getpid() in pids:
        raise CgroupBusy("the calling process is inside the cgroup it is emptying")
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll a cheap kernel state with a short back-off; CgroupBusy when it never holds."""
    deadline = time.monotonic() + timeout_s
    delay = 0.0005
    while not predicate():
        if time.monotonic() > deadline:
            raise CgroupBusy(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def kill_until_empty(cgroups: tuple[str, ...], timeout_s: float) -> None:
    """SIGKILL what is in `cgroups` until nothing is: without a frozen cgroup a fork may escape a round."""

    def empty() -> bool:
        left = procs_of(cgroups)
        signal_all(left)
        return not left

    wait_until(empty, timeout_s, f"{cgroups[0]} to empty")


def makedirs(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise CgroupUnavailable(f"cannot create cgroup {path}: {e}") from e
