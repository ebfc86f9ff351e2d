"""A pool of pre-created sandbox cgroups, shared by every shim process on the host.

Each slot is a cgroup with a fixed name in every hierarchy plus a record in the registry (see
registry.py). Who holds a slot is decided by renaming its record: of two processes renaming the same
free record exactly one succeeds; the other gets ENOENT and tries the next. reconcile() takes back
slots whose owner died and finishes whatever a crashed process left half done.

The registry is what a pool owns. The parent cgroup is not: pools of configurations with another
state_dir, and other software, may keep cgroups there. So recovery and teardown touch only slots this
registry records, and never kill a process in a cgroup it has no record of.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from dataclasses import dataclass

from . import files, names
from .driver import SLOT_PREFIX, CgroupDriver
from .errors import CgroupError, CgroupUnavailable, LeaseNotHeld
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
        """Take back this registry's slots whose owner is gone, and repair their missing cgroups.

        Cgroups under the parent that the registry does not record are someone else's and stay as they
        are. Returns how many leases were taken back from dead owners.
        """
        me = current_owner()
        # Records before cgroups: a free record's cgroups were made before it became free, so the later
        # listing holds them, and a missing one is really missing.
        entries = self.registry.entries()
        dirs = [self._slot_dirs(h) for h in self.driver.hierarchies]
        taken_back = 0
        for entry in entries:
            try:
                if entry.state == names.FREE:
                    if any(entry.slot not in d for d in dirs):
                        self._repair_free(entry, me)
                elif entry.owner != me and not is_alive(entry.owner):
                    taken_back += self._take_back(entry, me)
            except CgroupError as e:
                log.warning("cgroup pool: could not recover %s: %s", entry.name, e)
        self.registry.prune_empty()
        self.registry.refresh_free_map()
        return taken_back

    def destroy(self) -> None:
        """Empty and remove every slot of this registry, the registry, and the parent once nothing else is in it.

        Forceful: leases held by live processes go too (teardown, tests). A slot whose cgroups were
        removed underneath is fine; cgroups this registry does not record stay, and so does the parent.
        """
        me = current_owner()
        try:
            entries = self.registry.entries()
        except CgroupUnavailable:
            entries = []  # destroyed already (e.g. through another pool object on the same registry)
        for entry in entries:
            gone = names.claimed(names.GONE, entry.slot, me)
            if self.registry.move(entry, gone):
                self._remove(gone)
        for hierarchy in self.driver.hierarchies:
            try:
                os.rmdir(hierarchy)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise CgroupUnavailable(f"cannot remove the pool parent {hierarchy}: {e}") from e
                log.info("cgroup pool: %s still holds cgroups of others; left in place", hierarchy)
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
        self.driver.remove(self.driver.paths(held.slot), self.kill_timeout_s)
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
