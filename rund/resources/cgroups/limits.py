"""The limits a sandbox cgroup carries, as a domain value, and their translation from OCI."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import InvalidLimits

# Kernel bounds (kernel/sched/core.c, cgroup v1 cpu controller).
MIN_CFS_US = 1_000
MAX_CFS_PERIOD_US = 1_000_000
MIN_SHARES = 2
MAX_SHARES = 262_144

# "0-3,5,7-8": the cpuset list format.
_CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


@dataclass(frozen=True)
class CgroupLimits:
    """What to enforce on a sandbox. None means "the default" (unlimited / inherit from the parent)."""

    cpu_quota_us: int | None = None
    cpu_period_us: int | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    memory_limit_bytes: int | None = None
    pids_limit: int | None = None

    def __post_init__(self) -> None:
        if self.cpu_quota_us is not None and self.cpu_quota_us < MIN_CFS_US:
            raise InvalidLimits(f"cpu quota {self.cpu_quota_us} us is below {MIN_CFS_US} us")
        if self.cpu_period_us is not None and not MIN_CFS_US <= self.cpu_period_us <= MAX_CFS_PERIOD_US:
            raise InvalidLimits(f"cpu period {self.cpu_period_us} us is outside [{MIN_CFS_US}, {MAX_CFS_PERIOD_US}]")
        if self.cpu_shares is not None and not MIN_SHARES <= self.cpu_shares <= MAX_SHARES:
            raise InvalidLimits(f"cpu shares {self.cpu_shares} outside [{MIN_SHARES}, {MAX_SHARES}]")
        for name in ("cpuset_cpus", "cpuset_mems"):
            value = getattr(self, name)
            if value is not None and not _CPU_LIST.match(value):
                raise InvalidLimits(f"{name} {value!r} is not a cpu list like '0-3,5'")
        if self.memory_limit_bytes is not None and self.memory_limit_bytes <= 0:
            raise InvalidLimits(f"memory limit {self.memory_limit_bytes} must be positive")
        if self.pids_limit is not None and self.pids_limit <= 0:
            raise InvalidLimits(f"pids limit {self.pids_limit} must be positive")


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares [2, 262144] to v2 cpu.weight [1, 10000], the mapping runc and crun use."""
    return 1 + ((shares - MIN_SHARES) * 9999) // (MAX_SHARES - MIN_SHARES)


def limits_from_oci(resources: Mapping[str, Any] | None) -> CgroupLimits:
    """Build limits from an OCI runtime-spec `linux.resources` object (JSON-decoded).

    OCI uses 0 and -1 for "not set" / "unlimited" in several fields; both become None here.
    """
    resources = resources or {}
    cpu = resources.get("cpu") or {}
    memory = resources.get("memory") or {}
    pids = resources.get("pids") or {}
    return CgroupLimits(
        cpu_quota_us=_positive(cpu.get("quota")),
        cpu_period_us=_positive(cpu.get("period")),
        cpu_shares=_positive(cpu.get("shares")),
        cpuset_cpus=cpu.get("cpus") or None,
        cpuset_mems=cpu.get("mems") or None,
        memory_limit_bytes=_positive(memory.get("limit")),
        pids_limit=_positive(pids.get("limit")),
    )


def _positive(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidLimits(f"expected an integer, got {value!r}")
    return value if value > 0 else None
