"""The host's OCI spec (the bundle's config.json) as the guest agent should see it. Pure.

What refers to the host cannot cross into the VM: namespace paths (CRI's /proc/<pid>/ns/... or /var/run/netns/...),
bind mounts of host files and directories, hooks (host binaries), and the host cgroup path. The guest gets its own
namespaces and cgroups; a container's network is the sandbox VM's (the VM is the isolation boundary).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

from rund.errors import InvalidArgument

log = logging.getLogger("rund.runtime.spec")

# Kernel filesystems the guest mounts itself; everything else with a host source is dropped.
GUEST_FS_TYPES = frozenset({"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "securityfs",
                            "debugfs", "hugetlbfs"})


@dataclass(frozen=True)
class GuestSpec:
    spec: dict
    dropped_mounts: tuple[str, ...]     # destinations left out, for the log


def guest_spec(host_spec: dict) -> GuestSpec:
    if not isinstance(host_spec, dict):
        raise InvalidArgument("config.json must hold a JSON object")
    if not isinstance(host_spec.get("process"), dict):
        raise InvalidArgument("config.json: process is required")
    spec = copy.deepcopy(host_spec)
    spec.pop("hooks", None)
    kept, dropped = [], []
    for m in spec.get("mounts") or []:
        if not isinstance(m, dict):
            raise InvalidArgument("config.json: mounts must hold objects")
        if _is_host_mount(m):
            dropped.append(str(m.get("destination", "")))
        else:
            kept.append(m)
    spec["mounts"] = kept
    linux = spec.get("linux")
    if isinstance(linux, dict):
        linux.pop("cgroupsPath", None)
        linux.pop("seccomp", None)   # not enforced by the guest agent yet (the VM is the isolation boundary)
        namespaces = []
        for ns in linux.get("namespaces") or []:
            if isinstance(ns, dict) and ns.get("path"):
                # A path names a host namespace (a CRI pod's): in the guest, a fresh one of that type for now.
                ns = {k: v for k, v in ns.items() if k != "path"}
            namespaces.append(ns)
        if "namespaces" in linux:
            linux["namespaces"] = namespaces
    return GuestSpec(spec, tuple(dropped))


def _is_host_mount(m: dict) -> bool:
    kind = m.get("type") or ""
    options = m.get("options") or []
    if kind == "bind" or "bind" in options or "rbind" in options:
        return True
    return kind not in GUEST_FS_TYPES
