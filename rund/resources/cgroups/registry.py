"""The pool's ownership records: one empty file per slot in a plain directory, named after its state.

Taking a slot is rename(2) of its record; of two processes renaming the same record exactly one wins.
Records live outside cgroupfs because cgroup v2 refuses rename (EPERM) and a v1 rename takes the
kernel-global cgroup_mutex, the very lock the pool is meant to stay away from. The directory is keyed
by boot id: cgroups do not survive a reboot, so neither may their records.

Records are spread over 16 shelves (subdirectories) by the first hex digit of their slot, so an
acquire lists a handful of names instead of the whole pool, and racing acquires mostly lock
different directories.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator

from . import names
from .errors import CgroupUnavailable
from .names import Entry

DEFAULT_STATE_DIR = "/run/rund/cgroup-pool"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
SHELVES = "0123456789abcdef"


class Registry:
    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def for_pool(cls, state_dir: str, version: int, parent: str) -> Registry:
        with open(BOOT_ID) as f:
            boot = f.read().strip()
        return cls(os.path.join(state_dir, boot, f"v{version}-{parent.strip('/').replace('/', '%')}"))

    def prepare(self) -> None:
        for shelf in SHELVES:
            os.makedirs(os.path.join(self.path, shelf), exist_ok=True)
        # Records of earlier boots name cgroups that no longer exist and owners that cannot be alive.
        boots = os.path.dirname(os.path.dirname(self.path))
        current = os.path.basename(os.path.dirname(self.path))
        for boot in os.listdir(boots):
            if boot != current:
                shutil.rmtree(os.path.join(boots, boot), ignore_errors=True)

    def listing(self) -> list[str]:
        """Every record name (all shelves)."""
        try:
            return [name for shelf in SHELVES for name in os.listdir(os.path.join(self.path, shelf))]
        except FileNotFoundError as e:
            raise CgroupUnavailable(f"cgroup pool registry {self.path} does not exist (pool not prepared)") from e

    def entries(self) -> list[Entry]:
        return [e for e in map(names.parse, self.listing()) if e is not None]

    def free_slots(self) -> Iterator[str]:
        """Slots of free records, shelf by shelf from a random one, each shelf listed only when reached."""
        prefix = names.FREE + "-"
        first = random.randrange(len(SHELVES))
        for i in range(len(SHELVES)):
            shelf = f"{self.path}/{SHELVES[(first + i) % len(SHELVES)]}"
            try:
                listing = os.listdir(shelf)
            except FileNotFoundError as e:
                raise CgroupUnavailable(f"cgroup pool registry {self.path} does not exist") from e
            free = [n[len(prefix):] for n in listing if n.startswith(prefix) and names.is_slot(n[len(prefix):])]
            random.shuffle(free)  # racing acquirers on one shelf try different records first
            yield from free

    def create(self, entry: Entry) -> None:
        """Record a new slot; fails if the record exists (slots are random, so that is a collision)."""
        os.close(os.open(self._file(entry), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))

    def move(self, old: Entry, new: Entry) -> bool:
        """Atomically turn `old` into `new`; False if `old` is gone (someone else took it)."""
        try:
            os.rename(self._file(old), self._file(new))
        except FileNotFoundError:
            return False
        return True

    def holds(self, entry: Entry) -> bool:
        return os.path.exists(self._file(entry))

    def remove(self, entry: Entry) -> None:
        os.unlink(self._file(entry))

    def destroy(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        for level in (os.path.dirname(self.path), os.path.dirname(os.path.dirname(self.path))):
            try:
                os.rmdir(level)  # only once no other pool keeps records there
            except OSError:
                break

    def _file(self, entry: Entry) -> str:
        return f"{self.path}/{entry.slot[0]}/{entry.name}"
