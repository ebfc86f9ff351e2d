"""Least-recently-used removal of unpinned images once the cache's real disk usage passes its bound.

An image is removed only under its key's exclusive lock and only when its pin directory is empty; pinning a hit
holds the same lock shared, so a pin and a removal can never interleave, in any process. The last use of an image is
the mtime of its pin directory, which the kernel updates for free whenever a pin is created or removed.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass

from . import paths
from .layout import CacheLayout
from .locks import open_locked

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    key: str
    disk_bytes: int  # st_blocks: the padding of a sparse image costs nothing
    last_used_ns: int


def cached_entries(layout: CacheLayout) -> list[Entry]:
    entries = []
    for name in paths.listdir(layout.images):
        if not name.endswith(".erofs"):
            continue
        key = name[: -len(".erofs")]
        try:
            st = os.stat(f"{layout.images}/{name}")
        except FileNotFoundError:
            continue
        last_used = st.st_mtime_ns
        try:
            last_used = max(last_used, os.stat(layout.pin_dir(key)).st_mtime_ns)
        except FileNotFoundError:
            pass
        entries.append(Entry(key, st.st_blocks * 512, last_used))
    return entries


def private_bytes(layout: CacheLayout) -> tuple[int, int]:
    """(count, disk bytes) of the per-owner images."""
    count = total = 0
    for owner in paths.listdir(layout.private):
        for name in paths.listdir(layout.owner_dir(owner)):
            try:
                total += os.stat(f"{layout.owner_dir(owner)}/{name}").st_blocks * 512
                count += 1
            except FileNotFoundError:
                pass
    return count, total


def evict(layout: CacheLayout, max_bytes: int, keep: str = "") -> list[str]:
    """Remove unpinned images, oldest use first, until usage <= max_bytes. Returns the removed keys.

    Does nothing if another process is evicting already (it is doing the same work).
    """
    guard = open_locked(layout.evict_lock, exclusive=True, blocking=False)
    if guard is None:
        return []
    try:
        entries = cached_entries(layout)
        total = sum(e.disk_bytes for e in entries) + private_bytes(layout)[1]
        removed: list[str] = []
        for entry in sorted(entries, key=lambda e: e.last_used_ns):
            if total <= max_bytes:
                break
            if entry.key != keep and remove_unpinned(layout, entry.key):
                removed.append(entry.key)
                total -= entry.disk_bytes
        if total > max_bytes:
            log.warning("rootfs cache uses %d bytes, over its %d-byte bound: every remaining image is in use",
                        total, max_bytes)
        return removed
    finally:
        os.close(guard)


def remove_unpinned(layout: CacheLayout, key: str) -> bool:
    lock = open_locked(layout.lock(key), exclusive=True, blocking=False)
    if lock is None:
        return False  # being pinned or rebuilt right now: in use
    try:
        pins = layout.pin_dir(key)
        if paths.listdir(pins):
            return False
        paths.unlink(layout.image(key))
        paths.unlink(layout.meta(key))
        shutil.rmtree(pins, ignore_errors=True)
        paths.unlink(layout.lock(key))  # waiters notice the unlinked lock file and start over (locks.py)
        log.info("rootfs cache: evicted %s", key)
        return True
    finally:
        os.close(lock)
