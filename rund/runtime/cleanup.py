"""Release what a dead shim left behind, from its records alone (the `delete` action's work).

Scoped to one container: its rootfs pin and its volumes' binds are released and its record removed. The VM, its
cgroup and the state dir (its volume share unmounted first) go only when that container is the sandbox itself or the
last one recorded. A sandbox whose shim is alive (it holds
the state dir's lock) is left to that shim.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rund import ids
from rund.errors import InvalidArgument, RundError
from rund.runtime.state import BUNDLE_POINTER, CorruptRecord, SandboxDir, process_start_ticks

if TYPE_CHECKING:
    from rund.config import Config

# containerd waits for `delete` after every normal exit too, when there is nothing left to clean: the config and
# resource modules are imported only once there is a sandbox dir (see _config and _release).

log = logging.getLogger("rund.cleanup")

CONCURRENT_DELETE_WAIT = 15.0      # a concurrent `delete` kills the VM (5 s at most) and removes its cgroup


@dataclass(frozen=True)
class Cleaned:
    pid: int                 # the VMM pid containerd knew as the task's pid (0 if none)


def cleanup_container(bundle: str, container_id: str) -> Cleaned:
    """InvalidArgument for a bad container id; a pointer that does not name a sandbox dir is nothing to clean."""
    ids.validate(container_id, "container id")
    try:
        pointer = json.loads((Path(bundle) / BUNDLE_POINTER).read_text())
    except FileNotFoundError:
        return Cleaned(0)            # never created, or already cleaned up
    except ValueError as e:
        log.warning("%s: unreadable (%s); nothing to clean", Path(bundle) / BUNDLE_POINTER, e)
        return Cleaned(0)
    if not isinstance(pointer, dict) or not isinstance(pointer.get("sandbox_dir"), str) \
            or not isinstance(pointer.get("config_path") or "", str):
        log.warning("%s: unreadable (not a sandbox pointer); nothing to clean", Path(bundle) / BUNDLE_POINTER)
        return Cleaned(0)
    try:
        state_dir, namespace, sandbox_id = _sandbox_dir_parts(pointer, container_id)
    except InvalidArgument as e:
        log.warning("%s: %s; nothing to clean", Path(bundle) / BUNDLE_POINTER, e)
        return Cleaned(0)
    sdir = SandboxDir(state_dir, namespace, sandbox_id)
    if not sdir.path.exists():
        return Cleaned(0)
    cfg = _config(pointer.get("config_path") or None)
    if os.path.abspath(cfg.state_dir) != state_dir and not _holds_its_record(sdir):
        # only ever remove a rund sandbox dir: in the configured state dir, or one whose record names it
        log.warning("%s is not in the state dir %s of its configuration; nothing to clean", sdir.path, cfg.state_dir)
        return Cleaned(0)
    if not _lock_for_cleanup(sdir):
        log.info("sandbox %s is served by a live shim: leaving container %s to it", sdir.sandbox_id, container_id)
        return Cleaned(0)
    if not sdir.path.exists():       # another `delete` (of the sandbox) released it all while this one waited
        sdir.unlock()
        return Cleaned(0)
    return _release(sdir, container_id, cfg)


def _lock_for_cleanup(sdir: SandboxDir) -> bool:
    """The sandbox's lock, unless its shim is alive. After a shim crash containerd runs `delete` for the sandbox and
    each of its containers at once: a lock held while the recorded shim is gone is another `delete`'s, waited for."""
    if sdir.lock():
        return True
    try:
        record = sdir.read_sandbox()
    except CorruptRecord:
        record = None
    if record is not None and record.shim_pid and process_start_ticks(record.shim_pid) is not None:
        return False
    deadline = time.monotonic() + CONCURRENT_DELETE_WAIT
    while time.monotonic() < deadline:
        time.sleep(0.02)
        if sdir.lock():
            return True
    return False


