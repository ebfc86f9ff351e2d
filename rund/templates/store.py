"""The template directory: <root>/<key>/{memory, state, manifest.json, console.log, qemu.log} and <root>/<key>.lock.

A template appears by one rename of a finished build directory and disappears by one rename into a trash name, so a
reader sees a whole template or none. Clones that still map a removed RAM file keep it alive (tmpfs frees it with
the last mapping). The RAM file must be on tmpfs (or hugetlbfs): clones map it copy-on-write and rely on the page
cache being the memory itself, and a disk-backed file would be written back for nothing.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from rund.errors import FailedPrecondition
from rund.templates import integrity
from rund.atomicfile import fsync_dir, fsync_file, write_atomic
from rund.templates.digests import DigestCache
from rund.templates.errors import TemplateCorrupt, TemplateMissing
from rund.templates.lock import BuildLock
from rund.templates.manifest import Manifest

log = logging.getLogger("rund.templates")

MEMORY_FILESYSTEMS = {"tmpfs", "hugetlbfs"}
BUILD_PREFIX = ".build-"
TRASH_PREFIX = ".trash-"
DIGEST_CACHE = ".input-digests.json"


@dataclass(frozen=True)
class Template:
    key: str
    dir: Path
    manifest: Manifest

    @property
    def memory(self) -> Path:
        return self.dir / "memory"

    @property
    def state(self) -> Path:
        return self.dir / "state"


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path` (longest mount point prefix in /proc/self/mountinfo)."""
    real = os.path.realpath(path)
    best, fstype = "", ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            mount_point = pre.split()[4].replace("\\040", " ")
            inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best):
                best, fstype = mount_point, post.split()[0]
    return fstype


def dir_bytes(directory: Path) -> int:
    """What a template's files take (allocated blocks: tmpfs holds that much RAM)."""
    return sum(p.stat().st_blocks * 512 for p in directory.iterdir() if p.is_file())


def mapped_templates(root: Path) -> set[str]:
    """Keys of the templates under root whose RAM file some process maps (a running clone, a spare), from every
    process's /proc/PID/maps."""
    prefix = f"{os.path.realpath(root)}/"
    keys = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    at = line.find(prefix)
                    if at >= 0 and line.rstrip("\n").endswith("/memory"):
                        keys.add(line[at + len(prefix):].split("/", 1)[0])
        except OSError:
            continue                          # gone, or a kernel thread
    return keys


