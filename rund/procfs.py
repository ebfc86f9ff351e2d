"""/proc/<pid>/stat, parsed the one safe way: comm (field 2) may hold spaces and parentheses."""
from __future__ import annotations


def state_and_start(pid: int) -> tuple[bytes, int] | None:
    """(state letter, start time in clock ticks since boot), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = stat[stat.rindex(b")") + 2:].split()
    return rest[0], int(rest[19])
