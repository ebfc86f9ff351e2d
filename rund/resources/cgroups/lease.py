"""A sandbox's hold on a pool cgroup, and the hook that starts the VMM inside it."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CgroupPlacement:
    """Moves a process into the sandbox cgroup in every hierarchy.

    Plain data plus a callable, so the hypervisor layer can use it without importing the pool:
    `subprocess.Popen(argv, preexec_fn=placement)` puts the child in the cgroup after fork and before
    exec, so every page the VMM touches is charged to the sandbox from the first one on.
    """

    procs_paths: tuple[str, ...]

    def __call__(self) -> None:
        self.move(os.getpid())

    def move(self, pid: int) -> None:
        data = str(pid).encode()
        for path in self.procs_paths:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)


@dataclass(frozen=True)
class CgroupLease:
    """One pool cgroup held for one sandbox until released."""

    sandbox_id: str
    slot: str
    record: str  # the registry record that proves the hold
    paths: tuple[str, ...]  # the cgroup directory in each hierarchy
    fallback: bool  # created on demand because the pool was empty

    @property
    def procs_paths(self) -> tuple[str, ...]:
        return tuple(os.path.join(p, "cgroup.procs") for p in self.paths)

    def placement(self) -> CgroupPlacement:
        return CgroupPlacement(self.procs_paths)
