"""The cgroup pool: pre-created sandbox cgroups handed out by an atomic rename (cgroup v1 and v2).

    pool = open_pool(PoolConfig(parent="rund", size=16))       # detects v1 / v2 / hybrid
    lease = pool.acquire(sandbox_id, limits_from_oci(spec["linux"]["resources"]))
    spawn(qemu_argv, log_fd=fd, pre_exec=lease.placement())    # the VMM starts inside the cgroup
    pool.fill()                                                # off the start path: top the pool up to `size`
    ...
    pool.release(lease)                                        # killed, reset, reclaimed, back in the pool
    pool.reconcile()                                           # after a crash: takes back dead owners' slots

The rename is of a record file in a registry directory (registry.py), not of the cgroup: cgroup v2
refuses rename(2) of cgroup directories (EPERM), and on v1 it takes the kernel-global cgroup_mutex.
A free slot is found through a map in shared memory (freemap.py), a hint that the rename confirms,
so an acquire does not probe the slots that are leased.

A pool owns the slots its registry records and nothing else under the parent: configurations with
another state_dir have pools of their own there (see pool.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from .detect import AUTO, select_driver
from .driver import CgroupDriver
from .errors import (
    CgroupBusy,
    CgroupError,
    CgroupUnavailable,
    ControllerMissing,
    InvalidCgroupPath,
    InvalidLimits,
    InvalidSandboxId,
    LeaseNotHeld,
    LimitRejected,
)
from .lease import CgroupLease, CgroupPlacement
from .limits import CgroupLimits, limits_from_oci
from .mounts import MOUNTINFO
from .pod_cgroup import PodCgroup, resolve_cgroups_path
from .pool import CgroupPool, PoolStatistics
from .registry import DEFAULT_STATE_DIR, Registry


@dataclass(frozen=True)
class PoolConfig:
    parent: str = "rund"  # created under the root of every hierarchy
    size: int = 16  # free cgroups fill() keeps ready; 0 = no pool (mkdir/rmdir per sandbox)
    version: str = AUTO  # "auto", "v1" or "v2"
    kill_timeout_s: float = 5.0
    mountinfo: str = MOUNTINFO
    state_dir: str = DEFAULT_STATE_DIR  # where the ownership records live (tmpfs on most hosts)


def open_pool(config: PoolConfig = PoolConfig()) -> CgroupPool:
    """Detect the cgroup layout, create the pool parent, and return the pool (not yet reconciled or filled)."""
    driver = select_driver(config.parent, config.version, config.mountinfo)
    driver.prepare()
    registry = Registry.for_pool(config.state_dir, driver.version, config.parent)
    registry.prepare()
    return CgroupPool(driver, registry, config.size, config.kill_timeout_s)


__all__ = [
    "CgroupBusy", "CgroupDriver", "CgroupError", "CgroupLease", "CgroupLimits", "CgroupPlacement", "CgroupPool",
    "CgroupUnavailable", "ControllerMissing", "InvalidCgroupPath", "InvalidLimits", "InvalidSandboxId", "LeaseNotHeld",
    "LimitRejected",
    "PodCgroup", "PoolConfig", "PoolStatistics", "limits_from_oci", "open_pool", "resolve_cgroups_path",
    "select_driver",
]
