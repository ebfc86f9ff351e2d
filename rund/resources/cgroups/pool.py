"""A pool of pre-created sandbox cgroups, shared by every shim process on the host.

Each slot is a cgroup with a fixed name in every hierarchy plus a record in the registry (see
registry.py). Who holds a slot is decided by renaming its record: of two processes renaming the same
free record exactly one succeeds; the other gets ENOENT and tries the next. A record is created before
its cgroups and removed after them, so a cgroup without a record is an orphan. reconcile() takes back
slots whose owner died and finishes whatever a crashed process left half done.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable

from . import files, names
from .driver import SLOT_PREFIX, CgroupDriver
from .errors import CgroupBusy, CgroupError, CgroupUnavailable, LeaseNotHeld
from .lease import CgroupLease
from .limits import CgroupLimits
from .names import Entry, Owner
from .owners import current_owner, is_alive
from .registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolStatistics:
    """free and leased count the whole pool (every process); the others count this pool object's work."""

    free: int
    leased: int
    created: int  # cgroups this process created (refill and fallback)
    reused: int  # acquisitions served from the pool
    fallbacks: int  # acquisitions that found the pool empty and created a cgroup instead


class CgroupPool:
    def __init__(self, driver: CgroupDriver, registry: Registry, size: int = 16, kill_timeout_s: float = 5.0) -> None:
        self.driver = driver
        self.registry = registry
        self.size = size
        self.kill_timeout_s = kill_timeout_s
        self._counts = {"created": 0, "reused": 0, "fallbacks": 0}
        self._counts_lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    # --- handing out -------------------------------------------------------------------------------

    def acquire(self, sandbox_id: str, limits: CgroupLimits | None = None) -> CgroupLease:
        """Take a free cgroup for `sandbox_id` (creating one if the pool is empty) and apply `limits`."""
        names.check_sandbox_id(sandbox_id)
        owner = current_owner()
        lease = None
        for slot in self.registry.free_slots():
            held = names.lease(slot, owner, sandbox_id)
            if self.registry.move(names.free(slot), held):
                self._count("reused")
                lease = self._lease(held, fallback=False)
                break
        if lease is None:
            # size 0 is "no pool" (config cgroups.pool = false): creating on demand is then the plan.
            log.log(logging.WARNING if self.size else logging.DEBUG,
                    "cgroup pool %s is empty: creating a cgroup for %s", self.registry.path, sandbox_id)
            held = names.lease(names.new_slot(), owner, sandbox_id)
            self._create(held)
            self._count("fallbacks")
            lease = self._lease(held, fallback=True)
        try:
            if limits is not None:
                self.driver.apply(lease.paths, limits, fresh=True)  # a free slot was reset by its release
        except BaseException:
            self.release(lease)
            raise
        for listener in self._listeners:
            listener()
        return lease

    def update(self, lease: CgroupLease, limits: CgroupLimits) -> None:
        self._check_held(lease)
        self.driver.apply(lease.paths, limits)

    def release(self, lease: CgroupLease) -> None:
        """Kill what is left inside, reset limits, reclaim memory, and put the cgroup back in the pool.

        A pool of size 0 (no pool) removes the cgroup instead.
        """
        held = self._check_held(lease)
        if self.size == 0:
            self._remove(held)
        else:
            self._return(held)

    # --- keeping it full ---------------------------------------------------------------------------

    def fill(self, target: int | None = None) -> int:
        """Create free cgroups until the pool holds `target` (default: size); returns how many were made."""
        missing = max((self.size if target is None else target) - self.statistics().free, 0)
        for _ in range(missing):
            creating = names.claimed(names.NEW, names.new_slot(), current_owner())
            self._create(creating)
            self.registry.move(creating, names.free(creating.slot))
        return missing

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the acquiring thread) after every acquire, e.g. to wake a refiller."""
        self._listeners.append(callback)

    def statistics(self) -> PoolStatistics:
        listing = self.registry.listing()
        with self._counts_lock:
            return PoolStatistics(
                free=sum(n.startswith(names.FREE + "-") for n in listing),
                leased=sum(n.startswith(names.LEASE + "-") for n in listing),
                **self._counts,
            )

    # --- recovery ----------------------------------------------------------------------------------

    def reconcile(self) -> int:
        """Take back slots whose owner is gone, repair missing cgroups, and remove orphans.

        Returns how many leases were taken back from dead owners.
        """
        me = current_owner()
        self.registry.adopt_flat_records()  # before the listings: an unadopted record would leave an orphan
        # Cgroups before records: a record is made before its cgroups and removed after them, so a cgroup
        # whose slot is missing from the later record listing is a true orphan.
        dirs = [self._slot_dirs(h) for h in self.driver.hierarchies]
        entries = {e.slot: e for e in self.registry.entries()}
        taken_back = 0
        for slot, entry in entries.items():
            try:
                if entry.state == names.FREE:
                    if any(slot not in d for d in dirs):
                        self._repair_free(entry, me)
                elif entry.owner != me and not is_alive(entry.owner):
                    taken_back += self._take_back(entry, me)
            except CgroupError as e:
                log.warning("cgroup pool: could not recover %s: %s", entry.name, e)
        for hierarchy, slots in zip(self.driver.hierarchies, dirs):
            for slot in slots - entries.keys():
                self._remove_orphan(os.path.join(hierarchy, SLOT_PREFIX + slot))
        self.registry.prune_empty()
        self.registry.refresh_free_map()
        return taken_back

    def destroy(self) -> None:
        """Empty and remove every cgroup of the pool, its parents and its registry (teardown, tests).

        Forceful: leases held by live processes go too.
        """
        me = current_owner()
        for entry in self.registry.entries():
            gone = names.claimed(names.GONE, entry.slot, me)
            if self.registry.move(entry, gone):
                self._remove(gone)
        for hierarchy in self.driver.hierarchies:
            for slot in self._slot_dirs(hierarchy):
                self._remove_orphan(os.path.join(hierarchy, SLOT_PREFIX + slot))
            try:
                os.rmdir(hierarchy)
            except FileNotFoundError:
                pass
        self.registry.destroy()

    # --- internals ---------------------------------------------------------------------------------

    def _lease(self, entry: Entry, fallback: bool) -> CgroupLease:
        assert entry.sandbox_id is not None
        return CgroupLease(entry.sandbox_id, entry.slot, entry.name, self.driver.paths(entry.slot), fallback,
                           self.driver.join_file)

    def _check_held(self, lease: CgroupLease) -> Entry:
        entry = names.parse(lease.record)
        if entry is None or not self.registry.holds(entry):
            raise LeaseNotHeld(f"{lease.record} is not leased any more")
        return entry

    def _count(self, key: str) -> None:
        with self._counts_lock:
            self._counts[key] += 1

    def _create(self, entry: Entry) -> None:
        """Record a new slot, then mkdir its cgroup in every hierarchy."""
        try:
            self.registry.create(entry)
        except OSError as e:
            raise CgroupUnavailable(f"cannot record slot {entry.slot} in {self.registry.path}: {e}") from e
        made: list[str] = []
        try:
            for path in self.driver.paths(entry.slot):
                os.mkdir(path)
                made.append(path)
            self.driver.init_cgroup(tuple(made))
        except (OSError, CgroupError) as e:
            try:
                for path in reversed(made):
                    os.rmdir(path)
                self.registry.remove(entry)
            except OSError:
                pass  # left for reconcile: the record names this process, which it will find gone
            raise CgroupUnavailable(f"cannot create the cgroups of slot {entry.slot}: {e}") from e
        self._count("created")

    def _ensure_dirs(self, slot: str) -> None:
        paths = self.driver.paths(slot)
        for path in paths:
            files.makedirs(path)
        self.driver.init_cgroup(paths)

    def _return(self, held: Entry) -> None:
        paths = self.driver.paths(held.slot)
        self.driver.kill(paths, self.kill_timeout_s)
        self.driver.reset(paths)
        self.driver.reclaim(paths)
        self.registry.move(held, names.free(held.slot))  # last: from now on others can take it

    def _remove(self, held: Entry) -> None:
        paths = self.driver.paths(held.slot)
        self.driver.kill(paths, self.kill_timeout_s)
        self.driver.reclaim(paths)  # no page cache left behind to pin a dying cgroup
        for path in paths:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
        self.registry.remove(held)

    def _repair_free(self, entry: Entry, me: Owner) -> None:
        claim = names.claimed(names.NEW, entry.slot, me)
        if not self.registry.move(entry, claim):
            return  # taken meanwhile: the slot is its new owner's business
        self._ensure_dirs(entry.slot)
        self._return(claim)

    def _take_back(self, entry: Entry, me: Owner) -> int:
        if entry.state == names.LEASE:
            assert entry.sandbox_id is not None
            claim = names.lease(entry.slot, me, entry.sandbox_id)
        else:
            claim = names.claimed(entry.state, entry.slot, me)
        if not self.registry.move(entry, claim):
            return 0  # another process is taking it back
        if entry.state == names.GONE:
            self._remove(claim)
            return 0
        log.info("cgroup pool: taking back %s from a dead owner", entry.name)
        self._ensure_dirs(entry.slot)
        self._return(claim)
        return 1 if entry.state == names.LEASE else 0

    def _slot_dirs(self, hierarchy: str) -> set[str]:
        try:
            listing = os.listdir(hierarchy)
        except FileNotFoundError:
            return set()
        return {n[len(SLOT_PREFIX):] for n in listing if n.startswith(SLOT_PREFIX)}

    def _remove_orphan(self, path: str) -> None:
        """Remove a cgroup that has no record (nothing can own it)."""

        def empty() -> bool:
            left = files.procs(path)
            files.signal_all(left)
            return not left

        try:
            files.wait_until(empty, self.kill_timeout_s, f"{path} to empty")
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except (OSError, CgroupBusy) as e:
            log.warning("cgroup pool: cannot remove orphan %s: %s", path, e)
