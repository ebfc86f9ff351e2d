"""`rund ps [--json]`: every sandbox of the node's state dir, one line each."""
from __future__ import annotations

import json
import time

from rund.ops.sandboxes import SandboxView

COLUMNS = ("NAMESPACE", "ID", "CONTAINERS", "AGE", "STATE", "SHIM", "VMM", "PSS", "CPU", "GUEST MEM", "VM")


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def row(v: SandboxView, now: float) -> tuple[str, ...]:
    shim = f"{v.shim_pid}" if v.shim_alive else f"{v.shim_pid or '-'} (dead)"
    vmm = f"{v.vmm_pid}" if v.vmm_alive else ("-" if not v.vmm_pid else f"{v.vmm_pid} (gone)")
    cpu = "-" if v.cpu_seconds is None else f"{v.cpu_seconds:.1f}s"
    return (v.namespace, v.id, str(len(v.containers)), human_age(v.age_seconds(now)), v.state, shim, vmm,
            human_bytes(v.pss_bytes), cpu, human_bytes(v.guest_memory_bytes), v.vm or "-")


def table(views: list[SandboxView], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = [COLUMNS, *(row(v, now) for v in views)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def as_json(views: list[SandboxView]) -> str:
    return json.dumps([v.to_json() for v in views], indent=1)
