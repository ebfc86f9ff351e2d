"""Values the agent client takes and returns (frozen; no protobuf)."""
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class IPAddress:
    address: str        # "10.88.0.5"
    prefix_length: int  # 16


@dataclass(frozen=True)
class Interface:
    name: str                           # guest device, e.g. "eth0"
    mac: str = ""                       # "02:00:0a:58:00:05"
    mtu: int = 0
    addresses: tuple[IPAddress, ...] = ()


@dataclass(frozen=True)
class Route:
    destination: str = ""  # CIDR; "" or "default" for the default route
    gateway: str = ""
    device: str = ""


@dataclass(frozen=True)
class NetworkConfig:
    interfaces: tuple[Interface, ...] = ()
    routes: tuple[Route, ...] = ()
    dns_servers: tuple[str, ...] = ()
    dns_searches: tuple[str, ...] = ()


@dataclass(frozen=True)
class PathRootfs:
    """A directory that already exists in the guest."""
    path: str
    readonly: bool = False


@dataclass(frozen=True)
class LayeredRootfs:
    """A read-only base image on a guest device, a writable overlay upper on tmpfs or another device."""
    base_device: str           # "/dev/pmem1", "/dev/vdb"
    base_fstype: str = "erofs"
    dax: bool = False
    upper_size_bytes: int = 0  # tmpfs upper cap (0: tmpfs default)
    upper_device: str = ""
    upper_fstype: str = ""
    readonly: bool = False


Rootfs = PathRootfs | LayeredRootfs


@dataclass(frozen=True)
class FileCopy:
    """A small host file a container bind-mounts, carried into the guest with CreateContainer."""
    data: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class StdioConfig:
    terminal: bool = False
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False


@dataclass(frozen=True)
class ExitStatus:
    code: int           # exit code, or 128 + signal
    exited_at: datetime  # UTC


@dataclass(frozen=True)
class StreamChunk:
    data: bytes
    eof: bool  # no more data will come (data may still hold the last bytes... or be empty)


@dataclass(frozen=True)
class AgentHealth:
    agent_version: str
    kernel_release: str
    uptime_ns: int


NO_LIMIT = 2**64 - 1  # a cgroup limit of "max", as containerd's cgroup v2 stats report it


@dataclass(frozen=True)
class CpuStats:
    """The container's cpu.stat in the guest, in ns."""
    usage_total_ns: int = 0
    usage_user_ns: int = 0
    usage_kernel_ns: int = 0
    throttled_periods: int = 0    # nr_throttled
    throttled_time_ns: int = 0
    periods: int = 0              # nr_periods


@dataclass(frozen=True)
class MemoryStats:
    """The container's cgroup v2 memory figures in the guest; a limit is NO_LIMIT when there is none ('max').
    Names ending in _bytes are byte counts, the rest event counts (memory.stat's own names)."""
    usage_bytes: int = 0          # memory.current
    max_usage_bytes: int = 0      # memory.peak
    limit_bytes: int = NO_LIMIT   # memory.max
    cache_bytes: int = 0          # file
    rss_bytes: int = 0            # anon
    inactive_file_bytes: int = 0
    oom_events: int = 0           # memory.events oom_kill
    swap_usage_bytes: int = 0     # memory.swap.current
    swap_limit_bytes: int = NO_LIMIT  # memory.swap.max
    active_file_bytes: int = 0
    inactive_anon_bytes: int = 0
    active_anon_bytes: int = 0
    unevictable_bytes: int = 0
    mapped_file_bytes: int = 0    # file_mapped
    dirty_bytes: int = 0          # file_dirty
    writeback_bytes: int = 0      # file_writeback
    shmem_bytes: int = 0
    rss_huge_bytes: int = 0       # anon_thp
    kernel_stack_bytes: int = 0
    slab_bytes: int = 0
    slab_reclaimable_bytes: int = 0
    slab_unreclaimable_bytes: int = 0
    sock_bytes: int = 0
    pgfault: int = 0
    pgmajfault: int = 0
    workingset_refault: int = 0
    workingset_activate: int = 0
    workingset_nodereclaim: int = 0
    pgrefill: int = 0
    pgscan: int = 0
    pgsteal: int = 0
    pgactivate: int = 0
    pgdeactivate: int = 0
    pglazyfree: int = 0
    pglazyfreed: int = 0
    thp_fault_alloc: int = 0
    thp_collapse_alloc: int = 0
    events_low: int = 0           # memory.events low, high, max, oom
    events_high: int = 0
    events_max: int = 0
    events_oom: int = 0


@dataclass(frozen=True)
class PidsStats:
    current: int = 0
    limit: int = NO_LIMIT


@dataclass(frozen=True)
class ContainerStats:
    cpu: CpuStats = CpuStats()
    memory: MemoryStats = MemoryStats()
    pids: PidsStats = PidsStats()
