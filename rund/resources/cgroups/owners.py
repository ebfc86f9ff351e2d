"""Whether the process that holds a pool slot still exists."""

from __future__ import annotations

import os

from .names import Owner

_self: dict[int, Owner] = {}  # keyed by pid so a forked child computes its own identity


def _stat(pid: int) -> tuple[bytes, int] | None:
    """(state, start time) from /proc/<pid>/stat, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses: fields 3.. start after its last ')'.
    rest = stat[stat.rindex(b")") + 2 :].split()
    return rest[0], int(rest[19])


def current_owner() -> Owner:
    pid = os.getpid()
    owner = _self.get(pid)
    if owner is None:
        stat = _stat(pid)
        assert stat is not None
        owner = _self[pid] = Owner(pid, stat[1])
    return owner


def is_alive(owner: Owner) -> bool:
    """True while the owner runs; a zombie (exited, not yet reaped) counts as gone."""
    stat = _stat(owner.pid)
    return stat is not None and stat[1] == owner.start_time and stat[0] not in (b"Z", b"X")
