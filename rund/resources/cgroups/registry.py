"""The pool's ownership records: one directory per slot, holding one empty file named after its state.

    <registry>/<shelf>/<slot>/free-<slot>          (the names are names.py's)
    <registry>/<shelf>/<slot>/lease-<slot>-<owner>-<sandbox>

Taking a slot is rename(2) of its record inside the slot's own directory: of two processes renaming
the same record exactly one wins, and the rename locks only that directory, so acquires of different
slots never wait for each other. (With the records of many slots in one shared directory, 200
concurrent acquires slept on its lock; when the holder was descheduled, for tens of ms.)

Finding a free slot asks the free-slot map first (freemap.py: shared memory, no syscall), which
move() keeps up to date. Only when it has nothing does an acquire list the registry: one shelf at a
time (the 16 shelves are the first hex digit of the slot), which read-locks it only and changes only
when slots are made or removed, probing `free-<slot>` with access(2), a lookup that takes no lock.

Records live outside cgroupfs because cgroup v2 refuses rename (EPERM) and a v1 rename takes the
kernel-global cgroup_mutex, the very lock the pool is meant to stay away from. The directory is keyed
by boot id: cgroups do not survive a reboot, so neither may their records.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Iterator

from . import names
from .errors import CgroupUnavailable
from .freemap import FreeMap
from .names import Entry

DEFAULT_STATE_DIR = "/run/rund/cgroup-pool"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
SHELVES = "0123456789abcdef"


class Registry:
    def __init__(self, path: str) -> None:
        self.path = path
        self.free_map = FreeMap(f"{path}/free.map", lock_dir=path)

    @classmethod
    def for_pool(cls, state_dir: str, version: int, parent: str) -> Registry:
        with open(BOOT_ID) as f:
            boot = f.read().strip()
        return cls(os.path.join(state_dir, boot, f"v{version}-{parent.strip('/').replace('/', '%')}"))

    def prepare(self) -> None:
        for shelf in SHELVES:
            os.makedirs(f"{self.path}/{shelf}", exist_ok=True)
        # Records of earlier boots name cgroups that no longer exist and owners that cannot be alive.
        boots = os.path.dirname(os.path.dirname(self.path))
        current = os.path.basename(os.path.dirname(self.path))
        for boot in os.listdir(boots):
            if boot != current:
                shutil.rmtree(os.path.join(boots, boot), ignore_errors=True)

    def slots(self) -> list[str]:
        """Every slot with a directory here (whatever its state)."""
        try:
            return [name for shelf in SHELVES for name in os.listdir(f"{self.path}/{shelf}") if names.is_slot(name)]
        except FileNotFoundError as e:
            raise CgroupUnavailable(f"cgroup pool registry {self.path} does not exist (pool not prepared)") from e

    def listing(self) -> list[str]:
        """Every record name. A slot directory without a record is one being made or removed right now."""
        records = []
        for slot in self.slots():
            try:
                records.extend(os.listdir(self._dir(slot)))
            except FileNotFoundError:
                pass  # removed since the listing
        return records

    def entries(self) -> list[Entry]:
        return [e for e in map(names.parse, self.listing()) if e is not None]

    def free_slots(self) -> Iterator[str]:
        """Slots that are probably free: the free-slot map's, then any the map missed.

        The hot path of every acquire. A slot may be taken by the time the caller renames its
        record (then it tries the next) and may come twice; the caller stops at its first success.
        """
        yield from self.free_map.candidates()
        yield from self._listed_free_slots()

    def _listed_free_slots(self) -> Iterator[str]:
        """Slots whose record says free: shelf by shelf from a random one, each listed only when reached.

        One short listing per shelf, then one access(2) per probe. Racing acquirers start on
        different shelves and at different places in a shelf. A listing is not filtered (a regex per
        name costs more than the probes): only this module makes entries here, and anything else has
        no free record to find.
        """
        prefix = names.FREE + "-"
        first = random.randrange(len(SHELVES))
        for i in range(len(SHELVES)):
            shelf = f"{self.path}/{SHELVES[(first + i) % len(SHELVES)]}"
            try:
                slots = os.listdir(shelf)
            except FileNotFoundError as e:
                raise CgroupUnavailable(f"cgroup pool registry {self.path} does not exist (pool not prepared)") from e
            start = random.randrange(len(slots)) if slots else 0
            for slot in slots[start:] + slots[:start]:
                if os.access(f"{shelf}/{slot}/{prefix}{slot}", os.F_OK):
                    yield slot

    def create(self, entry: Entry) -> None:
        """Record a new slot; fails if the slot exists (slots are random, so that is a collision)."""
        directory = self._dir(entry.slot)
        os.mkdir(directory)
        try:
            os.close(os.open(self._file(entry), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except BaseException:
            os.rmdir(directory)
            raise

    def move(self, old: Entry, new: Entry) -> bool:
        """Atomically turn `old` into `new` (same slot); False if `old` is gone (someone else took it)."""
        assert old.slot == new.slot, "a record stays in its slot's directory"
        try:
            os.rename(self._file(old), self._file(new))
        except FileNotFoundError:
            return False
        if new.state == names.FREE:
            self.free_map.free(new.slot)
        elif old.state == names.FREE:
            self.free_map.taken(new.slot)
        return True

    def holds(self, entry: Entry) -> bool:
        return os.access(self._file(entry), os.F_OK)

    def remove(self, entry: Entry) -> None:
        self.free_map.forget(entry.slot)
        os.unlink(self._file(entry))
        try:
            os.rmdir(self._dir(entry.slot))
        except OSError:
            pass  # a slot directory left empty is cleaned by prune_empty()

    def prune_empty(self, min_age_s: float = 60.0) -> None:
        """Remove slot directories left without a record by a crash (between mkdir and record, or after unlink).

        Only old ones: a fresh empty directory may be a creator's that is about to write its record.
        """
        now = time.time()
        for slot in self.slots():
            directory = self._dir(slot)
            try:
                if now - os.stat(directory).st_mtime > min_age_s:
                    os.rmdir(directory)  # fails unless empty
            except OSError:
                pass

    def refresh_free_map(self) -> None:
        """Make the free-slot map agree with the records (after a crash left it stale, or an upgrade)."""
        listed_free = [e.slot for e in self.entries() if e.state == names.FREE]
        self.free_map.rebuild(listed_free, self._state_now)

    def _state_now(self, slot: str) -> bool | None:
        """True if the slot's record says free, False if it is held (or being made or removed), None if gone."""
        if self.holds(names.free(slot)):
            return True
        return False if os.path.isdir(self._dir(slot)) else None

    def destroy(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        for level in (os.path.dirname(self.path), os.path.dirname(os.path.dirname(self.path))):
            try:
                os.rmdir(level)  # only once no other pool keeps records there
            except OSError:
                break

    def _dir(self, slot: str) -> str:
        return f"{self.path}/{slot[0]}/{slot}"

    def _file(self, entry: Entry) -> str:
        return f"{self.path}/{entry.slot[0]}/{entry.slot}/{entry.name}"
