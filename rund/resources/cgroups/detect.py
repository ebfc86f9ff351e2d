"""Pick the cgroup driver for this host from its mount table."""

from __future__ import annotations

import os

from . import files
from .driver import CgroupDriver
from .errors import CgroupUnavailable
from .mounts import MOUNTINFO, read_mounts
from .v1 import V1Driver
from .v2 import V2Driver

AUTO, V1, V2 = "auto", "v1", "v2"


def select_driver(parent: str, version: str = AUTO, mountinfo: str = MOUNTINFO) -> CgroupDriver:
    """v2 when the unified hierarchy holds cpu and memory (a pure v2 host), else v1 (including hybrid hosts)."""
    mounts = read_mounts(mountinfo)
    if version == V1:
        return V1Driver(mounts, parent)
    if version == V2:
        return V2Driver(mounts, parent)
    if version != AUTO:
        raise CgroupUnavailable(f"unknown cgroup version {version!r} (want auto, v1 or v2)")
    unified = next((m for m in mounts if m.version == 2), None)
    if unified is not None:
        controllers = set(files.read(os.path.join(unified.path, "cgroup.controllers")).split())
        if {"cpu", "memory"} <= controllers:
            return V2Driver(mounts, parent)
    if any(m.version == 1 for m in mounts):
        return V1Driver(mounts, parent)
    raise CgroupUnavailable("neither a usable cgroup v1 nor v2 hierarchy is mounted")