def _sandbox_dir_parts(pointer: dict, container_id: str) -> tuple[str, str, str]:
    """(state dir, namespace, sandbox id) of the pointer's sandbox_dir, every part checked before it names a path."""
    raw = pointer["sandbox_dir"]
    if not os.path.isabs(raw) or os.path.normpath(raw) != raw:
        raise InvalidArgument(f"sandbox_dir {raw!r} is not an absolute, normalized path")
    state_dir, namespace, sandbox_id = os.path.dirname(os.path.dirname(raw)), *raw.split("/")[-2:]
    ids.validate(namespace, "namespace")
    ids.validate(sandbox_id, "sandbox id")
    if pointer.get("sandbox_id", sandbox_id) != sandbox_id:
        raise InvalidArgument(f"sandbox_id {pointer.get('sandbox_id')!r} differs from its sandbox_dir {raw!r}")
    if pointer.get("container_id", container_id) != container_id:
        raise InvalidArgument(f"container_id {pointer.get('container_id')!r} is not this bundle's {container_id!r}")
    return state_dir, namespace, sandbox_id


def _holds_its_record(sdir: SandboxDir) -> bool:
    """True if the dir's sandbox.json names this namespace and sandbox (its config file changed since, say)."""
    try:
        record = sdir.read_sandbox()
    except CorruptRecord:
        return False
    return record is not None and (record.namespace, record.sandbox_id) == (sdir.namespace, sdir.sandbox_id)


def _config(config_path: str | None) -> Config:
    from rund import config
    try:
        return config.load(config_path)
    except RundError as e:   # the runtime class's file changed or went away since: still release what we can
        log.warning("%s; cleaning up with the default configuration", e)
        return config.load()


def _release(sdir: SandboxDir, container_id: str, cfg: Config) -> Cleaned:
    """With the sandbox's lock held: release the container's pins, and the sandbox's VM and cgroup if it goes."""
    from rund.resources.cgroups import CgroupError
    from rund.resources.rootfs import RootfsError
    from rund.runtime.resource_config import rootfs_cache
    from rund.runtime.vmm_cgroup import release_recorded
    from rund.runtime.volumes import unbind_container
    try:
        record = sdir.read_sandbox()
    except CorruptRecord as e:
        log.warning("%s", e)
        record = None
    pid = record.qemu_pid if record else 0
    cache = rootfs_cache(cfg)

    def release_pins(cid: str) -> None:
        try:
            crecord = sdir.read_container(cid)
            if crecord is not None and crecord.rootfs_owner:
                cache.release_owner(crecord.rootfs_owner)
        except (CorruptRecord, RootfsError) as e:
            log.warning("container %s: releasing its rootfs: %s", cid, e)

    release_pins(container_id)
    unbind_container(sdir.vm_paths().share, container_id)        # the dead shim's binds of its volumes
    sdir.remove_container(container_id)
    if container_id != sdir.sandbox_id and sdir.container_ids():
        sdir.unlock()
        return Cleaned(pid)
    for other in sdir.container_ids():      # the sandbox goes: so do its other containers' pins
        release_pins(other)
    if record is not None and record.qemu_pid:
        _kill_vmm(record.qemu_pid, record.qemu_start_ticks)
    if record is not None and (record.cgroup_leased or record.cgroup_path):
        try:
            release_recorded(cfg, record.cgroup_leased, record.cgroup_path)
        except CgroupError as e:
            log.warning("sandbox %s: reclaiming its cgroup: %s", sdir.sandbox_id, e)
    sdir.remove()
    return Cleaned(pid)


def _kill_vmm(pid: int, start_ticks: int) -> None:
    ticks = process_start_ticks(pid)
    if ticks is None or (start_ticks and ticks != start_ticks):
        return                      # gone, or the pid now names another process
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while process_start_ticks(pid) == ticks and time.monotonic() < deadline:
        time.sleep(0.01)
