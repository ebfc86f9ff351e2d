"""What a rund sandbox leaves on the host, to prove that nothing is left once containerd deleted it."""
from __future__ import annotations

import os
from pathlib import Path

from rund.config import Config
from rund.procfs import argvs
from rund.resources.cgroups import Registry
from rund.resources.cgroups.detect import select_driver

STATE_DIR = Path(Config().state_dir)


def qemu_processes_of(sandbox_id: str, namespace: str = "default") -> list[int]:
    marker = str(STATE_DIR / namespace / sandbox_id).encode()
    return [pid for pid, argv in argvs()
            if (argv[0].startswith(b"qemu-system") or b"/qemu-system" in argv[0]) and any(marker in a for a in argv)]


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
    if c := pod_cgroups_of(sandbox_id):
        found["pod cgroups"] = c
    return found


def pod_cgroups_of(sandbox_id: str, depth: int = 4) -> list[str]:
    """Cgroups named after the sandbox anywhere near the top of every hierarchy: where a CRI pod's VMM ran (its
    cgroupsPath: /k8s.io/<id>, /kubepods/.../pod<uid>/<id>; systemd: cri-containerd-<id>.scope)."""
    names = {sandbox_id, f"cri-containerd-{sandbox_id}.scope"}
    found = []
    for root in select_driver(Config().cgroups.parent, "auto").roots:
        level = [root]
        for _ in range(depth):
            below = []
            for directory in level:
                try:
                    entries = [e for e in os.scandir(directory) if e.is_dir(follow_symlinks=False)]
                except OSError:
                    continue
                found += [e.path for e in entries if e.name in names]
                below += [e.path for e in entries if e.name not in names]
            level = below
    return found
