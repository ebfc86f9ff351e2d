"""A shared, advisory map of which pool slots are free: a free slot found without looking at every slot.

Listing the registry finds a free slot with one access(2) probe per slot it looks at. When most slots
are leased (a host running 1000 sandboxes keeps a few dozen free) or a burst drains the pool, that is
hundreds of probes: the last of 200 concurrent acquires probed up to ~150 slots, about half of the
pool's 1 ms p99. This map answers with one scan of a byte array in shared memory: no syscall, no lock.

It is a hint, never the truth. The rename of a slot's record still decides who gets the slot: a slot
the map wrongly calls free costs one failed rename, and a free slot the map misses is still found by
listing the registry. reconcile() rebuilds the map from the records.

    <registry>/free.map: a header (magic, capacity, entries in use), `capacity` state bytes, then
    `capacity` slot ids of 6 bytes (a slot's 12 hex digits as bytes)

A state flips with a single-byte store and no lock; an entry's id is written before the byte that
calls it free. Entries are added and cleared under an flock of the registry directory, which only
slot creation, removal and reconcile take. The file is allocated in full when made, so a store never
needs a new page (on a full tmpfs that would be SIGBUS); if it cannot be made, the pool works without.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import random
import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

MAGIC = b"rundfm01"
HEADER = struct.Struct("<8sII")  # magic, capacity, entries in use (a high-water mark)
HEADER_SIZE = 64
ID_SIZE = 6
DEFAULT_CAPACITY = 8192  # slots beyond it are found by listing the registry
EMPTY, FREE, TAKEN = b"\x00", b"\x01", b"\x02"
_NO_ID = bytes(ID_SIZE)


class FreeMap:
    def __init__(self, path: str, lock_dir: str, capacity: int = DEFAULT_CAPACITY) -> None:
        self.path = path
        self.capacity = capacity
        self._lock_dir = lock_dir
        self._ids = HEADER_SIZE + capacity  # offset of the id array
        self._size = self._ids + capacity * ID_SIZE
        self._map: mmap.mmap | None = None
        self._unusable = False  # could not be made (e.g. a full disk): retried by rebuild()
        self._where: dict[str, int] = {}  # slot -> the entry it was last seen in (checked before use)

    # --- lock-free: the hot path of every acquire and release --------------------------------------

    def candidates(self) -> Iterator[str]:
        """Slots the map calls free, from a random entry on, each once; racing acquirers start apart."""
        m = self._mapped()
        if m is None:
            return
        used = self._used(m)
        if used == 0:
            return
        start = random.randrange(used)
        for lo, hi in ((start, used), (0, start)):
            at = m.find(FREE, HEADER_SIZE + lo, HEADER_SIZE + hi)
            while at >= 0:
                index = at - HEADER_SIZE
                slot = self._id(m, index)
                if slot is not None:
                    self._where[slot] = index
                    yield slot
                at = m.find(FREE, at + 1, HEADER_SIZE + hi)

    def taken(self, slot: str) -> None:
        """The slot's record stopped being free (it was claimed)."""
        m = self._mapped()
        index = None if m is None else self._index(m, slot)
        if index is not None:
            m[HEADER_SIZE + index] = TAKEN[0]

    def free(self, slot: str) -> None:
        """The slot's record became free: mark its entry, adding one if the slot has none."""
        m = self._mapped()
        if m is None:
            return
        index = self._index(m, slot)
        if index is None:
            with self._locked():
                index = self._index(m, slot)
                if index is None:
                    index = self._add(m, slot)
        if index is not None:
            m[HEADER_SIZE + index] = FREE[0]

    # --- under the lock: slot creation, removal and reconcile ----------------------------------------

    def forget(self, slot: str) -> None:
        """The slot is being removed: clear its entry for reuse."""
        m = self._mapped()
        if m is None:
            return
        with self._locked():
            index = self._index(m, slot)
            if index is not None:
                self._clear(m, index)

    def rebuild(self, listed_free: Iterable[str], state_of: Callable[[str], bool | None]) -> None:
        """Make the map agree with the records.

        `state_of(slot)` reads one slot's record now: True free, False held (or being made or removed),
        None gone. Each entry is checked right before it is corrected, and only a wrong one is written,
        so a rebuild racing with acquires (`delete` after a shim crash reconciles while other shims
        acquire) rarely undoes a claim or a release made since it listed the registry. `listed_free`
        are free slots to add if missing.
        """
        self._unusable = False
        m = self._mapped()
        if m is None:
            return
        with self._locked():
            seen: set[str] = set()
            for index in range(self._used(m)):
                slot = self._id(m, index)
                if slot is None:
                    continue
                state = None if slot in seen else state_of(slot)
                if state is None:
                    self._clear(m, index)
                    continue
                seen.add(slot)
                self._where[slot] = index
                want = FREE if state else TAKEN
                if m[HEADER_SIZE + index] != want[0]:
                    m[HEADER_SIZE + index] = want[0]
            for slot in sorted(set(listed_free) - seen):
                if state_of(slot) is not True:
                    continue
                index = self._add(m, slot)
                if index is None:
                    break  # full: the rest are found by listing the registry
                m[HEADER_SIZE + index] = FREE[0]

    # --- internals -----------------------------------------------------------------------------------

    def _used(self, m: mmap.mmap) -> int:
        return min(HEADER.unpack_from(m, 0)[2], self.capacity)

    def _id(self, m: mmap.mmap, index: int) -> str | None:
        if m[HEADER_SIZE + index] == EMPTY[0]:
            return None
        offset = self._ids + index * ID_SIZE
        return m[offset:offset + ID_SIZE].hex()

    def _index(self, m: mmap.mmap, slot: str) -> int | None:
        index = self._where.get(slot)
        if index is not None and self._id(m, index) == slot:
            return index
        raw = bytes.fromhex(slot)  # a slot is 12 hex digits (names.py)
        end = self._ids + self._used(m) * ID_SIZE
        at = m.find(raw, self._ids, end)
        while at >= 0:
            index, misaligned = divmod(at - self._ids, ID_SIZE)
            if not misaligned and m[HEADER_SIZE + index] != EMPTY[0]:  # not across two ids, not a cleared one
                self._where[slot] = index
                return index
            at = m.find(raw, at + 1, end)
        return None

    def _add(self, m: mmap.mmap, slot: str) -> int | None:
        """A new entry for `slot`, state TAKEN until the caller says otherwise; None when full. Locked."""
        used = self._used(m)
        at = m.find(EMPTY, HEADER_SIZE, HEADER_SIZE + used)
        if at >= 0:
            index = at - HEADER_SIZE
        elif used < self.capacity:
            index = used
        else:
            return None
        m[HEADER_SIZE + index] = TAKEN[0]
        offset = self._ids + index * ID_SIZE
        m[offset:offset + ID_SIZE] = bytes.fromhex(slot)
        if index == used:
            HEADER.pack_into(m, 0, MAGIC, self.capacity, used + 1)
        self._where[slot] = index
        return index

    def _clear(self, m: mmap.mmap, index: int) -> None:
        m[HEADER_SIZE + index] = EMPTY[0]  # the state says whether an entry is in use; an id of zeros is a slot
        offset = self._ids + index * ID_SIZE
        m[offset:offset + ID_SIZE] = _NO_ID

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # A descriptor of its own each time: flock belongs to the open file, which a fork shares.
        fd = os.open(self._lock_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _mapped(self) -> mmap.mmap | None:
        if self._map is None and not self._unusable:
            try:
                self._map = self._open()
            except OSError as e:
                self._unusable = True
                log.warning("cgroup pool: no free-slot map at %s (%s); free slots are found by listing", self.path, e)
        return self._map

    def _open(self) -> mmap.mmap:
        fd = self._open_valid()
        if fd < 0:
            with self._locked():
                fd = self._open_valid()  # made by another process meanwhile?
                if fd < 0:
                    self._make()
                    fd = os.open(self.path, os.O_RDWR)
        try:
            return mmap.mmap(fd, self._size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)

    def _open_valid(self) -> int:
        """A descriptor of the map if it exists and is whole, else -1."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return -1
        if self._valid(fd):
            return fd
        os.close(fd)
        return -1

    def _valid(self, fd: int) -> bool:
        if os.fstat(fd).st_size != self._size:
            return False
        magic, capacity, used = HEADER.unpack(os.pread(fd, HEADER.size, 0))
        return magic == MAGIC and capacity == self.capacity and used <= capacity

    def _make(self) -> None:
        """Write a new, empty map next to the old and rename it over: readers never see half of one."""
        temporary = f"{self.path}.{os.getpid()}.new"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(fd, 0, self._size)  # every page now: a later store cannot hit a full disk
            os.pwrite(fd, HEADER.pack(MAGIC, self.capacity, 0), 0)
            os.rename(temporary, self.path)
        except BaseException:
            os.unlink(temporary)
            raise
        finally:
            os.close(fd)
