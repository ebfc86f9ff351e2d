"""What a shim leaves for the node's operators (`rund metrics serve`, `rund ps`), without a word to anyone:

    <state_dir>/.metrics/spool.jsonl       one JSON line per finished operation trace and per error answered,
                                            appended by every shim of the node; read (and rotated) by the daemon
    <state_dir>/<ns>/<sandbox>/guest-memory.json   the guest's memory in use per container, as of containerd's
                                            last Stats call (kubelet's stats loop, `ctr task metrics`)

A record is one write(2) of one line of at most MAX_LINE bytes on a file opened with O_APPEND: the kernel writes it
whole at the end (a regular file's writes hold its inode lock), so shims never interleave and a shim that dies
later has already said what it did. The spool is bounded: past MAX_SPOOL_BYTES (no daemon reading it) records are
dropped. Nothing here may fail or slow an operation: every error is swallowed (a full disk costs the record, never
the start) and a record costs one open, fstat, write and close on the state dir (tmpfs).
"""
from __future__ import annotations

import contextvars
import json
import os
import time

SPOOL_DIR = ".metrics"             # not a namespace: containerd's namespaces start with a letter or digit
SPOOL_NAME = "spool.jsonl"
GUEST_MEMORY = "guest-memory.json"
MAX_LINE = 4096                    # PIPE_BUF: the size a single append is kept to
MAX_SPOOL_BYTES = 4 << 20          # ~10k traces; beyond it (no daemon reading) new records are dropped
FORMAT = 1

_bound: tuple[str, str, str] | None = None       # (state_dir, namespace, sandbox_id) of this shim's sandbox
_guest_memory: dict[str, dict[str, int]] = {}    # sandbox id -> container id -> bytes
# A shim serving several sandboxes (rund/shim/group.py) runs each call as its sandbox's: its records go there.
_serving: contextvars.ContextVar[str | None] = contextvars.ContextVar("rund_sandbox", default=None)
_bound_to: dict[str, tuple[str, str, str]] = {}


def spool_path(state_dir: str | os.PathLike) -> str:
    return os.path.join(state_dir, SPOOL_DIR, SPOOL_NAME)


def bind(state_dir: str | os.PathLike, namespace: str, sandbox_id: str) -> None:
    """This process serves `sandbox_id` (called when its state dir is made): where its records go."""
    global _bound
    _bound = (os.fspath(state_dir), namespace, sandbox_id)
    _bound_to[sandbox_id] = _bound


def serving(sandbox_id: str) -> None:
    """The current task (and the tasks it starts) works for `sandbox_id`: in a shim serving several sandboxes."""
    _serving.set(sandbox_id)


def current_sandbox() -> str | None:
    return _serving.get()


def forget(sandbox_id: str) -> None:
    """A shim serving several sandboxes no longer serves this one."""
    _bound_to.pop(sandbox_id, None)
    _guest_memory.pop(sandbox_id, None)


def _where() -> tuple[str, str, str] | None:
    sandbox_id = _serving.get()
    return _bound if sandbox_id is None else _bound_to.get(sandbox_id)


def append(doc: dict) -> bool:
    """Append one record to the node's spool; False if it was dropped. Never raises."""
    try:
        bound = _where()
        if bound is None:     # no sandbox claimed yet (a request refused before): containerd's log has it
            return False
        state_dir, namespace, sandbox_id = bound
        line = json.dumps({"v": FORMAT, "t": round(time.time(), 3), "ns": namespace, "sb": sandbox_id, **doc},
                          separators=(",", ":")).encode() + b"\n"
        if len(line) > MAX_LINE:
            return False
        path = spool_path(state_dir)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size > MAX_SPOOL_BYTES:
                return False
            return os.write(fd, line) == len(line)
        finally:
            os.close(fd)
    except Exception:  # noqa: BLE001 - telemetry never fails an operation
        return False


def record_trace(what: str, total: float, steps: list[tuple[str, float]], labels: list[tuple[str, str]]) -> bool:
    """A finished StepTrace: `what` is "<op> <id>" (create, start, delete, teardown)."""
    try:
        op, _, ident = what.partition(" ")
        return append({"k": "trace", "op": op, "id": ident, "total": round(total, 6),
                       "steps": [[name, round(seconds, 6)] for name, seconds in steps], "labels": dict(labels)})
    except Exception:  # noqa: BLE001
        return False


def record_error(method: str, code: str) -> bool:
    """A Task API call answered with an error: the method and the gRPC code name (NOT_FOUND, ...)."""
    return append({"k": "error", "method": method, "code": code})


def record_guest_memory(container_id: str, usage_bytes: int) -> bool:
    """A container's memory in use in the guest (its cgroup there, from the agent), as of this Stats call."""
    try:
        bound = _where()
        if bound is None:
            return False
        state_dir, namespace, sandbox_id = bound
        per_container = _guest_memory.setdefault(sandbox_id, {})
        per_container[container_id] = int(usage_bytes)
        directory = os.path.join(state_dir, namespace, sandbox_id)
        path = os.path.join(directory, GUEST_MEMORY)
        tmp = os.path.join(directory, f".{GUEST_MEMORY}.tmp")
        with open(tmp, "w") as f:
            json.dump({"t": round(time.time(), 3), "containers": per_container}, f)
        os.replace(tmp, path)    # readers see the old or the new file; a lost one means "unknown"
        return True
    except Exception:  # noqa: BLE001
        return False
