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
