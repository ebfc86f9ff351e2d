"""Every sandbox of a state dir, as its records and /proc tell it: what `rund ps` prints and the metrics report.

Read-only and shim-free: a sandbox whose shim crashed is shown from its records (its shim dead); a record that
does not parse is shown as unreadable rather than hidden.

State of a sandbox, from two facts: is its shim alive (someone holds shim.lock), is its VMM alive (the recorded
QEMU pid with the recorded start time)?
    running     shim and VMM alive
    creating    shim alive, no VMM recorded yet (its first container is being created)
    vm-dead     shim alive, its VMM gone (the shim reports its processes exited; delete follows)
    shim-dead   shim gone, its VMM still running (containerd's cleanup, `delete`, will stop it)
    dead        shim and VMM gone, records left for containerd's cleanup
    unreadable  sandbox.json does not parse (another version's, or damaged)
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rund import ids
from rund.errors import RundError
from rund.ops import procstat
from rund.runtime import telemetry
from rund.runtime.state import SandboxDir, process_start_ticks

STATES = ("running", "creating", "vm-dead", "shim-dead", "dead", "unreadable")


@dataclass(frozen=True)
class SandboxView:
    namespace: str
    id: str
    state: str
    containers: tuple[str, ...]
    created_unix: float | None        # when the shim claimed the sandbox
    vm: str                           # "clone", "spare", "cold" or "" (no VM yet, or not known)
    shim_pid: int
    shim_alive: bool
    vmm_pid: int
    vmm_alive: bool
    vmm_pss_bytes: int | None         # host memory: PSS of QEMU (its share of the template's RAM included)
    shim_pss_bytes: int | None
    vmm_cpu_seconds: float | None
    shim_cpu_seconds: float | None
    guest_memory_bytes: int | None    # the containers' memory in use in the guest, as of the last Stats
    error: str = ""
    shim_sandboxes: int = 1           # sandboxes its (live) shim serves: its PSS and CPU are shared out among them

    @property
    def pss_bytes(self) -> int | None:
        parts = [p for p in (self.vmm_pss_bytes, self.shim_pss_bytes) if p is not None]
        return sum(parts) if parts else None

    @property
    def cpu_seconds(self) -> float | None:
        parts = [c for c in (self.vmm_cpu_seconds, self.shim_cpu_seconds) if c is not None]
        return sum(parts) if parts else None

    def age_seconds(self, now: float | None = None) -> float | None:
        return None if self.created_unix is None else max(0.0, (now or time.time()) - self.created_unix)

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["containers"] = list(self.containers)
        doc["pss_bytes"], doc["cpu_seconds"] = self.pss_bytes, self.cpu_seconds
        doc["age_seconds"] = self.age_seconds()
        return doc


def sandbox_dirs(state_dir: str | Path) -> list[SandboxDir]:
    """<state_dir>/<namespace>/<id>/ that hold a sandbox.json (the state dir also holds the cgroup pool's records,
    placeholders and the metrics spool: none of them is a namespace of sandboxes)."""
    found = []
    for ns in _subdirs(str(state_dir)):
        for sid in _subdirs(os.path.join(state_dir, ns)):
            if os.path.exists(os.path.join(state_dir, ns, sid, "sandbox.json")):
                found.append(SandboxDir(state_dir, ns, sid))
    return found


def _subdirs(path: str) -> list[str]:
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if _is_id(e.name) and e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _is_id(name: str) -> bool:
    try:
        ids.validate(name, "name")
        return True
    except RundError:
        return False


def _guest_memory(sdir: SandboxDir, containers: tuple[str, ...]) -> int | None:
    try:
        doc = json.loads((sdir.path / telemetry.GUEST_MEMORY).read_text())
        per = doc["containers"]
        known = [int(per[c]) for c in containers if c in per]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sum(known) if known else None


def _created(sdir: SandboxDir) -> float | None:
    for name in ("shim.lock", "sandbox.json"):
        try:
            return (sdir.path / name).stat().st_mtime
        except OSError:
            continue
    return None


def _shim_alive(sdir: SandboxDir, record_pid: int, locked: set | None) -> bool:
    if locked is None:            # /proc/locks unreadable: fall back on the pid (may be reused after a crash)
        return record_pid > 0 and process_start_ticks(record_pid) is not None
    try:
        st = os.stat(sdir.path / "shim.lock")
    except OSError:
        return False
    return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in locked


def _vm_of(recorded: str, vmm_pid: int, vmm_alive: bool) -> str:
    if recorded:
        return recorded
    if vmm_alive:   # records of versions that did not say: a clone's QEMU was started with -incoming defer
        return "clone" if b"-incoming" in procstat.cmdline(vmm_pid) else "cold"
    return ""


def view(sdir: SandboxDir, locked: set | None, pss=procstat.pss_bytes) -> SandboxView:
    containers = tuple(sdir.container_ids())
    created = _created(sdir)
    try:
        record = sdir.read_sandbox()
    except RundError as e:
        record, error = None, str(e)
    else:
        error = "" if record is not None else "sandbox.json vanished"
    if record is None:
        return SandboxView(sdir.namespace, sdir.sandbox_id, "unreadable", containers, created, "", 0, False, 0,
                           False, None, None, None, None, None, error)
    shim_alive = _shim_alive(sdir, record.shim_pid, locked)
    vmm_pid = record.qemu_pid
    vmm_alive = vmm_pid > 0 and process_start_ticks(vmm_pid) == record.qemu_start_ticks
    if shim_alive:
        state = "running" if vmm_alive else ("vm-dead" if vmm_pid else "creating")
    else:
        state = "shim-dead" if vmm_alive else "dead"
    return SandboxView(
        namespace=sdir.namespace, id=sdir.sandbox_id, state=state, containers=containers, created_unix=created,
        vm=_vm_of(getattr(record, "vm", ""), vmm_pid, vmm_alive), shim_pid=record.shim_pid, shim_alive=shim_alive,
        vmm_pid=vmm_pid, vmm_alive=vmm_alive,
        vmm_pss_bytes=pss(vmm_pid) if vmm_alive else None,
        shim_pss_bytes=pss(record.shim_pid) if shim_alive else None,
        vmm_cpu_seconds=procstat.cpu_seconds(vmm_pid) if vmm_alive else None,
        shim_cpu_seconds=procstat.cpu_seconds(record.shim_pid) if shim_alive else None,
        guest_memory_bytes=_guest_memory(sdir, containers) if shim_alive else None)


def scan(state_dir: str | Path, pss=procstat.pss_bytes) -> list[SandboxView]:
    """`pss(pid)`: how host memory is read (the metrics daemon passes a cache: PSS walks page tables)."""
    locked = procstat.locked_inodes()
    return share_shims([view(sdir, locked, pss) for sdir in sandbox_dirs(state_dir)])


def share_shims(views: list[SandboxView]) -> list[SandboxView]:
    """A shim serving several sandboxes (`[shim] pods_per_shim`) is shared out: each shows its part of the
    process's PSS and CPU time, so the sandboxes' figures add up to the host's."""
    serving: dict[int, int] = {}
    for v in views:
        if v.shim_alive:
            serving[v.shim_pid] = serving.get(v.shim_pid, 0) + 1
    out = []
    for v in views:
        n = serving.get(v.shim_pid, 1) if v.shim_alive else 1
        if n > 1:
            v = replace(v, shim_sandboxes=n,
                        shim_pss_bytes=None if v.shim_pss_bytes is None else v.shim_pss_bytes // n,
                        shim_cpu_seconds=None if v.shim_cpu_seconds is None else v.shim_cpu_seconds / n)
        out.append(v)
    return out
