"""What this host offers rund, gathered once: `rund check` prints it (with the Kubernetes side, rund/ops/kubecheck.py).

A finding that is not ok means the node cannot run a pod until it is fixed; `warn` marks one that costs speed or
density but runs pods. `advice` says what to do."""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rund.config import Config
from rund.hypervisor.accel import detect_accel
from rund.resources import reclaim
from rund.resources.cgroups.mounts import read_mounts


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool           # False: rund cannot run a pod until this is fixed
    value: str
    advice: str = ""   # what to do (for a line that is not ok, or warns)
    warn: bool = False  # runs pods, but slower or denser than it could

    @property
    def status(self) -> str:
        return "BAD" if not self.ok else ("warn" if self.warn else "ok")


def _qemu_version(binary: str) -> Finding:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return Finding("qemu", False, f"{binary} not runnable: {e}", "install qemu-system-x86 or set [hypervisor] path")
    m = re.search(r"version (\S+)", out)
    if not m:
        return Finding("qemu", False, out.strip()[:80] or f"{binary} printed no version",
                       "install qemu-system-x86 or set [hypervisor] path")
    return Finding("qemu", True, m.group(1))


def _cgroups() -> Finding:
    mounts = read_mounts()
    versions = {m.version for m in mounts}
    if versions == {2}:
        return Finding("cgroups", True, "v2 (unified)")
    if versions == {1, 2}:
        return Finding("cgroups", True, "v1 hybrid (v1 controllers, a v2 hierarchy without them)")
    if versions == {1}:
        return Finding("cgroups", True, "v1")
    return Finding("cgroups", False, "no cgroup hierarchy mounted", "mount cgroup2 on /sys/fs/cgroup")


def _guest(cfg: Config) -> Finding:
    parts = {"kernel": cfg.guest.kernel_path(), "initrd": cfg.guest.initrd_path(), "image": cfg.guest.image_path()}
    missing = [f"{k} {p}" for k, p in parts.items() if not p.is_file()]
    if missing:
        return Finding("guest image", False, "missing: " + ", ".join(missing),
                       "build it: `make guest-image` (or set [guest] dir in the rund config)")
    size = parts["image"].stat().st_size
    return Finding("guest image", True, f"{cfg.guest.resolved_dir()} (rootfs {size / 2**20:.1f} MiB)")


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _free_bytes(path: Path) -> int:
    st = os.statvfs(_existing(path))
    return st.f_bavail * st.f_frsize


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


UNUSED_TEMPLATE_S = 24 * 3600      # `rund templates prune`'s default


def _templates_dir(cfg: Config) -> Finding:
    """Template RAM lives on tmpfs; a missing or full one means every pod boots cold (slow), not that none runs."""
    from rund.templates.store import MEMORY_FILESYSTEMS, TemplateStore, filesystem_type
    if not cfg.templates.enabled:
        return Finding("templates dir", True, "templates disabled: every pod boots cold", warn=True,
                       advice="set [templates] enabled = true for ~55 ms clones instead of cold boots")
    path = Path(cfg.templates.dir)
    fstype = filesystem_type(_existing(path))
    free = _free_bytes(path)
    need = (cfg.hypervisor.memory_mib + 16) << 20          # one template: guest RAM plus device state
    store = TemplateStore(path)
    have = len(store.keys())
    value = f"{path} on {fstype or '?'}, {_mib(free)} free, {have} template(s)"
    unused = {key: size for key, (_, size) in store.unused(UNUSED_TEMPLATE_S).items()}
    if unused:
        value += f", {len(unused)} unused for a day ({_mib(sum(unused.values()))})"
    if fstype not in MEMORY_FILESYSTEMS:
        return Finding("templates dir", True, value, warn=True,
                       advice="template RAM must be on tmpfs: set [templates] dir under /dev/shm (pods boot cold)")
    if not have and free < need:
        return Finding("templates dir", True, value, warn=True,
                       advice=f"a template needs ~{_mib(need)} there: free space on {fstype} or pods boot cold")
    if unused:
        return Finding("templates dir", True, value, warn=True,
                       advice=f"`rund templates prune` gives their {_mib(sum(unused.values()))} of RAM back (tmpfs): "
                              "no pod cloned them for a day and no process maps them")
    return Finding("templates dir", True, value)


def _rootfs_cache(cfg: Config) -> Finding:
    """Every container's image becomes an erofs file here: no room for one image means no pod starts."""
    path = Path(cfg.rootfs.cache_dir)
    free = _free_bytes(path)
    slot = cfg.rootfs.slot_mib << 20
    value = f"{path}: {_mib(free)} free (an image takes up to {_mib(slot)}, the cache up to " \
            f"{_mib(cfg.rootfs.cache_max_mib << 20)})"
    if free < slot:
        return Finding("rootfs cache", False, value,
                       f"free at least {_mib(slot)} on {_existing(path)} or move [rootfs] cache_dir")
    if free < cfg.rootfs.cache_max_mib << 20:
        return Finding("rootfs cache", True, value, warn=True,
                       advice="the disk fills before the cache's bound: lower [rootfs] cache_max_mib or free space")
    return Finding("rootfs cache", True, value)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _selected(text: str) -> str:
    m = re.search(r"\[(\w[\w+]*)\]", text)
    return m.group(1) if m else text


