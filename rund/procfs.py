"""/proc/<pid>/stat, parsed the one safe way: comm (field 2) may hold spaces and parentheses; the processes' argvs."""
from __future__ import annotations

import os
from typing import Iterator

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_after_comm(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat's fields after comm (field 3, the state, first), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(b")") + 2:].split()


def state_and_start(pid: int) -> tuple[bytes, int] | None:
    """(state letter, start time in clock ticks since boot), or None if there is no such process."""
    rest = _stat_after_comm(pid)
    return None if rest is None else (rest[0], int(rest[19]))


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time the process used (its threads included), or None if there is no such process."""
    rest = _stat_after_comm(pid)
    return None if rest is None else (int(rest[11]) + int(rest[12])) / CLOCK_TICKS


def cpu_ns(pid: int) -> int | None:
    """CPU time of all the process's threads in ns, from their schedstat (stat counts 10 ms ticks: too coarse for one
    step of a start), or None if there is no such process."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue            # a thread that ended meanwhile
    return total


def argvs() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, argv) of every process that is still there when its command line is read."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        yield int(entry), argv