class TemplateStore:
    def __init__(self, root: Path):
        self.root = root
        self.digests = DigestCache(root / DIGEST_CACHE)

    def ensure_root(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fstype = filesystem_type(self.root)
        if fstype not in MEMORY_FILESYSTEMS:
            raise FailedPrecondition(f"templates dir {self.root} is on {fstype or 'an unknown filesystem'}; "
                                     f"template RAM must live on tmpfs (e.g. under /dev/shm)")

    def path(self, key: str) -> Path:
        return self.root / key

    def lock(self, key: str) -> BuildLock:
        return BuildLock(self.root / f"{key}.lock")

    def load(self, key: str) -> Template:
        """The template's manifest, unverified. TemplateMissing / TemplateCorrupt."""
        directory = self.path(key)
        try:
            data = (directory / "manifest.json").read_bytes()
        except FileNotFoundError:
            if directory.exists():
                raise TemplateCorrupt(f"{directory} has no manifest.json") from None
            raise TemplateMissing(f"no template {key} in {self.root}") from None
        manifest = Manifest.from_json(data, str(directory / "manifest.json"))
        if manifest.key != key:
            raise TemplateCorrupt(f"{directory}: manifest is for key {manifest.key}")
        return Template(key, directory, manifest)

    def get(self, key: str, samples: int | None = integrity.DEFAULT_SAMPLES) -> Template:
        """A verified template (samples=None: every RAM chunk). TemplateMissing / TemplateCorrupt."""
        template = self.load(key)
        integrity.verify(template.dir, template.manifest, samples)
        return template

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    # ---- building (the caller holds lock(key)) ---------------------------------------------------

    def new_build_dir(self, key: str) -> Path:
        self.ensure_root()
        for stale in self.root.glob(f"{BUILD_PREFIX}{key}-*"):   # left by a builder that died holding the lock
            log.info("removing stale template build %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
        build = self.root / f"{BUILD_PREFIX}{key}-{os.getpid()}"
        build.mkdir(mode=0o700)
        return build

    def publish(self, build: Path, manifest: Manifest) -> Template:
        """Write the manifest, make the files read-only and durable, and rename the build into place."""
        for name in ("memory", "state"):
            os.chmod(build / name, 0o444)
            fsync_file(build / name)
        write_atomic(build / "manifest.json", manifest.to_json(), mode=0o444)
        fsync_dir(build)
        target = self.path(manifest.key)
        if target.exists():
            self._discard(target)
        os.rename(build, target)
        fsync_dir(self.root)
        return Template(manifest.key, target, manifest)

    def remove(self, key: str, reason: str = "") -> bool:
        target = self.path(key)
        if not target.exists():
            return False
        log.warning("removing template %s%s", key, f": {reason}" if reason else "")
        self._discard(target)
        return True

    def prune_superseded(self, current: Manifest) -> list[str]:
        """Remove templates of the same shape built from older inputs (guest image, kernel, QEMU, rund): no launcher
        of this installation can ask for them again, and each holds a guest's RAM in tmpfs."""
        removed = []
        for key in self.keys():
            if key == current.key:
                continue
            try:
                inputs = self.load(key).manifest.inputs
            except (TemplateCorrupt, TemplateMissing):
                continue                     # damaged or half-removed: the next launcher that wants it rebuilds
            if inputs.get("shape") == current.inputs.get("shape") and inputs.get("warm") == current.inputs.get("warm"):
                lock = self.lock(key)
                if not lock.try_acquire():
                    continue                 # being rebuilt right now
                try:
                    if self.remove(key, f"superseded by {current.key}"):
                        removed.append(key)
                finally:
                    lock.release()
                for leftover in (self.root / f"{key}.build.log",):
                    leftover.unlink(missing_ok=True)
        return removed

    # ---- what no pod uses (templates of shapes no runtime class asks for any more, an upgrade's leftovers) -------

    def mark_used(self, template: Template) -> None:
        """A launch cloned it now: its directory's mtime is its last use (nothing else writes there once published)."""
        try:
            os.utime(template.dir)
        except OSError:
            pass                            # removed meanwhile: the clone maps its files all the same

    def last_used(self, key: str) -> float:
        """When a launch last cloned the template (its publish time if none did); FileNotFoundError if gone."""
        return self.path(key).stat().st_mtime

    def unused(self, unused_s: float, now: float | None = None, mapped: set[str] | None = None
               ) -> dict[str, tuple[float, int]]:
        """key -> (seconds since its last clone, bytes it holds) of every template no launch cloned for `unused_s`
        seconds and no process maps (a clone running for a week keeps its template). Each is held in tmpfs, so in
        RAM, until removed: a node collects them as runtime classes, guest images and rund change."""
        now = time.time() if now is None else now
        mapped = mapped_templates(self.root) if mapped is None else mapped
        found = {}
        for key in self.keys():
            if key in mapped:
                continue
            try:
                idle = now - self.last_used(key)
                if idle >= unused_s:
                    found[key] = (idle, dir_bytes(self.path(key)))
            except FileNotFoundError:
                continue                     # removed meanwhile
        return found

    def prune_unused(self, unused_s: float, keep: set[str] = frozenset(), now: float | None = None,
                     mapped: set[str] | None = None) -> list[tuple[str, int]]:
        """Remove what `unused` finds, but those in `keep`; returns (key, bytes freed)."""
        removed = []
        for key, (idle, size) in self.unused(unused_s, now, mapped).items():
            if key in keep:
                continue
            lock = self.lock(key)
            if not lock.try_acquire():
                continue                     # being built or rebuilt right now
            try:
                if self.remove(key, f"no pod used it for {idle / 3600:.0f} h"):
                    removed.append((key, size))
            except FileNotFoundError:
                pass
            finally:
                lock.release()
            (self.root / f"{key}.build.log").unlink(missing_ok=True)
        return removed

    def _discard(self, directory: Path) -> None:
        trash = self.root / f"{TRASH_PREFIX}{directory.name}-{uuid.uuid4().hex[:8]}"
        os.rename(directory, trash)   # gone for readers at once; deleting the files takes a moment
        shutil.rmtree(trash, ignore_errors=True)
