"""rund's configuration turned into the resource layer's own configs (one place, for the shim and `delete`)."""
from __future__ import annotations

from pathlib import Path

from rund.config import Config
from rund.resources.cgroups import PoolConfig
from rund.resources.rootfs import RootfsCache


def pool_config(cfg: Config) -> PoolConfig:
    return PoolConfig(parent=cfg.cgroups.parent, size=cfg.cgroups.pool_size if cfg.cgroups.pool else 0,
                      state_dir=str(Path(cfg.state_dir) / "cgroup-pool"))


def rootfs_cache(cfg: Config) -> RootfsCache:
    return RootfsCache(cfg.rootfs.cache_dir, slot_bytes=cfg.rootfs.slot_mib << 20,
                       max_bytes=cfg.rootfs.cache_max_mib << 20)
