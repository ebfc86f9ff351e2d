"""cgroup v2: one unified hierarchy; controllers are enabled for children through cgroup.subtree_control."""

from __future__ import annotations

import errno
import logging
import os

from . import files
from .driver import CgroupDriver
from .errors import CgroupUnavailable, ControllerMissing, LimitRejected
from .limits import CgroupLimits, shares_to_weight
from .mounts import CgroupMount

log = logging.getLogger(__name__)

CONTROLLERS = ("cpu", "cpuset", "memory", "pids", "io")
DEFAULT_PERIOD_US = 100_000
DEFAULT_WEIGHT = 100


class V2Driver(CgroupDriver):
    version = 2
    join_file = "cgroup.procs"  # cgroup.threads only works in threaded subtrees

    def __init__(self, mounts: tuple[CgroupMount, ...], parent: str) -> None:
        mount = next((m for m in mounts if m.version == 2), None)
        if mount is None:
            raise CgroupUnavailable("no cgroup2 hierarchy is mounted")
        self._root = mount.path
        self._parent = parent.strip("/")
        available = set(files.read(os.path.join(self._root, "cgroup.controllers")).split())
        # Controllers bound to a v1 hierarchy (hybrid hosts) are absent here and stay unavailable.
        self._controllers = frozenset(c for c in CONTROLLERS if c in available)
        super().__init__((self._root,), self._parent)

    @property
    def controllers(self) -> frozenset[str]:
        return self._controllers

    def prepare(self) -> None:
        self.prepare_parent(self._parent)

    def prepare_parent(self, path: str) -> None:
        """Controllers enabled from the root down to `path` itself, so its children get them."""
        directory = self.at(path)[0]
        files.makedirs(directory)
        level = self._root
        for part in [*path.strip("/").split("/"), None]:
            enabled = set(files.read(os.path.join(level, "cgroup.subtree_control")).split())
            wanted = [f"+{c}" for c in CONTROLLERS if c in self._controllers and c not in enabled]
            if wanted:
                files.write(os.path.join(level, "cgroup.subtree_control"), " ".join(wanted))
            if part is not None:
                level = os.path.join(level, part)

    def make_cgroup(self, path: str) -> None:
        # Not prepare_parent(path): a v2 cgroup that enables controllers for children may hold no process.
        parent = os.path.dirname(path.rstrip("/"))
        if parent.strip("/"):
            self.prepare_parent(parent)
        files.makedirs(self.at(path)[0])

    def _file(self, paths: tuple[str, ...], controller: str, name: str) -> str:
        if controller not in self._controllers:
            raise ControllerMissing(controller)
        return os.path.join(paths[0], name)

    def apply(self, paths: tuple[str, ...], limits: CgroupLimits, fresh: bool = False) -> None:
        if limits.cpu_quota_us is not None or limits.cpu_period_us is not None:
            quota = "max" if limits.cpu_quota_us is None else str(limits.cpu_quota_us)
            period = limits.cpu_period_us or DEFAULT_PERIOD_US
            if not (fresh and quota == "max" and period == DEFAULT_PERIOD_US):
                files.write(self._file(paths, "cpu", "cpu.max"), f"{quota} {period}")
        if limits.cpu_shares is not None:
            weight = shares_to_weight(limits.cpu_shares)
            if not (fresh and weight == DEFAULT_WEIGHT):
                files.write(self._file(paths, "cpu", "cpu.weight"), str(weight))
        if limits.cpuset_cpus is not None:
            files.write(self._file(paths, "cpuset", "cpuset.cpus"), limits.cpuset_cpus)
        if limits.cpuset_mems is not None:
            files.write(self._file(paths, "cpuset", "cpuset.mems"), limits.cpuset_mems)
        if limits.memory_limit_bytes is not None:
            files.write(self._file(paths, "memory", "memory.max"), str(limits.memory_limit_bytes))
        if limits.pids_limit is not None:
            files.write(self._file(paths, "pids", "pids.max"), str(limits.pids_limit))

    def reset(self, paths: tuple[str, ...]) -> None:
        cgroup = paths[0]
        if "cpu" in self._controllers:
            files.write(os.path.join(cgroup, "cpu.max"), f"max {DEFAULT_PERIOD_US}")
            files.write(os.path.join(cgroup, "cpu.weight"), str(DEFAULT_WEIGHT))
        if "cpuset" in self._controllers:
            # An empty v2 cpuset means "use the parent's".
            files.write(os.path.join(cgroup, "cpuset.cpus"), "\n")
            files.write(os.path.join(cgroup, "cpuset.mems"), "\n")
        if "memory" in self._controllers:
            files.write(os.path.join(cgroup, "memory.max"), "max")
        if "pids" in self._controllers:
            files.write(os.path.join(cgroup, "pids.max"), "max")

    def kill(self, paths: tuple[str, ...], timeout_s: float) -> None:
        cgroup = paths[0]
        if not files.procs(cgroup):
            return
        kill_file = os.path.join(cgroup, "cgroup.kill")
        if os.path.exists(kill_file):  # Linux >= 5.14 kills the whole subtree, forks included
            files.write(kill_file, "1")
        else:
            freeze = os.path.join(cgroup, "cgroup.freeze")
            files.write(freeze, "1")
            try:
                files.signal_all(files.procs(cgroup))
            finally:
                files.write(freeze, "0")
        files.kill_until_empty(paths, timeout_s)

    def reclaim(self, paths: tuple[str, ...]) -> None:
        cgroup = paths[0]
        reclaim = os.path.join(cgroup, "memory.reclaim")
        if "memory" not in self._controllers or not os.path.exists(reclaim):
            return
        charged = int(files.read(os.path.join(cgroup, "memory.current")))
        if charged == 0:
            return
        try:
            files.write(reclaim, str(charged))
        except LimitRejected as e:
            # EAGAIN: the kernel reclaimed less than asked; what is left stays charged.
            if e.errno not in (errno.EAGAIN, errno.EBUSY, errno.EINTR):
                raise
            log.debug("memory.reclaim of %s left pages charged (errno %s)", cgroup, e.errno)
