"""Domain values the agent's container layer takes and returns (no protobuf here)."""
from typing import NamedTuple


class StdioConfig(NamedTuple):
    terminal: bool = False
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False


class PathRootfs(NamedTuple):
    """A directory that already exists where the agent runs."""
    path: str
    readonly: bool = False


class LayeredRootfs(NamedTuple):
    """A read-only base image on a device with a writable overlay upper on tmpfs or a device."""
    base_device: str
    base_fstype: str = "erofs"
    dax: bool = False
    upper_size_bytes: int = 0
    upper_device: str = ""
    upper_fstype: str = ""
    readonly: bool = False


Rootfs = PathRootfs | LayeredRootfs


class ExitInfo(NamedTuple):
    status: int       # exit code, or 128 + signal
    exited_at_ns: int  # wall clock, ns since the epoch


NO_LIMIT = 2**64 - 1  # a cgroup limit of "max", as containerd's cgroup v2 stats report it


class CpuStats(NamedTuple):
    """cpu.stat, in ns."""
    usage_total_ns: int = 0
    usage_user_ns: int = 0
    usage_kernel_ns: int = 0
    throttled_periods: int = 0    # nr_throttled
    throttled_time_ns: int = 0
    periods: int = 0              # nr_periods


class MemoryStats(NamedTuple):
    """memory.current/peak/max, memory.swap.*, memory.stat and memory.events of the container's group.
    A limit is NO_LIMIT when there is none ('max'). Byte counts are named *_bytes; the rest are event counts."""
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


class PidsStats(NamedTuple):
    current: int = 0
    limit: int = NO_LIMIT


class ContainerStats(NamedTuple):
    cpu: CpuStats = CpuStats()
    memory: MemoryStats = MemoryStats()
    pids: PidsStats = PidsStats()
