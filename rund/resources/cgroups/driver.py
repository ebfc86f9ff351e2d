"""What the pool needs from a cgroup version: where its hierarchies are and how limits are set and cleared.

A driver knows the pool parent in each hierarchy (`hierarchies`: one per controller mount on v1, a single
one on v2). A slot's cgroup has the same fixed name in every one of them and is never renamed.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod

from . import files
from .errors import CgroupError, CgroupUnavailable, InvalidCgroupPath
from .limits import CgroupLimits


SLOT_PREFIX = "slot-"


def cgroup_parts(path: str) -> list[str]:
    """The directory names of a cgroup path relative to a hierarchy's root; InvalidCgroupPath if it leaves it."""
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in (".", "..") or "\0" in p or len(p) > 255 for p in parts):
        raise InvalidCgroupPath(f"cgroup path {path!r} does not name a cgroup below the hierarchy's root")
    return parts


class CgroupDriver(ABC):
    version: int
    join_file: str  # what a process writes "0" to in order to join a cgroup (see CgroupPlacement)

    def __init__(self, roots: tuple[str, ...], parent: str) -> None:
        self.roots = roots      # each hierarchy's mount point
        self.hierarchies = tuple(os.path.join(root, parent) for root in roots)

    def at(self, path: str) -> tuple[str, ...]:
        """The directory in every hierarchy of the cgroup at `path`, relative to the hierarchies' roots."""
        parts = cgroup_parts(path)
        return tuple(os.path.join(root, *parts) for root in self.roots)

    def paths(self, slot: str) -> tuple[str, ...]:
        """The slot's cgroup directory in every hierarchy."""
        return tuple(f"{h}/{SLOT_PREFIX}{slot}" for h in self.hierarchies)  # f-strings: this is the hot path

    @property
    @abstractmethod
    def controllers(self) -> frozenset[str]:
        """Controllers limits can be applied with."""

    @abstractmethod
    def prepare(self) -> None:
        """Create the pool parent in every hierarchy, ready to hold sandbox cgroups."""

    @abstractmethod
    def prepare_parent(self, path: str) -> None:
        """Create the cgroup at `path` and every level above it that is missing, each ready to hold processes and
        children, as prepare() does for the pool parent. Levels another manager (kubelet) made keep their settings:
        only what is unset and needed is written (v1: an empty cpuset; v2: controllers for the children)."""

    @abstractmethod
    def make_cgroup(self, path: str) -> None:
        """Create the cgroup at `path`, ready to hold processes, and the missing levels above it ready for children
        (prepare_parent)."""

    def init_cgroup(self, paths: tuple[str, ...]) -> None:
        """Set up a sandbox cgroup the pool has just made (before anyone can take it)."""

    @abstractmethod
    def apply(self, paths: tuple[str, ...], limits: CgroupLimits, fresh: bool = False) -> None:
        """Write the set fields of `limits`; fields that are None are left as they are.

        `fresh`: the cgroup is at its defaults (just made, or reset by a release), so a value equal
        to the default needs no write: each write is an open, a write and a close of a control file,
        and the acquire is that much shorter.
        """

    @abstractmethod
    def reset(self, paths: tuple[str, ...]) -> None:
        """Put every limit back to its default (unlimited, inherit the parent's cpuset)."""

    @abstractmethod
    def kill(self, paths: tuple[str, ...], timeout_s: float) -> None:
        """Kill every process in the cgroup and wait until it is empty (CgroupBusy otherwise)."""

    @abstractmethod
    def reclaim(self, paths: tuple[str, ...]) -> None:
        """Ask the kernel to reclaim memory still charged to the (empty) cgroup; best effort."""

    def remove(self, paths: tuple[str, ...], timeout_s: float) -> None:
        """Kill what is inside, reclaim the memory still charged (no page cache left to pin a dying cgroup), rmdir
        it in every hierarchy. One removed underneath in some hierarchy (by hand, or a teardown that crashed) has
        not all the driver's files: what is left is emptied with plain signals."""
        try:
            self.kill(paths, timeout_s)
            self.reclaim(paths)
        except (OSError, CgroupError):
            if all(os.path.isdir(p) for p in paths):
                raise
            files.kill_until_empty(paths, timeout_s)
        for path in paths:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise CgroupUnavailable(f"cannot remove cgroup {path}: {e}") from e
