"""The host's OCI spec (the bundle's config.json) as the guest agent should see it.

What refers to the host cannot cross into the VM as such: namespace paths (CRI's /proc/<pid>/ns/... or
/var/run/netns/...: translated to the pod's namespaces in the guest, pod_namespaces.py), hooks (host binaries), the
host cgroup path, and bind mounts of host directories (volumes: bound into the pod's share, their source becomes
"rund-volume:<n>", rund/runtime/volumes.py; CRI's /dev/shm becomes the pod's tmpfs in the guest). Block devices are
hot-plugged disks (rund/runtime/block_devices.py). Bind mounts of small host files (CRI's /etc/hosts,
/etc/resolv.conf, /etc/hostname) are copied: their content travels with CreateContainer and the mount's source
becomes "rund-file:<n>". The guest gets its own namespaces and cgroups; a container's network is the sandbox VM's
(the VM is the isolation boundary). seccomp and the device allowlist pass through: the agent enforces them in the
guest, as runc does on the host.
"""
from __future__ import annotations

import copy
import logging
import os
import stat
from dataclasses import dataclass

from rund.agent import FileCopy
from rund.errors import InvalidArgument
from rund.runtime.block_devices import BlockRequest, block_requests
from rund.runtime.pod_namespaces import PodNamespaces, check_hostname, translate
from rund.runtime.volumes import PREFIX as VOLUME_PREFIX, Volume

log = logging.getLogger("rund.runtime.spec")

# Kernel filesystems the guest mounts itself; everything else with a host source is dropped.
GUEST_FS_TYPES = frozenset({"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "securityfs",
                            "debugfs", "hugetlbfs"})


FILE_PREFIX = "rund-file:"             # the agent's marker for a copied file (agent/container/files.py)
POD_SHM_PREFIX = "rund-pod-shm:"       # the agent's marker for the pod's /dev/shm (agent/container/pod_shm.py)
DEFAULT_SHM_BYTES = 64 << 20           # CRI's default, should the host's size be unreadable
POD_HOLDER = "io.rund.pod-holder"      # the agent's marker for a pod holder (agent/oci/spec.py)
MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class GuestSpec:
    spec: dict
    dropped_mounts: tuple[str, ...]     # destinations left out, for the log
    files: tuple[FileCopy, ...] = ()    # copied host files, by the index their mounts name
    volumes: tuple[Volume, ...] = ()    # host directories for the pod's share, by the index their mounts name
    block_devices: tuple[BlockRequest, ...] = ()    # host block devices to hot-plug (linux.devices of type b)


def guest_spec(host_spec: dict, pod: PodNamespaces = PodNamespaces(), pod_holder: bool = False) -> GuestSpec:
    """pod_holder: a CRI pod's sandbox container, which the agent turns into a holder of the pod's namespaces
    (agent/container/holder.py) instead of running its pause image."""
    if not isinstance(host_spec, dict):
        raise InvalidArgument("config.json must hold a JSON object")
    if not isinstance(host_spec.get("process"), dict):
        raise InvalidArgument("config.json: process is required")
    check_hostname(host_spec)
    spec = copy.deepcopy(host_spec)
    spec.pop("hooks", None)
    kept, dropped, files, volumes = [], [], [], []
    for m in spec.get("mounts") or []:
        if not isinstance(m, dict):
            raise InvalidArgument("config.json: mounts must hold objects")
        if not _is_host_mount(m):
            kept.append(m)
        elif (shm := _pod_shm(m)) is not None:
            kept.append(shm)
        elif (copied := _small_file(m)) is not None:
            kept.append({**m, "source": f"{FILE_PREFIX}{len(files)}"})
            files.append(copied)
        elif _is_bind(m):        # a volume: bound into the pod's share, the guest binds it from there
            volumes.append(Volume(len(volumes), m))
            kept.append({**m, "source": f"{VOLUME_PREFIX}{len(volumes) - 1}"})
        else:
            dropped.append(str(m.get("destination", "")))
    spec["mounts"] = kept
    linux = spec.get("linux")
    if isinstance(linux, dict):
        linux.pop("cgroupsPath", None)
        _check_memory_limit(linux.get("resources"))
        if "namespaces" in linux:
            linux["namespaces"] = translate(linux.get("namespaces") or [], pod)
        if _allows_every_device(linux.get("resources")) and linux.pop("devices", None):
            # A privileged spec lists every device node of the host: in a VM those numbers name nothing of the
            # host, and plugging each in is neither possible nor wanted (Kata's privileged_without_host_devices).
            log.info("privileged spec: the host's device list stays on the host; the guest's own devices are allowed")
    if pod_holder:
        annotations = spec.get("annotations") if isinstance(spec.get("annotations"), dict) else {}
        spec["annotations"] = {**annotations, POD_HOLDER: "true"}
    blocks = block_requests(spec)
    return GuestSpec(spec, tuple(dropped), tuple(files), volumes=tuple(volumes), block_devices=blocks)


def _allows_every_device(resources: object) -> bool:
    """A device rule that allows every device (`{"allow": true, "access": "rwm"}`: what --privileged writes)."""
    rules = resources.get("devices") if isinstance(resources, dict) else None
    for rule in rules if isinstance(rules, list) else []:
        if (isinstance(rule, dict) and rule.get("allow") is True and rule.get("type", "a") in ("a", None)
                and rule.get("major", -1) in (-1, None) and rule.get("minor", -1) in (-1, None)
                and set(rule.get("access") or "rwm") >= set("rwm")):
            return True
    return False


# Below this a container's init is OOM-killed while it is being set up (docker refuses under 6 MB for the same reason).
MIN_MEMORY_LIMIT = 6 << 20


def _check_memory_limit(resources: object) -> None:
    memory = resources.get("memory") if isinstance(resources, dict) else None
    limit = memory.get("limit") if isinstance(memory, dict) else None
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < MIN_MEMORY_LIMIT:
        raise InvalidArgument(f"linux.resources.memory.limit {limit} is below the minimum of "
                              f"{MIN_MEMORY_LIMIT >> 20} MiB a container needs to start")


def _pod_shm(m: dict) -> dict | None:
    """CRI's /dev/shm (a bind of the host tmpfs it made for the pod) becomes the pod's tmpfs in the guest, of the
    same size, shared by the pod's containers."""
    source = m.get("source")
    if m.get("destination") != "/dev/shm" or not isinstance(source, str) or not os.path.isdir(source):
        return None
    try:
        st = os.statvfs(source)
        size = st.f_blocks * st.f_frsize
    except OSError:
        size = 0
    return {**m, "type": "bind", "source": f"{POD_SHM_PREFIX}{size or DEFAULT_SHM_BYTES}"}


def _small_file(m: dict) -> FileCopy | None:
    """The content of a bind mount's source when it is a small regular file (read now: a snapshot)."""
    source = m.get("source")
    if not isinstance(source, str) or not (m.get("type") == "bind" or {"bind", "rbind"} & set(m.get("options") or [])):
        return None
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            return None
        return FileCopy(os.read(fd, MAX_FILE_BYTES + 1)[:MAX_FILE_BYTES], stat.S_IMODE(st.st_mode))
    finally:
        os.close(fd)


def _is_bind(m: dict) -> bool:
    return m.get("type") == "bind" or bool({"bind", "rbind"} & set(m.get("options") or []))


def _is_host_mount(m: dict) -> bool:
    kind = m.get("type") or ""
    options = m.get("options") or []
    if kind == "bind" or "bind" in options or "rbind" in options:
        return True
    return kind not in GUEST_FS_TYPES
