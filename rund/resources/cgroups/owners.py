"""Whether the process that holds a pool slot still exists."""

from __future__ import annotations

import os

from rund.procfs import state_and_start

from .names import Owner

_self: dict[int, Owner] = {}  # keyed by pid so a forked child computes its own identity


def current_owner() -> Owner:
    pid = os.getpid()
    owner = _self.get(pid)
    if owner is None:
        stat = state_and_start(pid)
        assert stat is not None
        owner = _self[pid] = Owner(pid, stat[1])
    return owner


def is_alive(owner: Owner) -> bool:
    """True while the owner runs; a zombie (exited, not yet reaped) counts as gone."""
    stat = state_and_start(owner.pid)
    return stat is not None and stat[1] == owner.start_time and stat[0] not in (b"Z", b"X")
