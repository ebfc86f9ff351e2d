"""The content-addressed cache of container rootfs images (erofs, padded to a pmem slot), shared by every shim.

A hit is a handful of syscalls and writes no data: stat the layers (done by the mount parsing), take the key's lock
shared, create an empty pin file, check the image's size and erofs magic. A miss builds under the key's exclusive
lock, so concurrent shims wanting the same chain build it once and the others reuse the result.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rund.atomicfile import fsync_dir

from . import erofs, paths
from .build import build_image
from .errors import DiskFull, InvalidCacheConfig, InvalidOwner
from .evict import cached_entries, evict, private_bytes
from .key import FORMAT_VERSION, chain_key
from .layout import DIR_MODE, FILE_MODE, CacheLayout, check_owner
from .locks import FileLock
from .scratch import Scratch, sweep
from .source import ImageSource, SnapshotMount, plan_source

log = logging.getLogger(__name__)

SLOT_ALIGN = 2 << 20  # pmem slots are multiples of 2 MiB (rund.hypervisor.layout.PMEM_ALIGN)
DEFAULT_DIRECTORY = "/var/lib/rund/rootfs-cache"


@dataclass(frozen=True)
class RootfsImage:
    path: Path  # erofs image, exactly slot_bytes long: bind it to a pmem slot or a read-only virtio-blk
    key: str
    cached: bool  # False: built for its owner only, deleted at release
    upper_empty: bool  # False: the snapshot's upperdir had content, which this (per-owner) image includes
    slot_bytes: int
    built: bool  # this acquire built it (a miss)


@dataclass(frozen=True)
class CacheStatistics:
    entries: int  # cached images on disk
    bytes: int  # real disk usage of all images, per-owner ones included
    hits: int  # counters of this process
    builds: int
    evictions: int
    pinned: int  # pins on disk (one per owner and image)
    private: int  # per-owner images on disk


class RootfsCache:
    def __init__(self, directory: str = DEFAULT_DIRECTORY, slot_bytes: int = 512 << 20, max_bytes: int = 8 << 30):
        if slot_bytes <= 0 or slot_bytes % SLOT_ALIGN:
            raise InvalidCacheConfig(f"slot_bytes {slot_bytes} must be a positive multiple of {SLOT_ALIGN}")
        if max_bytes < slot_bytes:
            raise InvalidCacheConfig(f"max_bytes {max_bytes} must be at least one slot ({slot_bytes})")
        self.slot_bytes = slot_bytes
        self.max_bytes = max_bytes
        self.layout = CacheLayout(directory)
        self.layout.prepare()
        sweep(self.layout.tmp)
        self._counts = {"hits": 0, "builds": 0, "evictions": 0}
        self._counts_lock = threading.Lock()

    # -- the runtime's interface -------------------------------------------------------------------------------

    def acquire(self, mounts: Sequence[SnapshotMount], owner: str) -> RootfsImage:
        """The image of `mounts`' rootfs, pinned for `owner` until release(). Blocks while building."""
        check_owner(owner)
        source = plan_source(tuple(mounts))
        if not source.cacheable:
            return self._build_private(source, owner)
        key = chain_key(source, self.slot_bytes)
        hit = self._pin_hit(key, owner)
        if hit:
            self._count("hits")
            return self._image(key, source, built=False)
        built = self._pin_building(key, owner, source)
        if built:
            self._evict(keep=key)
        else:
            self._count("hits")  # someone else built it while we waited for the lock
        return self._image(key, source, built=built)

    def release(self, image: RootfsImage, owner: str) -> None:
        """Unpin (cached) or delete (per-owner) `image`. Idempotent."""
        check_owner(owner)
        if image.cached:
            paths.unlink(self.layout.pin(image.key, owner))
        else:
            if image.path.parent != Path(self.layout.owner_dir(owner)):
                raise InvalidOwner(f"{image.path} is not an image of owner {owner!r}")
            paths.unlink(str(image.path))
            paths.rmdir_if_empty(self.layout.owner_dir(owner))

    def release_owner(self, owner: str) -> None:
        """Unpin and delete everything `owner` holds, e.g. after its shim died. Idempotent."""
        check_owner(owner)
        for key in paths.listdir(self.layout.pins):
            paths.unlink(self.layout.pin(key, owner))
        shutil.rmtree(self.layout.owner_dir(owner), ignore_errors=True)

    def statistics(self) -> CacheStatistics:
        entries = cached_entries(self.layout)
        private_count, private_total = private_bytes(self.layout)
        pinned = sum(len(paths.listdir(self.layout.pin_dir(key))) for key in paths.listdir(self.layout.pins))
        with self._counts_lock:
            counts = dict(self._counts)
        return CacheStatistics(entries=len(entries), bytes=sum(e.disk_bytes for e in entries) + private_total,
                               pinned=pinned, private=private_count, **counts)

    def verify(self) -> list[str]:
        """Check every unpinned entry against its recorded sha256 and remove the ones that do not match (they are
        rebuilt on their next use). Reads every image: for maintenance, not the start path. Returns removed keys."""
        removed = []
        for entry in cached_entries(self.layout):
            with FileLock(self.layout.lock(entry.key), exclusive=True):
                problem = self._problem(entry.key, thorough=True)
                if problem and not paths.listdir(self.layout.pin_dir(entry.key)):
                    log.warning("rootfs cache entry %s is corrupt (%s): removed", entry.key, problem)
                    paths.unlink(self.layout.image(entry.key))
                    paths.unlink(self.layout.meta(entry.key))
                    removed.append(entry.key)
        return removed

    # -- hits, misses, builds ----------------------------------------------------------------------------------

    def _pin_hit(self, key: str, owner: str) -> bool:
        try:
            with FileLock(self.layout.lock(key), exclusive=False):
                if not self._create_pin(key, owner):
                    return False
                try:
                    return erofs.quick_problem(self.layout.image(key), self.slot_bytes) is None
                except FileNotFoundError:
                    return False
        except FileNotFoundError:  # locks/ itself is gone: the directory was wiped under us
            self.layout.prepare()
            return False

    def _pin_building(self, key: str, owner: str, source: ImageSource) -> bool:
        """Under the exclusive lock: rebuild the entry unless someone else just did, then pin. True if we built."""
        with FileLock(self.layout.lock(key), exclusive=True):
            problem = self._problem(key, thorough=False)
            built = False
            if problem is not None:
                if problem != "missing":
                    log.warning("rootfs cache entry %s is unusable (%s): rebuilding", key, problem)
                try:
                    self._build_entry(key, source)
                except BaseException:
                    paths.unlink(self.layout.pin(key, owner))  # the fast path may have left one
                    raise
                built = True
            os.makedirs(self.layout.pin_dir(key), mode=DIR_MODE, exist_ok=True)
            self._create_pin(key, owner)
            return built

    def _problem(self, key: str, thorough: bool) -> str | None:
        path = self.layout.image(key)
        try:
            problem = erofs.quick_problem(path, self.slot_bytes)
        except FileNotFoundError:
            return "missing"
        if problem or not thorough:
            return problem
        try:
            with open(self.layout.meta(key)) as f:
                meta = json.load(f)
            actual = erofs.digest(path, int(meta["image_bytes"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"unreadable record: {exc}"
        return None if actual == meta["sha256"] else f"sha256 {actual} differs from the recorded {meta['sha256']}"

    def _build_entry(self, key: str, source: ImageSource) -> None:
        started = time.monotonic()
        with Scratch(self.layout.tmp, key) as scratch:
            out = f"{scratch.path}/image.erofs"
            built = build_image(source, out, scratch.path, self.slot_bytes)
            meta = {"format": FORMAT_VERSION, "layers": list(source.paths), "slot_bytes": self.slot_bytes,
                    "image_bytes": built.image_bytes, "sha256": built.sha256, "built_at": time.time()}
            _guard_disk(lambda: _write_json(f"{scratch.path}/meta.json", meta))
            os.rename(f"{scratch.path}/meta.json", self.layout.meta(key))
            os.rename(out, self.layout.image(key))  # the image appears whole or not at all
            fsync_dir(self.layout.images)
        self._count("builds")
        log.info("rootfs cache: built %s (%d bytes, %d layers) in %.2f s", key, built.image_bytes,
                 len(source.layers), time.monotonic() - started)

    def _build_private(self, source: ImageSource, owner: str) -> RootfsImage:
        key = f"{chain_key(source, self.slot_bytes)[:24]}-{secrets.token_hex(4)}"
        owner_dir = self.layout.owner_dir(owner)
        started = time.monotonic()
        with Scratch(self.layout.tmp, f"private-{owner}") as scratch:
            out = f"{scratch.path}/image.erofs"
            built = build_image(source, out, scratch.path, self.slot_bytes)
            os.makedirs(owner_dir, mode=DIR_MODE, exist_ok=True)
            final = f"{owner_dir}/{key}.erofs"
            os.rename(out, final)
            fsync_dir(owner_dir)
        self._count("builds")
        log.info("rootfs cache: built a private image %s for %s (%d bytes) in %.2f s", key, owner,
                 built.image_bytes, time.monotonic() - started)
        return RootfsImage(Path(final), key, cached=False, upper_empty=source.upper_empty,
                           slot_bytes=self.slot_bytes, built=True)

    def _create_pin(self, key: str, owner: str) -> bool:
        """False if the key has no pin directory (never built, or evicted)."""
        try:
            os.close(os.open(self.layout.pin(key, owner), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"cannot pin {key} for {owner}: {exc.strerror}") from None
            raise
        return True

    def _evict(self, keep: str) -> None:
        removed = evict(self.layout, self.max_bytes, keep=keep)
        if removed:
            self._count("evictions", len(removed))

    def _image(self, key: str, source: ImageSource, built: bool) -> RootfsImage:
        return RootfsImage(Path(self.layout.image(key)), key, cached=True, upper_empty=source.upper_empty,
                           slot_bytes=self.slot_bytes, built=built)

    def _count(self, name: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[name] += n


def _write_json(path: str, value: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        os.write(fd, json.dumps(value, sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _guard_disk(action) -> None:
    try:
        action()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"rootfs cache: {exc.strerror}") from None
        raise
