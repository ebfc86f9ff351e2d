"""Domain values the agent's container layer takes and returns (no protobuf here)."""
from dataclasses import dataclass


@dataclass(frozen=True)
class StdioConfig:
    terminal: bool = False
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False


@dataclass(frozen=True)
class PathRootfs:
    """A directory that already exists where the agent runs."""
    path: str
    readonly: bool = False


@dataclass(frozen=True)
class LayeredRootfs:
    """A read-only base image on a device with a writable overlay upper on tmpfs or a device."""
    base_device: str
    base_fstype: str = "erofs"
    dax: bool = False
    upper_size_bytes: int = 0
    upper_device: str = ""
    upper_fstype: str = ""
    readonly: bool = False


Rootfs = PathRootfs | LayeredRootfs


@dataclass(frozen=True)
class ExitInfo:
    status: int       # exit code, or 128 + signal
    exited_at_ns: int  # wall clock, ns since the epoch


@dataclass(frozen=True)
class CpuStats:
    usage_total_ns: int = 0
    usage_user_ns: int = 0
    usage_kernel_ns: int = 0
    throttled_periods: int = 0
    throttled_time_ns: int = 0


@dataclass(frozen=True)
class MemoryStats:
    usage_bytes: int = 0
    max_usage_bytes: int = 0
    limit_bytes: int = 0
    cache_bytes: int = 0
    rss_bytes: int = 0
    inactive_file_bytes: int = 0
    oom_events: int = 0


@dataclass(frozen=True)
class PidsStats:
    current: int = 0
    limit: int = 0


@dataclass(frozen=True)
class ContainerStats:
    cpu: CpuStats = CpuStats()
    memory: MemoryStats = MemoryStats()
    pids: PidsStats = PidsStats()
