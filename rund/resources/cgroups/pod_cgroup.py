"""The VMM's cgroup at the place the pod's spec names (OCI linux.cgroupsPath), where Kubernetes accounts the pod.

kubelet creates a pod's cgroup (e.g. /kubepods/burstable/pod<uid>), limits it to the pod's resources plus the
RuntimeClass overhead, and reads its usage there (cadvisor, and containerd's PodSandboxStats, which loads the pod's
cgroup_parent). runc puts the pause process in a child of it, named by the sandbox container's cgroupsPath. A VM pod
has no pause process on the host: the VMM is what runs the pod, so it goes there instead, the way Kata's
sandbox_cgroup_only does. The pool (pool.py) cannot serve this: its slots are made in advance under rund's own parent.

Made with mkdir (every level runc would make), removed after the VMM is gone: killed, memory reclaimed, then rmdir,
so no dying cgroup is left. Levels above the leaf belong to whoever made them and stay.
"""

from __future__ import annotations

import logging
import os

from . import files
from .driver import CgroupDriver, cgroup_parts
from .errors import CgroupUnavailable, InvalidCgroupPath
from .lease import CgroupPlacement
from .limits import CgroupLimits

log = logging.getLogger(__name__)


def resolve_cgroups_path(cgroups_path: str) -> str:
    """The cgroup directory, relative to a hierarchy's root, that an OCI linux.cgroupsPath names.

    cgroupfs form: a path, taken from the root as runc does for an absolute one. systemd form
    "<slice>:<prefix>:<name>": laid out the way systemd (and runc's systemd driver) does, the slice expanded
    (kubepods-besteffort-pod1.slice lives in kubepods.slice/kubepods-besteffort.slice/) and the unit
    "<prefix>-<name>.scope" inside it. rund creates the directory itself; it does not ask systemd for a unit.
    """
    return _checked(_layout(cgroups_path))


def _layout(cgroups_path: str) -> str:
    if ":" not in cgroups_path:
        return "/" + "/".join(p for p in cgroups_path.split("/") if p)     # runc cleans the path the same way
    parts = cgroups_path.split(":")
    if len(parts) != 3 or not parts[2]:
        raise InvalidCgroupPath(f"systemd cgroup path {cgroups_path!r} is not <slice>:<prefix>:<name>")
    slice_, prefix, name = parts
    unit = name if name.endswith(".slice") else (f"{prefix}-{name}.scope" if prefix else f"{name}.scope")
    return f"{expand_slice(slice_ or 'system.slice')}/{unit}"


def _checked(path: str) -> str:
    cgroup_parts(path)
    return path


def expand_slice(slice_: str) -> str:
    """systemd's slice nesting: a-b-c.slice is /a.slice/a-b.slice/a-b-c.slice; -.slice is the root."""
    if not slice_.endswith(".slice") or "/" in slice_:
        raise InvalidCgroupPath(f"{slice_!r} is not a systemd slice name")
    stem = slice_[:-len(".slice")]
    if stem == "-":
        return ""
    if not stem or stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise InvalidCgroupPath(f"{slice_!r} is not a valid systemd slice name")
    path, prefix = "", ""
    for word in stem.split("-"):
        prefix = f"{prefix}-{word}" if prefix else word
        path += f"/{prefix}.slice"
    return path


class PodCgroup:
    """The VMM's cgroup at `path` in every hierarchy the driver uses."""

    def __init__(self, driver: CgroupDriver, path: str, kill_timeout_s: float = 5.0) -> None:
        self.driver = driver
        self.path = path
        self.paths = driver.at(path)
        self.kill_timeout_s = kill_timeout_s

    @classmethod
    def create(cls, driver: CgroupDriver, path: str, limits: CgroupLimits | None = None,
               kill_timeout_s: float = 5.0) -> PodCgroup:
        """mkdir the cgroup (and the levels above it that are missing), then apply `limits`. A cgroup already
        there is refused: it is someone else's (or a crashed shim's, which `delete` removes)."""
        cgroup = cls(driver, path, kill_timeout_s)
        existing = [d for d in cgroup.paths if os.path.isdir(d)]
        if any(files.procs(d) for d in existing):
            raise CgroupUnavailable(f"cgroup {path} exists and holds processes")
        if existing:
            log.info("cgroup %s exists and is empty (left by a crash?): taking it", path)
        try:
            driver.make_cgroup(path)
            driver.init_cgroup(cgroup.paths)
            if limits is not None:
                driver.apply(cgroup.paths, limits)
        except BaseException:
            cgroup._undo([d for d in cgroup.paths if d not in existing])
            raise
        return cgroup

    def placement(self) -> CgroupPlacement:
        return CgroupPlacement.of(self.paths, self.driver.join_file)

    def update(self, limits: CgroupLimits) -> None:
        self.driver.apply(self.paths, limits)

    def remove(self) -> None:
        """Kill what is left inside, reclaim its memory, rmdir it (idempotent: a cgroup already gone is fine)."""
        if any(os.path.isdir(p) for p in self.paths):
            self.driver.remove(self.paths, self.kill_timeout_s)

    def _undo(self, made: list[str]) -> None:
        for directory in reversed(made):
            try:
                os.rmdir(directory)
            except OSError as e:
                if not isinstance(e, FileNotFoundError):
                    log.warning("cgroup %s: undoing a failed create: %s", directory, e)
