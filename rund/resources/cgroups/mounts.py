"""Which cgroup hierarchies are mounted where, from /proc/self/mountinfo (parsing does no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"

# Kernel controller names that can appear in a v1 mount's super options.
V1_CONTROLLERS = frozenset(
    {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "blkio", "perf_event",
     "net_prio", "hugetlb", "pids", "rdma", "misc"}
)


@dataclass(frozen=True)
class CgroupMount:
    """One mounted hierarchy: v1 with its controllers, or the v2 unified one (controllers read later)."""

    path: str
    version: int  # 1 or 2
    controllers: frozenset[str]  # v1 only; empty for v2


def parse_mountinfo(text: str) -> tuple[CgroupMount, ...]:
    """Every cgroup and cgroup2 mount in a mountinfo text, first mount of each hierarchy only."""
    mounts: list[CgroupMount] = []
    seen: set[tuple[int, frozenset[str]]] = set()
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fstype, _source, super_opts = (post.split(" ") + ["", ""])[:3]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        fields = pre.split(" ")
        path = _unescape(fields[4])
        if fstype == "cgroup2":
            mount = CgroupMount(path, 2, frozenset())
        else:
            controllers = frozenset(o for o in super_opts.split(",") if o in V1_CONTROLLERS)
            if not controllers:
                continue  # a named hierarchy such as name=systemd: no resource control
            mount = CgroupMount(path, 1, controllers)
        key = (mount.version, mount.controllers)
        if key not in seen:  # the same hierarchy can be bind-mounted twice
            seen.add(key)
            mounts.append(mount)
    return tuple(mounts)


def read_mounts(mountinfo: str = MOUNTINFO) -> tuple[CgroupMount, ...]:
    with open(mountinfo) as f:
        return parse_mountinfo(f.read())


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
