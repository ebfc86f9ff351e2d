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


class CpuStats(NamedTuple):
    usage_total_ns: int = 0
    usage_user_ns: int = 0
    usage_kernel_ns: int = 0
    throttled_periods: int = 0
    throttled_time_ns: int = 0


class MemoryStats(NamedTuple):
    usage_bytes: int = 0
    max_usage_bytes: int = 0
    limit_bytes: int = 0
    cache_bytes: int = 0
    rss_bytes: int = 0
    inactive_file_bytes: int = 0
    oom_events: int = 0


class PidsStats(NamedTuple):
    current: int = 0
    limit: int = 0


class ContainerStats(NamedTuple):
    cpu: CpuStats = CpuStats()
    memory: MemoryStats = MemoryStats()
    pids: PidsStats = PidsStats()
