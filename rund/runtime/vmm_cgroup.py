"""The VMM's host cgroup: a pool slot, or the cgroup a Kubernetes pod's spec names.

A CRI pod's sandbox container carries linux.cgroupsPath, a child of the pod cgroup kubelet made and limits. There
the VMM is counted where Kubernetes counts the pod (containerd's PodSandboxStats reads the pod's cgroup_parent, the
kubelet's eviction and cadvisor read the same tree) and bounded by the pod's limits plus the RuntimeClass overhead.
Every other sandbox (ctr, a CRI pod with [cgroups] pod_cgroup = false) takes a slot of rund's pre-created pool.
Either way the cgroup also gets rund's own bound: the VM's memory plus the VMM's overhead (vm_memory.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from rund.config import Config
from rund.resources.cgroups import (CgroupLease, CgroupLimits, CgroupPlacement, CgroupPool, PodCgroup, open_pool,
                                    resolve_cgroups_path, select_driver)
from rund.runtime.resource_config import pool_config

log = logging.getLogger("rund.runtime.cgroup")


@dataclass
class PooledCgroup:
    pool: CgroupPool
    lease: CgroupLease

    @property
    def where(self) -> str:
        return f"pool slot {self.lease.slot}"

    def placement(self) -> CgroupPlacement:
        return self.lease.placement()

    def update(self, limits: CgroupLimits) -> None:
        self.pool.update(self.lease, limits)

    def release(self) -> None:
        self.pool.release(self.lease)

    def refill(self) -> None:
        """Top the pool up to its size when it has fallen below half (off the start path)."""
        if self.pool.size and self.pool.statistics().free < self.pool.size // 2:
            log.info("cgroup pool: created %d free cgroups", self.pool.fill())


@dataclass
class PlacedCgroup:
    cgroup: PodCgroup

    @property
    def where(self) -> str:
        return f"cgroup {self.cgroup.path}"

    def placement(self) -> CgroupPlacement:
        return self.cgroup.placement()

    def update(self, limits: CgroupLimits) -> None:
        self.cgroup.update(limits)

    def release(self) -> None:
        self.cgroup.remove()

    def refill(self) -> None:
        pass


VmmCgroup = PooledCgroup | PlacedCgroup


def pod_cgroup_path(cfg: Config, cgroups_path: str) -> str:
    """Where a CRI pod's VMM goes ("" for a pool slot): the sandbox spec's cgroupsPath, resolved."""
    if not cfg.cgroups.pod_cgroup or not cgroups_path:
        return ""
    return resolve_cgroups_path(cgroups_path)


def acquire(cfg: Config, sandbox_id: str, placed_path: str, limits: CgroupLimits,
            record: Callable[[], None]) -> VmmCgroup:
    """The VMM's cgroup, with `limits` applied. `record` runs first: it writes down what is about to be taken, so
    `delete` after a crash finds it (release_recorded)."""
    if placed_path:
        driver = select_driver(cfg.cgroups.parent)
        record()
        return PlacedCgroup(PodCgroup.create(driver, placed_path, limits))
    pool = open_pool(pool_config(cfg))
    record()
    return PooledCgroup(pool, pool.acquire(sandbox_id, limits))


def release_recorded(cfg: Config, leased: bool, placed_path: str) -> None:
    """After a shim crash: remove the placed cgroup a record names, or take the dead shim's pool lease back."""
    if placed_path:
        PodCgroup(select_driver(cfg.cgroups.parent), placed_path).remove()
    elif leased:
        open_pool(pool_config(cfg)).reconcile()
