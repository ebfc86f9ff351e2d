"""cgroup v1: one hierarchy per controller mount (cpu, cpuacct, cpuset, memory, pids, blkio, freezer)."""

from __future__ import annotations

import errno
import logging
import os

from . import files
from .driver import CgroupDriver
from .errors import CgroupBusy, CgroupUnavailable, ControllerMissing, LimitRejected
from .limits import CgroupLimits
from .mounts import CgroupMount

log = logging.getLogger(__name__)

CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer")
REQUIRED = frozenset({"cpu", "memory"})
DEFAULT_PERIOD_US = 100_000
DEFAULT_SHARES = 1024


class V1Driver(CgroupDriver):
    version = 1
    join_file = "tasks"  # one thread, no global threadgroup lock; after fork that thread is the process

    def __init__(self, mounts: tuple[CgroupMount, ...], parent: str) -> None:
        roots: list[str] = []
        self._index: dict[str, int] = {}  # controller -> position in hierarchies
        for controller in CONTROLLERS:
            mount = next((m for m in mounts if m.version == 1 and controller in m.controllers), None)
            if mount is None:
                continue
            if mount.path not in roots:
                roots.append(mount.path)
            self._index[controller] = roots.index(mount.path)
        missing = REQUIRED - self._index.keys()
        if missing:
            raise CgroupUnavailable(f"cgroup v1 controllers not mounted: {sorted(missing)}")
        self._parent = parent.strip("/")
        self._balance_off = False  # set by prepare(), see init_cgroup()
        super().__init__(tuple(roots), self._parent)

    @property
    def controllers(self) -> frozenset[str]:
        return frozenset(self._index)

    def _dir(self, paths: tuple[str, ...], controller: str) -> str:
        index = self._index.get(controller)
        if index is None:
            raise ControllerMissing(controller)
        return paths[index]

    def prepare(self) -> None:
        level = self.prepare_parent(self._parent)
        if level is not None:
            files.write(os.path.join(level, "cgroup.clone_children"), "1")
            root = self.roots[self._index["cpuset"]]
            self._balance_off = files.read(os.path.join(root, "cpuset.sched_load_balance")).strip() == "1"

    def prepare_parent(self, path: str) -> str | None:
        """Returns the cpuset directory of `path` (None without a cpuset hierarchy)."""
        for directory in self.at(path):
            files.makedirs(directory)
        if "cpuset" not in self._index:
            return None
        # A new v1 cpuset starts with no cpus; fill each level from the one above.
        level = self.roots[self._index["cpuset"]]
        for part in path.strip("/").split("/"):
            level = self.fill_cpuset(os.path.join(level, part))
        return level

    def make_cgroup(self, path: str) -> None:
        self.prepare_parent(path)        # v1 has no rule against processes next to children

    @staticmethod
    def fill_cpuset(cpuset: str) -> str:
        """Give a v1 cpuset cgroup that has none its parent's cpus and memory nodes (no task can join it before)."""
        parent = os.path.dirname(cpuset)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not files.read(os.path.join(cpuset, name)).strip():
                files.write(os.path.join(cpuset, name), files.read(os.path.join(parent, name)).strip())
        return cpuset

    def init_cgroup(self, paths: tuple[str, ...]) -> None:
        if self._balance_off:
            # A v1 cpuset with sched_load_balance rebuilds the scheduler domains on every change of its
            # cpus, under the kernel-global cpuset_mutex that every cpuset write takes: concurrent
            # acquires slept on it. With the root cpuset balancing all cpus, a child's flag changes no
            # domain ("won't matter", cgroup-v1/cpusets.rst), so the rebuild is pure cost.
            files.write(f"{self._dir(paths, 'cpuset')}/cpuset.sched_load_balance", "0")

    def apply(self, paths: tuple[str, ...], limits: CgroupLimits, fresh: bool = False) -> None:
        writes: list[tuple[str, str, str]] = []  # (controller, file, value), in the order the kernel needs
        if limits.cpu_period_us is not None and not (fresh and limits.cpu_period_us == DEFAULT_PERIOD_US):
            writes.append(("cpu", "cpu.cfs_period_us", str(limits.cpu_period_us)))
        if limits.cpu_quota_us is not None:
            writes.append(("cpu", "cpu.cfs_quota_us", str(limits.cpu_quota_us)))
        if limits.cpu_shares is not None and not (fresh and limits.cpu_shares == DEFAULT_SHARES):
            writes.append(("cpu", "cpu.shares", str(limits.cpu_shares)))
        if limits.cpuset_cpus is not None:
            writes.append(("cpuset", "cpuset.cpus", limits.cpuset_cpus))
        if limits.cpuset_mems is not None:
            writes.append(("cpuset", "cpuset.mems", limits.cpuset_mems))
        if limits.memory_limit_bytes is not None:
            writes.append(("memory", "memory.limit_in_bytes", str(limits.memory_limit_bytes)))
        if limits.pids_limit is not None:
            writes.append(("pids", "pids.max", str(limits.pids_limit)))
        for controller, name, value in writes:
            files.write(f"{self._dir(paths, controller)}/{name}", value)

    def reset(self, paths: tuple[str, ...]) -> None:
        cpu = self._dir(paths, "cpu")
        files.write(f"{cpu}/cpu.cfs_quota_us", "-1")  # quota first: the old quota may not fit a new period
        files.write(f"{cpu}/cpu.cfs_period_us", str(DEFAULT_PERIOD_US))
        files.write(f"{cpu}/cpu.shares", str(DEFAULT_SHARES))
        if "cpuset" in self._index:
            cpuset = self._dir(paths, "cpuset")
            parent = os.path.dirname(cpuset)
            for name in ("cpuset.mems", "cpuset.cpus"):
                files.write(f"{cpuset}/{name}", files.read(f"{parent}/{name}").strip())
        files.write(f"{self._dir(paths, 'memory')}/memory.limit_in_bytes", "-1")
        if "pids" in self._index:
            files.write(f"{self._dir(paths, 'pids')}/pids.max", "max")

    def kill(self, paths: tuple[str, ...], timeout_s: float) -> None:
        if not files.procs_of(paths):
            return
        freezer = paths[self._index["freezer"]] if "freezer" in self._index else None
        if freezer is None:
            files.signal_all(files.procs_of(paths))
        else:
            # Frozen tasks cannot fork, so the set we kill is the whole set.
            state = os.path.join(freezer, "freezer.state")
            files.write(state, "FROZEN")
            try:
                try:
                    files.wait_until(lambda: files.read(state).strip() == "FROZEN", timeout_s, f"{freezer} to freeze")
                except CgroupBusy:
                    log.warning("cgroup %s did not freeze; killing what is there", freezer)
                files.signal_all(files.procs_of(paths))
            finally:
                files.write(state, "THAWED")  # killed tasks only die once thawed
        files.kill_until_empty(paths, timeout_s)  # a fork that escaped the first round (no freezer, or it timed out)

    def reclaim(self, paths: tuple[str, ...]) -> None:
        memory = self._dir(paths, "memory")
        if int(files.read(os.path.join(memory, "memory.usage_in_bytes"))) == 0:
            return  # force_empty drains per-cpu lists on every cpu (ms); skip it when nothing is charged
        try:
            files.write(os.path.join(memory, "memory.force_empty"), "0")
        except LimitRejected as e:
            # EBUSY: pages that could not be reclaimed stay charged; the slot is still usable.
            if e.errno not in (errno.EBUSY, errno.EINTR, errno.EAGAIN):
                raise
            log.debug("force_empty of %s left pages charged (errno %s)", paths, e.errno)

