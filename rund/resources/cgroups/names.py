"""Names of the pool's registry records, which encode a slot's state and owner (pure, no I/O).

A slot's record name in the registry is the truth about it; renaming it is how a process takes it:
  free-<slot>                        in the pool, owned by nobody
  new-<slot>-<owner>                 being created or repaired by <owner>
  lease-<slot>-<owner>-<sandbox>     handed to <sandbox>, held by <owner>
  gone-<slot>-<owner>                being removed by <owner>
<slot> is a random hex token; <owner> is "<pid>.<start time>" so a reused pid is not mistaken for the owner.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from .errors import InvalidSandboxId

FREE, NEW, LEASE, GONE = "free", "new", "lease", "gone"

# containerd's identifier rule, bounded so the whole name stays far below NAME_MAX (255).
_SANDBOX_ID = re.compile(r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$")
MAX_SANDBOX_ID = 160
_SLOT = re.compile(r"^[0-9a-f]{12}$")
_OWNER = re.compile(r"^(\d+)\.(\d+)$")


@dataclass(frozen=True)
class Owner:
    """A process, identified by pid and start time (clock ticks since boot, /proc/<pid>/stat field 22)."""

    pid: int
    start_time: int

    def __str__(self) -> str:
        return f"{self.pid}.{self.start_time}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        m = _OWNER.match(text)
        return cls(int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True)
class Entry:
    """A parsed pool directory name."""

    state: str
    slot: str
    owner: Owner | None = None
    sandbox_id: str | None = None

    @property
    def name(self) -> str:
        if self.state == FREE:
            return f"{FREE}-{self.slot}"
        if self.state == LEASE:
            return f"{LEASE}-{self.slot}-{self.owner}-{self.sandbox_id}"
        return f"{self.state}-{self.slot}-{self.owner}"


def is_slot(text: str) -> bool:
    return bool(_SLOT.match(text))


def new_slot() -> str:
    return secrets.token_hex(6)


def check_sandbox_id(sandbox_id: str) -> str:
    if len(sandbox_id) > MAX_SANDBOX_ID or not _SANDBOX_ID.match(sandbox_id):
        raise InvalidSandboxId(f"sandbox id {sandbox_id!r} cannot name a cgroup")
    return sandbox_id


def free(slot: str) -> Entry:
    return Entry(FREE, slot)


def claimed(state: str, slot: str, owner: Owner) -> Entry:
    return Entry(state, slot, owner)


def lease(slot: str, owner: Owner, sandbox_id: str) -> Entry:
    return Entry(LEASE, slot, owner, check_sandbox_id(sandbox_id))


def parse(name: str) -> Entry | None:
    """The entry a directory name stands for, or None for anything that is not a pool slot."""
    state, _, rest = name.partition("-")
    if state == FREE:
        return Entry(FREE, rest) if _SLOT.match(rest) else None
    if state in (NEW, GONE):
        slot, _, owner_text = rest.partition("-")
        owner = Owner.parse(owner_text)
        return Entry(state, slot, owner) if owner and _SLOT.match(slot) else None
    if state == LEASE:
        parts = rest.split("-", 2)
        if len(parts) != 3:
            return None
        slot, owner_text, sandbox_id = parts
        owner = Owner.parse(owner_text)
        if owner is None or not _SLOT.match(slot) or not _SANDBOX_ID.match(sandbox_id):
            return None
        return Entry(LEASE, slot, owner, sandbox_id)
    return None
