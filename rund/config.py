"""rund's configuration: /etc/rund/config.toml, overridable per runtime class by ConfigPath.

Every key has a default that works with no file at all. Unknown keys are an error (a typo should not silently
fall back to a default), and so are values of the wrong type.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from rund.errors import InvalidArgument

DEFAULT_CONFIG_PATH = Path("/etc/rund/config.toml")
# Where `make install` (or a package) puts the guest build; a checkout falls back to its own build output.
SYSTEM_GUEST_DIR = Path("/var/lib/rund/guest")
CHECKOUT_GUEST_DIR = Path(__file__).resolve().parent.parent / "guest" / "out" / "current"


def _default_guest_dir() -> Path:
    env = os.environ.get("RUND_GUEST_DIR")
    if env:
        return Path(env)
    return SYSTEM_GUEST_DIR if SYSTEM_GUEST_DIR.exists() else CHECKOUT_GUEST_DIR


@dataclass(frozen=True)
class HypervisorConfig:
    path: str = "qemu-system-x86_64"
    machine: str = "q35"             # q35 (DAX rootfs) or microvm
    accel: str = "auto"              # auto | kvm | tcg
    vcpus: int = 1
    memory_mib: int = 256            # boot memory: the guest kernel, the agent, and the pod's base
    # The VM grows with the pod (q35: virtio-mem): each container adds its memory limit, a container without one
    # adds default_container_memory_mib, up to max_memory_mib in all (max_memory_mib = memory_mib: a fixed size).
    max_memory_mib: int = 4096
    default_container_memory_mib: int = 512
    # Guest memory the template VM holds plugged when it is saved (q35): every clone starts with it online, and it
    # is the floor of a pod's memory, never unplugged below. Its memmap (1/64 of it) is then written once in the
    # template's shared RAM file instead of in every pod: 512 MiB saved ~8.5 MiB per pod, but QEMU 7.2 restores
    # those blocks page by page from the migration stream, ~70 ms more per clone than the guest plugging them (README,
    # Density). 0: none, every pod plugs what its containers ask. In the template key.
    preplug_memory_mib: int = 0
    vmm_overhead_mib: int = 160      # the VMM's own memory on top of the guest's, in the host cgroup's bound
    # TCG only (ignored under KVM): QEMU's buffer of translated guest code, per VM. A CRI pod's start translates
    # ~33 MiB of guest code; a buffer smaller than that is flushed and everything retranslated (16 MiB: the first
    # container 2.2x, the second 7x slower than with 32), and what the buffer holds stays resident, idle or not. A
    # smaller buffer is less memory per pod and more CPU on every start (README, Density: figures per size). Not in
    # the template key: classes that differ only here share one template.
    tb_size_mib: int = 48
    # QEMU offers guest RAM to KSM (MADV_MERGEABLE, its default). Merging only happens where the host runs KSM
    # (off by default; `rund check` reports it): it saved ~25 MiB per idle pod here for ~1.5% of a core of ksmd,
    # but merging pages across VMs is a timing side channel between tenants. false: this class's VMs never merge.
    mem_merge: bool = True
    # Idle memory back to the host: every this many seconds, a pod whose VM used under 1% of a core meanwhile has
    # its QEMU's private memory paged out to the host's swap (zram keeps it compressed in RAM), unless the host
    # stalls on memory (PSI). Needs swap; a page the VM touches comes back on its next access. 0: off (README,
    # Density: "Idle memory back to the host").
    idle_reclaim_s: float = 0.0


@dataclass(frozen=True)
class GuestConfig:
    dir: str = ""                    # holds vmlinux, initrd.cpio, rootfs.erofs; "" = default location
    kernel: str = ""                 # overrides of single files
    initrd: str = ""
    image: str = ""
    kernel_params: str = ""

    def resolved_dir(self) -> Path:
        return Path(self.dir) if self.dir else _default_guest_dir()

    def kernel_path(self) -> Path:
        return Path(self.kernel) if self.kernel else self.resolved_dir() / "vmlinux"

    def initrd_path(self) -> Path:
        return Path(self.initrd) if self.initrd else self.resolved_dir() / "initrd.cpio"

    def image_path(self) -> Path:
        return Path(self.image) if self.image else self.resolved_dir() / "rootfs.erofs"


@dataclass(frozen=True)
class TemplateConfig:
    enabled: bool = True
    dir: str = "/dev/shm/rund-templates"   # RAM files must be on tmpfs (shared, never written after save)
    # Spare VMs kept ready per node and template: clones restored and warmed ahead of time, each handed to one CRI
    # pod's sandbox (rund/runtime/spares.py). 0: none. Each costs an idle VM's memory (~90 MiB here) while it waits.
    spare_vms: int = 0
    # A keeper nobody took a spare from for this long stops its spares and exits (the next CRI pod starts it again);
    # 0: never (a node whose pool is its burst capacity keeps it through quiet hours).
    spare_idle_exit_s: float = 600.0


@dataclass(frozen=True)
class CgroupConfig:
    pool: bool = True
    parent: str = "rund"
    pool_size: int = 16
    # A CRI pod's VMM runs in the cgroup its sandbox spec names (linux.cgroupsPath, a child of kubelet's pod cgroup),
    # where Kubernetes accounts and limits the pod; false: in a pool slot like every other sandbox.
    pod_cgroup: bool = True


@dataclass(frozen=True)
class RootfsConfig:
    cache_dir: str = "/var/lib/rund/rootfs-cache"   # erofs images of image layer chains, shared by all sandboxes
    cache_max_mib: int = 8192
    slots: int = 1                   # container rootfs images per sandbox VM (fixed: templates carry the slots)
    slot_mib: int = 512              # every image is padded to this size (sparse); at most 1024
    hotplug_slots: int = 2           # more images a running pod VM can take (q35: virtio-pmem hotplug)
    upper_mib: int = 256             # the writable overlay upper (tmpfs in the guest)


@dataclass(frozen=True)
class AgentConfig:
    # A guest that leaves a teardown call (kill, delete) unanswered this long is declared dead: its VM is killed
    # and its processes exit with 255, so a hung or stopped VM never blocks containerd's kill and delete.
    teardown_timeout_s: float = 5.0


@dataclass(frozen=True)
class AdmissionConfig:
    max_starts: int = 0              # container creations running at once on the node; 0: one per host CPU
    max_wait_s: float = 600.0        # how long a creation waits for its turn before ResourceExhausted


@dataclass(frozen=True)
class ShimConfig:
    # Each pod's shim daemon is forked from a pre-imported fork server (one per state_dir) instead of being started
    # by a fresh interpreter: off the start path and copy-on-write shared (rund/shim/forkserver.py). `start` reads
    # this from the runtime class's ConfigPath when containerd passes it, else from /etc/rund/config.toml.
    fork_server: bool = True
    # Pods served by one shim process (rund/shim/group.py): 1 is a process per pod; N > 1 puts a new pod into a
    # live shim of the same containerd, namespace and config serving fewer than N, sharing its interpreter's
    # memory, and a shim that dies takes all of its pods with it (README, "Shim groups").
    pods_per_shim: int = 1
    # Every private mapping of this class's shims offered to KSM (prctl(PR_SET_MEMORY_MERGE) before the daemon's
    # fork; Linux >= 6.4): forked shims' copies of the fork server's pages are mostly alike, 13.6 -> 3.5 MiB per pod
    # on a node that runs KSM, for ~1.5% of a core more ksmd and KSM's cross-tenant timing channel reaching the
    # shims' memory (README, Density). Does nothing where KSM is off.
    merge_memory: bool = False


@dataclass(frozen=True)
class Config:
    log_level: str = "info"
    state_dir: str = "/run/rund"
    hypervisor: HypervisorConfig = field(default_factory=HypervisorConfig)
    guest: GuestConfig = field(default_factory=GuestConfig)
    templates: TemplateConfig = field(default_factory=TemplateConfig)
    cgroups: CgroupConfig = field(default_factory=CgroupConfig)
    rootfs: RootfsConfig = field(default_factory=RootfsConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    shim: ShimConfig = field(default_factory=ShimConfig)
    source: str = ""                 # the file it came from, "" for built-in defaults


_SECTIONS = {"hypervisor": HypervisorConfig, "guest": GuestConfig, "templates": TemplateConfig,
             "cgroups": CgroupConfig, "rootfs": RootfsConfig,
             "agent": AgentConfig, "admission": AdmissionConfig, "shim": ShimConfig}
_LOG_LEVELS = {"trace", "debug", "info", "warn", "warning", "error"}


def _build(cls, table: dict, where: str):
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in table.items():
        f = known.get(key)
        if f is None or key == "source":
            raise InvalidArgument(f"{where}: unknown key {key!r}")
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise InvalidArgument(f"{where}: [{key}] must be a table")
            values[key] = _build(_SECTIONS[key], value, f"{where} [{key}]")
            continue
        default = f.default
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)      # TOML's `5` for a float key
        if isinstance(default, bool) != isinstance(value, bool) or not isinstance(value, type(default)):
            raise InvalidArgument(f"{where}: {key} must be {type(default).__name__}, got {value!r}")
        values[key] = value
    return cls(**values)


MAX_PODS_PER_SHIM = 64  # a group's blast radius, and its pods share one event loop and one core at a time
MEMORY_BLOCK_MIB = 2   # virtio-mem's block: the unit the VM grows and shrinks by


def preplug_mib(hv: HypervisorConfig, hotplug_mib: int) -> int:
    """What a VM whose shape can grow by `hotplug_mib` holds plugged from its start: preplug_memory_mib rounded up
    to the block and capped at what it can grow by (0 without hotplug: microvm)."""
    return min(-(-hv.preplug_memory_mib // MEMORY_BLOCK_MIB) * MEMORY_BLOCK_MIB, hotplug_mib)


def _check_memory(hv: HypervisorConfig, path: Path) -> None:
    if hv.max_memory_mib < hv.memory_mib:
        raise InvalidArgument(f"{path}: hypervisor.max_memory_mib ({hv.max_memory_mib}) is below memory_mib "
                              f"({hv.memory_mib})")
    if (hv.max_memory_mib - hv.memory_mib) % MEMORY_BLOCK_MIB:
        raise InvalidArgument(f"{path}: hypervisor.max_memory_mib - memory_mib must be a multiple of "
                              f"{MEMORY_BLOCK_MIB} MiB")
    if hv.max_memory_mib > 1 << 20:
        raise InvalidArgument(f"{path}: hypervisor.max_memory_mib must be at most 1 TiB")
    if hv.default_container_memory_mib < 0 or hv.vmm_overhead_mib < 0:
        raise InvalidArgument(f"{path}: hypervisor.default_container_memory_mib and vmm_overhead_mib must be >= 0")
    if hv.preplug_memory_mib < 0:
        raise InvalidArgument(f"{path}: hypervisor.preplug_memory_mib must be >= 0")


def load(path: str | os.PathLike | None = None) -> Config:
    """Load a config file; with no path, /etc/rund/config.toml if present, else the defaults."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return Config()
        path = DEFAULT_CONFIG_PATH
    path = Path(path)
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        raise InvalidArgument(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgument(f"config file {path}: {e}") from None
    cfg = _build(Config, table, str(path))
    if cfg.log_level not in _LOG_LEVELS:
        raise InvalidArgument(f"{path}: log_level must be one of {sorted(_LOG_LEVELS)}")
    if cfg.hypervisor.machine not in ("q35", "microvm"):
        raise InvalidArgument(f"{path}: hypervisor.machine must be q35 or microvm")
    if cfg.hypervisor.accel not in ("auto", "kvm", "tcg"):
        raise InvalidArgument(f"{path}: hypervisor.accel must be auto, kvm or tcg")
    if not 1 <= cfg.hypervisor.tb_size_mib <= 2048:
        raise InvalidArgument(f"{path}: hypervisor.tb_size_mib must be in 1..2048")
    if cfg.hypervisor.vcpus < 1 or cfg.hypervisor.memory_mib < 64:
        raise InvalidArgument(f"{path}: hypervisor needs vcpus >= 1 and memory_mib >= 64")
    _check_memory(cfg.hypervisor, path)
    # A class with spare VMs has a hotplug slot more, for their warm-up (templates/shape.py).
    if cfg.rootfs.hotplug_slots < 0 or cfg.rootfs.slots + cfg.rootfs.hotplug_slots + bool(cfg.templates.spare_vms) > 16:
        raise InvalidArgument(f"{path}: rootfs needs hotplug_slots >= 0 and at most 16 slots in all (15 with "
                              f"templates.spare_vms: their warm-up takes one more)")
    if cfg.rootfs.slots < 1 or not 2 <= cfg.rootfs.slot_mib <= 1024 or cfg.rootfs.slot_mib % 2:
        raise InvalidArgument(f"{path}: rootfs needs slots >= 1 and an even slot_mib in 2..1024")
    if cfg.admission.max_starts < 0 or cfg.admission.max_wait_s <= 0:
        raise InvalidArgument(f"{path}: admission needs max_starts >= 0 (0: one per CPU) and max_wait_s > 0")
    if not 1 <= cfg.shim.pods_per_shim <= MAX_PODS_PER_SHIM:
        raise InvalidArgument(f"{path}: shim.pods_per_shim must be in 1..{MAX_PODS_PER_SHIM}")
    if not 0 <= cfg.templates.spare_vms <= 64:
        raise InvalidArgument(f"{path}: templates.spare_vms must be in [0, 64]")
    if cfg.hypervisor.idle_reclaim_s < 0:
        raise InvalidArgument(f"{path}: hypervisor.idle_reclaim_s must be >= 0 (0: off)")
    if cfg.templates.spare_idle_exit_s < 0:
        raise InvalidArgument(f"{path}: templates.spare_idle_exit_s must be >= 0 (0: never)")
    if not 0 < cfg.agent.teardown_timeout_s <= 600:
        raise InvalidArgument(f"{path}: agent.teardown_timeout_s must be in (0, 600]")
    return replace(cfg, source=str(path))