def _ksm() -> Finding:
    """KSM is the host's choice, never rund's: it merges every VM's identical pages (a clone's dirtied guest RAM is
    mostly the same as its siblings': the agent's heap, the kernel's page structs) for a fixed rate of ksmd CPU, and
    merging across VMs is a timing side channel between tenants ([hypervisor] mem_merge = false opts a class out).
    Measured here (README, Density): 20 idle pods, QEMU's PSS 67.6 -> 40.6 MiB per pod, ksmd 1.45% of a core at the
    default rate (its cost does not grow with the pods, its merging slows down). [shim] merge_memory (off by default)
    offers the shims whole as well: 13.6 -> 3.5 MiB per pod, ksmd 1.0 -> 2.5% of a core."""
    run = _read("/sys/kernel/mm/ksm/run")
    if run is None:
        return Finding("KSM", True, "not available in this kernel")
    if run != "1":
        return Finding("KSM", True, "off (clones share their template's RAM without it; with it, their dirtied pages "
                       "too: ~25 MiB less per idle pod here, for ~1.5% of a core of ksmd, and a cross-tenant timing "
                       "channel: `echo 1 > /sys/kernel/mm/ksm/run` on nodes whose tenants may share it)")
    sharing = int(_read("/sys/kernel/mm/ksm/pages_sharing") or 0)
    return Finding("KSM", True, f"on: {_mib(sharing * os.sysconf('SC_PAGE_SIZE'))} merged (ksmd's scan costs a fixed "
                   f"rate of CPU; classes with [hypervisor] mem_merge = false stay out; [shim] merge_memory = true "
                   f"offers a class's shims too: ~10 MiB less per pod here, for more ksmd CPU)")


ZSWAP = "/sys/module/zswap/parameters"


def _zswap() -> str | None:
    """zswap's compressor when it is on (a compressed pool in RAM in front of the swap device), else None."""
    if _read(f"{ZSWAP}/enabled") != "Y":
        return None
    return _read(f"{ZSWAP}/compressor") or "?"


def _swap(cfg: Config) -> Finding:
    """Swap is the host's choice too: `[hypervisor] idle_reclaim_s` pages idle pods' VMs out to it, which frees
    nothing without. Measured here (README, Density): 20 idle pods with zram (lz4), 89.6 -> 48.3 MiB per pod,
    everything counted, zram's compressed pages included; idle CPU unchanged. zswap with deflate in front of the zram
    device held the same pages in 7.0 MiB per pod instead of 10.2 (lz4), but a page-out took ~9x the CPU (1.4 s for
    19 MiB against 0.16 s for 23): the node's trade, memory or CPU, so reported and never a warning."""
    swaps = reclaim.swap_devices()
    kib = sum(size for _, size in swaps)
    reclaiming = cfg.hypervisor.idle_reclaim_s > 0
    if not kib:
        return Finding("swap", True, "none (idle pods keep their memory resident)", warn=reclaiming,
                       advice=("[hypervisor] idle_reclaim_s is set but there is no swap to page out to: zram keeps it "
                               "compressed in RAM, e.g. `echo 8G > /sys/block/zram0/disksize; mkswap /dev/zram0; "
                               "swapon /dev/zram0`") if reclaiming else "")
    what = f"{_mib(kib << 10)}{' of zram (compressed, in RAM)' if any('zram' in name for name, _ in swaps) else ''}"
    compressor = _zswap()
    what += f", zswap in front ({compressor})" if compressor else ", no zswap"
    if not reclaiming:
        return Finding("swap", True, f"{what}; not used: [hypervisor] idle_reclaim_s = 0")
    note = "" if compressor in ("deflate", "zstd") else \
        " (zswap with deflate holds it ~30% smaller for ~9x the CPU per page-out: README, Density)"
    return Finding("swap", True, f"{what}; idle pods paged out after {cfg.hypervisor.idle_reclaim_s:.0f} s{note}")


def _thp() -> Finding:
    enabled = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    if enabled is None:
        return Finding("THP", True, "not available in this kernel")
    mode = _selected(enabled)
    if mode == "always":
        return Finding("THP", True, "always (rund's QEMU opts out with PR_SET_THP_DISABLE; shims and other "
                       "processes get huge pages and grow in 2 MiB steps)", warn=True,
                       advice="`echo madvise > /sys/kernel/mm/transparent_hugepage/enabled` for denser shims")
    return Finding("THP", True, f"{mode} (rund's QEMU opts out of huge pages either way: clones stay small)")


def gather(cfg: Config) -> list[Finding]:
    accel = detect_accel()
    return [
        Finding("acceleration", True, f"{accel.accel.value} ({accel.reason.value})"),
        Finding("vhost-vsock", True, "yes" if os.path.exists("/dev/vhost-vsock")
                else "no (the agent uses virtio-serial)"),
        _cgroups(),
        _qemu_version(cfg.hypervisor.path),
        _guest(cfg),
        _templates_dir(cfg),
        _rootfs_cache(cfg),
        _ksm(),
        _swap(cfg),
        _thp(),
    ]
