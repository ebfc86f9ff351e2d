"""What a shim must leave on disk so that `delete` can release everything after the shim died.

    <state_dir>/<namespace>/<sandbox_id>/
        sandbox.json            the VM (QEMU pid + start time, clone or cold), the shim (pid), whether a cgroup lease
                                is held
        containers/<id>.json    one per container: its bundle and its rootfs pin owner
        shim.lock               flock held by the live shim for its whole life (delete leaves a live sandbox alone);
                                made once, never written: its mtime is when the sandbox was claimed (`rund ps`)
        guest-memory.json       the guest's memory in use per container, as of the last Stats (telemetry.py)
        vm/, console.log, qemu.log
        volumes/                the pod's volume share (rund/runtime/volumes.py): unmounted before the dir goes

Every record is written to a temp file, fsynced and renamed into place: a crash leaves the old or the new record.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from rund.atomicfile import write_atomic
from rund.errors import ResourceExhausted, RundError, Unavailable
from rund.procfs import state_and_start
from rund.runtime import telemetry

FORMAT = 1
BUNDLE_POINTER = "rund.json"    # in each bundle: where its container's state lives (read by `delete`)


@dataclass(frozen=True)
class SandboxRecord:
    namespace: str
    sandbox_id: str
    shim_pid: int
    qemu_pid: int = 0
    qemu_start_ticks: int = 0       # /proc/<pid>/stat starttime: a reused pid is not our QEMU
    cgroup_leased: bool = False
    cgroup_path: str = ""           # the VMM's cgroup when a CRI pod's spec placed it (not a pool slot)
    format: int = FORMAT
    vm: str = ""                    # how the VM came: "clone" (of a template), "spare" (a clone made ahead of time,
                                    # rund/runtime/spares.py) or "cold" (booted); "" not yet/unknown


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    bundle: str
    rootfs_owner: str = ""


def write_json_atomic(path: Path, doc: dict) -> None:
    try:
        write_atomic(path, json.dumps(doc).encode(), mode=0o600)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceExhausted(f"cannot record {path}: {e.strerror}") from None
        raise Unavailable(f"cannot record {path}: {e.strerror or e}") from None


def _read(path: Path, cls):
    try:
        doc = json.loads(path.read_text())
        return cls(**doc)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as e:   # a record from another format: treat as absent, but say so
        raise CorruptRecord(f"{path}: {e}") from None


class CorruptRecord(RundError):
    """A record that does not parse as this format's (left by another version, or damaged)."""


class SandboxDir:
    def __init__(self, state_dir: str | Path, namespace: str, sandbox_id: str):
        self.path = Path(state_dir) / namespace / sandbox_id
        self.namespace, self.sandbox_id = namespace, sandbox_id
        self._lock_fd = -1

    @property
    def containers(self) -> Path:
        return self.path / "containers"

    @property
    def spare_vm(self) -> Path:
        """Where a spare VM's directory goes when the sandbox takes one (rund/runtime/spares.py)."""
        return self.path / "spare-vm"

    def vm_paths(self):
        """The VM's files: in the sandbox's dir, or in its spare VM's directory there."""
        from rund.hypervisor.paths import VMPaths      # here: `delete` without a sandbox dir stays light
        return VMPaths(self.spare_vm if self.spare_vm.is_dir() else self.path)

    def create(self) -> None:
        self.containers.mkdir(parents=True, exist_ok=True, mode=0o700)
        telemetry.bind(self.path.parent.parent, self.namespace, self.sandbox_id)   # this shim's metrics records

    def lock(self) -> bool:
        """Take the shim's lifetime lock (non-blocking); False if another live process holds it."""
        fd = os.open(self.path / "shim.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def write_sandbox(self, record: SandboxRecord) -> None:
        write_json_atomic(self.path / "sandbox.json", asdict(record))

    def read_sandbox(self) -> SandboxRecord | None:
        return _read(self.path / "sandbox.json", SandboxRecord)

    def write_container(self, record: ContainerRecord) -> None:
        write_json_atomic(self.containers / f"{record.id}.json", asdict(record))

    def read_container(self, container_id: str) -> ContainerRecord | None:
        return _read(self.containers / f"{container_id}.json", ContainerRecord)

    def remove_container(self, container_id: str) -> None:
        (self.containers / f"{container_id}.json").unlink(missing_ok=True)

    def container_ids(self) -> list[str]:
        try:
            return sorted(p.stem for p in self.containers.glob("*.json"))
        except FileNotFoundError:
            return []

    def remove(self) -> None:
        from rund.runtime.volumes import teardown
        if teardown(self.vm_paths().share):           # never rmtree through a volume's bind mount
            shutil.rmtree(self.path, ignore_errors=True)
        self.unlock()          # after: a new shim of the same id must not see its fresh dir removed
        try:
            self.path.parent.rmdir()   # the namespace dir, once empty
        except OSError:
            pass


def process_start_ticks(pid: int) -> int | None:
    """starttime from /proc/<pid>/stat, or None if there is no such (live) process."""
    stat = state_and_start(pid)
    if stat is None or stat[0] == b"Z":
        return None
    return stat[1]
