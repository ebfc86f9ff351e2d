"""What a rund sandbox leaves on the host, to prove that nothing is left once containerd deleted it."""
from __future__ import annotations

import os
from pathlib import Path

from rund.config import Config
from rund.resources.cgroups import Registry
from rund.resources.cgroups.detect import select_driver

STATE_DIR = Path(Config().state_dir)


def qemu_processes_of(sandbox_id: str, namespace: str = "default") -> list[int]:
    marker = str(STATE_DIR / namespace / sandbox_id).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read()
        except OSError:
            continue
        if argv.startswith(b"qemu-system") or b"/qemu-system" in argv.split(b"\0", 1)[0]:
            if marker in argv:
                found.append(int(entry))
    return found


def mounts_mentioning(text: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if text in line]


def leased_cgroups_of(sandbox_id: str) -> list[str]:
    cfg = Config()
    driver = select_driver(cfg.cgroups.parent, "auto")
    registry = Registry.for_pool(str(Path(cfg.state_dir) / "cgroup-pool"), driver.version, cfg.cgroups.parent)
    try:
        return [e.name for e in registry.entries() if e.sandbox_id == sandbox_id]
    except FileNotFoundError:
        return []


def leftovers(sandbox_id: str, namespace: str = "default") -> dict[str, object]:
    """Everything of `sandbox_id` still on the host; empty when it is all gone."""
    found: dict[str, object] = {}
    if (STATE_DIR / namespace / sandbox_id).exists():
        found["state dir"] = str(STATE_DIR / namespace / sandbox_id)
    if pids := qemu_processes_of(sandbox_id, namespace):
        found["qemu"] = pids
    if m := mounts_mentioning(f"/{sandbox_id}/"):
        found["mounts"] = m
    if c := leased_cgroups_of(sandbox_id):
        found["cgroups"] = c
    return found
