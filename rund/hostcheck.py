"""What this host offers rund, gathered once: `rund check` prints it, and the runtime logs it at start-up."""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rund.config import Config
from rund.hypervisor.accel import detect_accel
from rund.resources.cgroups.mounts import read_mounts


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool           # False: rund cannot run well until this is fixed
    value: str


def _qemu_version(binary: str) -> Finding:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return Finding("qemu", False, f"{binary} not runnable: {e}")
    m = re.search(r"version (\S+)", out)
    return Finding("qemu", bool(m), m.group(1) if m else out.strip()[:80])


def _cgroups() -> Finding:
    mounts = read_mounts()
    versions = {m.version for m in mounts}
    if versions == {2}:
        return Finding("cgroups", True, "v2 (unified)")
    if versions == {1, 2}:
        return Finding("cgroups", True, "v1 hybrid (v1 controllers, a v2 hierarchy without them)")
    if versions == {1}:
        return Finding("cgroups", True, "v1")
    return Finding("cgroups", False, "no cgroup hierarchy mounted")


def _guest(cfg: Config) -> Finding:
    parts = {"kernel": cfg.guest.kernel_path(), "initrd": cfg.guest.initrd_path(), "image": cfg.guest.image_path()}
    missing = [f"{k} {p}" for k, p in parts.items() if not p.is_file()]
    if missing:
        return Finding("guest image", False, "missing: " + ", ".join(missing) + " (run `make guest-image`)")
    size = parts["image"].stat().st_size
    return Finding("guest image", True, f"{cfg.guest.resolved_dir()} (rootfs {size / 2**20:.1f} MiB)")


def gather(cfg: Config) -> list[Finding]:
    accel = detect_accel()
    return [
        Finding("acceleration", True, f"{accel.accel.value} ({accel.reason.value})"),
        Finding("vhost-vsock", True, "yes" if os.path.exists("/dev/vhost-vsock")
                else "no (the agent uses virtio-serial)"),
        _cgroups(),
        _qemu_version(cfg.hypervisor.path),
        _guest(cfg),
        Finding("templates dir", Path(cfg.templates.dir).parent.exists(), cfg.templates.dir),
    ]
