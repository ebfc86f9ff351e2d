import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("agent_version", "kernel_release", "uptime_ns")
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    KERNEL_RELEASE_FIELD_NUMBER: _ClassVar[int]
    UPTIME_NS_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    kernel_release: str
    uptime_ns: int
    def __init__(self, agent_version: _Optional[str] = ..., kernel_release: _Optional[str] = ..., uptime_ns: _Optional[int] = ...) -> None: ...

class IPAddress(_message.Message):
    __slots__ = ("address", "prefix_length")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    address: str
    prefix_length: int
    def __init__(self, address: _Optional[str] = ..., prefix_length: _Optional[int] = ...) -> None: ...

class Interface(_message.Message):
    __slots__ = ("name", "mac", "mtu", "addresses")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    name: str
    mac: str
    mtu: int
    addresses: _containers.RepeatedCompositeFieldContainer[IPAddress]
    def __init__(self, name: _Optional[str] = ..., mac: _Optional[str] = ..., mtu: _Optional[int] = ..., addresses: _Optional[_Iterable[_Union[IPAddress, _Mapping]]] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("destination", "gateway", "device")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    destination: str
    gateway: str
    device: str
    def __init__(self, destination: _Optional[str] = ..., gateway: _Optional[str] = ..., device: _Optional[str] = ...) -> None: ...

class NetworkConfig(_message.Message):
    __slots__ = ("interfaces", "routes", "dns_servers", "dns_searches")
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    DNS_SERVERS_FIELD_NUMBER: _ClassVar[int]
    DNS_SEARCHES_FIELD_NUMBER: _ClassVar[int]
    interfaces: _containers.RepeatedCompositeFieldContainer[Interface]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    dns_servers: _containers.RepeatedScalarFieldContainer[str]
    dns_searches: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, interfaces: _Optional[_Iterable[_Union[Interface, _Mapping]]] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., dns_servers: _Optional[_Iterable[str]] = ..., dns_searches: _Optional[_Iterable[str]] = ...) -> None: ...

class SetupSandboxRequest(_message.Message):
    __slots__ = ("sandbox_id", "hostname", "network", "kernel_modules")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    KERNEL_MODULES_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    hostname: str
    network: NetworkConfig
    kernel_modules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sandbox_id: _Optional[str] = ..., hostname: _Optional[str] = ..., network: _Optional[_Union[NetworkConfig, _Mapping]] = ..., kernel_modules: _Optional[_Iterable[str]] = ...) -> None: ...

class DestroySandboxRequest(_message.Message):
    __slots__ = ("sandbox_id",)
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    def __init__(self, sandbox_id: _Optional[str] = ...) -> None: ...

class PostRestoreRequest(_message.Message):
    __slots__ = ("host_time", "entropy", "network", "hostname")
    HOST_TIME_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    host_time: _timestamp_pb2.Timestamp
    entropy: bytes
    network: NetworkConfig
    hostname: str
    def __init__(self, host_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., entropy: _Optional[bytes] = ..., network: _Optional[_Union[NetworkConfig, _Mapping]] = ..., hostname: _Optional[str] = ...) -> None: ...

class Rootfs(_message.Message):
    __slots__ = ("path", "layered", "readonly")
    PATH_FIELD_NUMBER: _ClassVar[int]
    LAYERED_FIELD_NUMBER: _ClassVar[int]
    READONLY_FIELD_NUMBER: _ClassVar[int]
    path: str
    layered: LayeredRootfs
    readonly: bool
    def __init__(self, path: _Optional[str] = ..., layered: _Optional[_Union[LayeredRootfs, _Mapping]] = ..., readonly: _Optional[bool] = ...) -> None: ...

class LayeredRootfs(_message.Message):
    __slots__ = ("base_device", "base_fstype", "dax", "upper_size_bytes", "upper_device", "upper_fstype")
    BASE_DEVICE_FIELD_NUMBER: _ClassVar[int]
    BASE_FSTYPE_FIELD_NUMBER: _ClassVar[int]
    DAX_FIELD_NUMBER: _ClassVar[int]
    UPPER_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPPER_DEVICE_FIELD_NUMBER: _ClassVar[int]
    UPPER_FSTYPE_FIELD_NUMBER: _ClassVar[int]
    base_device: str
    base_fstype: str
    dax: bool
    upper_size_bytes: int
    upper_device: str
    upper_fstype: str
    def __init__(self, base_device: _Optional[str] = ..., base_fstype: _Optional[str] = ..., dax: _Optional[bool] = ..., upper_size_bytes: _Optional[int] = ..., upper_device: _Optional[str] = ..., upper_fstype: _Optional[str] = ...) -> None: ...

class StdioConfig(_message.Message):
    __slots__ = ("terminal", "stdin", "stdout", "stderr")
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    terminal: bool
    stdin: bool
    stdout: bool
    stderr: bool
    def __init__(self, terminal: _Optional[bool] = ..., stdin: _Optional[bool] = ..., stdout: _Optional[bool] = ..., stderr: _Optional[bool] = ...) -> None: ...

class CreateContainerRequest(_message.Message):
    __slots__ = ("container_id", "oci_spec_json", "rootfs", "stdio", "files")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    OCI_SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    ROOTFS_FIELD_NUMBER: _ClassVar[int]
    STDIO_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    oci_spec_json: bytes
    rootfs: Rootfs
    stdio: StdioConfig
    files: _containers.RepeatedCompositeFieldContainer[FileCopy]
    def __init__(self, container_id: _Optional[str] = ..., oci_spec_json: _Optional[bytes] = ..., rootfs: _Optional[_Union[Rootfs, _Mapping]] = ..., stdio: _Optional[_Union[StdioConfig, _Mapping]] = ..., files: _Optional[_Iterable[_Union[FileCopy, _Mapping]]] = ...) -> None: ...

class FileCopy(_message.Message):
    __slots__ = ("data", "mode")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    mode: int
    def __init__(self, data: _Optional[bytes] = ..., mode: _Optional[int] = ...) -> None: ...

class CreateContainerResponse(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    def __init__(self, pid: _Optional[int] = ...) -> None: ...

class StartContainerRequest(_message.Message):
    __slots__ = ("container_id",)
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    def __init__(self, container_id: _Optional[str] = ...) -> None: ...

class StartContainerResponse(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    def __init__(self, pid: _Optional[int] = ...) -> None: ...

class RemoveProcessRequest(_message.Message):
    __slots__ = ("container_id", "exec_id")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ...) -> None: ...

class RemoveContainerRequest(_message.Message):
    __slots__ = ("container_id", "force")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    force: bool
    def __init__(self, container_id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class UpdateContainerRequest(_message.Message):
    __slots__ = ("container_id", "resources_json")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_JSON_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    resources_json: bytes
    def __init__(self, container_id: _Optional[str] = ..., resources_json: _Optional[bytes] = ...) -> None: ...

class StatsContainerRequest(_message.Message):
    __slots__ = ("container_id",)
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    def __init__(self, container_id: _Optional[str] = ...) -> None: ...

class CpuStats(_message.Message):
    __slots__ = ("usage_total_ns", "usage_user_ns", "usage_kernel_ns", "throttled_periods", "throttled_time_ns", "periods")
    USAGE_TOTAL_NS_FIELD_NUMBER: _ClassVar[int]
    USAGE_USER_NS_FIELD_NUMBER: _ClassVar[int]
    USAGE_KERNEL_NS_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_PERIODS_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    PERIODS_FIELD_NUMBER: _ClassVar[int]
    usage_total_ns: int
    usage_user_ns: int
    usage_kernel_ns: int
    throttled_periods: int
    throttled_time_ns: int
    periods: int
    def __init__(self, usage_total_ns: _Optional[int] = ..., usage_user_ns: _Optional[int] = ..., usage_kernel_ns: _Optional[int] = ..., throttled_periods: _Optional[int] = ..., throttled_time_ns: _Optional[int] = ..., periods: _Optional[int] = ...) -> None: ...

class MemoryStats(_message.Message):
    __slots__ = ("usage_bytes", "max_usage_bytes", "limit_bytes", "cache_bytes", "rss_bytes", "inactive_file_bytes", "oom_events", "swap_usage_bytes", "swap_limit_bytes", "active_file_bytes", "inactive_anon_bytes", "active_anon_bytes", "unevictable_bytes", "mapped_file_bytes", "dirty_bytes", "writeback_bytes", "shmem_bytes", "rss_huge_bytes", "kernel_stack_bytes", "slab_bytes", "slab_reclaimable_bytes", "slab_unreclaimable_bytes", "sock_bytes", "pgfault", "pgmajfault", "workingset_refault", "workingset_activate", "workingset_nodereclaim", "pgrefill", "pgscan", "pgsteal", "pgactivate", "pgdeactivate", "pglazyfree", "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc", "events_low", "events_high", "events_max", "events_oom")
    USAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_USAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    INACTIVE_FILE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OOM_EVENTS_FIELD_NUMBER: _ClassVar[int]
    SWAP_USAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SWAP_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FILE_BYTES_FIELD_NUMBER: _ClassVar[int]
    INACTIVE_ANON_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_ANON_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNEVICTABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAPPED_FILE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DIRTY_BYTES_FIELD_NUMBER: _ClassVar[int]
    WRITEBACK_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHMEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    RSS_HUGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    KERNEL_STACK_BYTES_FIELD_NUMBER: _ClassVar[int]
    SLAB_BYTES_FIELD_NUMBER: _ClassVar[int]
    SLAB_RECLAIMABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SLAB_UNRECLAIMABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SOCK_BYTES_FIELD_NUMBER: _ClassVar[int]
    PGFAULT_FIELD_NUMBER: _ClassVar[int]
    PGMAJFAULT_FIELD_NUMBER: _ClassVar[int]
    WORKINGSET_REFAULT_FIELD_NUMBER: _ClassVar[int]
    WORKINGSET_ACTIVATE_FIELD_NUMBER: _ClassVar[int]
    WORKINGSET_NODERECLAIM_FIELD_NUMBER: _ClassVar[int]
    PGREFILL_FIELD_NUMBER: _ClassVar[int]
    PGSCAN_FIELD_NUMBER: _ClassVar[int]
    PGSTEAL_FIELD_NUMBER: _ClassVar[int]
    PGACTIVATE_FIELD_NUMBER: _ClassVar[int]
    PGDEACTIVATE_FIELD_NUMBER: _ClassVar[int]
    PGLAZYFREE_FIELD_NUMBER: _ClassVar[int]
    PGLAZYFREED_FIELD_NUMBER: _ClassVar[int]
    THP_FAULT_ALLOC_FIELD_NUMBER: _ClassVar[int]
    THP_COLLAPSE_ALLOC_FIELD_NUMBER: _ClassVar[int]
    EVENTS_LOW_FIELD_NUMBER: _ClassVar[int]
    EVENTS_HIGH_FIELD_NUMBER: _ClassVar[int]
    EVENTS_MAX_FIELD_NUMBER: _ClassVar[int]
    EVENTS_OOM_FIELD_NUMBER: _ClassVar[int]
    usage_bytes: int
    max_usage_bytes: int
    limit_bytes: int
    cache_bytes: int
    rss_bytes: int
    inactive_file_bytes: int
    oom_events: int
    swap_usage_bytes: int
    swap_limit_bytes: int
    active_file_bytes: int
    inactive_anon_bytes: int
    active_anon_bytes: int
    unevictable_bytes: int
    mapped_file_bytes: int
    dirty_bytes: int
    writeback_bytes: int
    shmem_bytes: int
    rss_huge_bytes: int
    kernel_stack_bytes: int
    slab_bytes: int
    slab_reclaimable_bytes: int
    slab_unreclaimable_bytes: int
    sock_bytes: int
    pgfault: int
    pgmajfault: int
    workingset_refault: int
    workingset_activate: int
    workingset_nodereclaim: int
    pgrefill: int
    pgscan: int
    pgsteal: int
    pgactivate: int
    pgdeactivate: int
    pglazyfree: int
    pglazyfreed: int
    thp_fault_alloc: int
    thp_collapse_alloc: int
    events_low: int
    events_high: int
    events_max: int
    events_oom: int
    def __init__(self, usage_bytes: _Optional[int] = ..., max_usage_bytes: _Optional[int] = ..., limit_bytes: _Optional[int] = ..., cache_bytes: _Optional[int] = ..., rss_bytes: _Optional[int] = ..., inactive_file_bytes: _Optional[int] = ..., oom_events: _Optional[int] = ..., swap_usage_bytes: _Optional[int] = ..., swap_limit_bytes: _Optional[int] = ..., active_file_bytes: _Optional[int] = ..., inactive_anon_bytes: _Optional[int] = ..., active_anon_bytes: _Optional[int] = ..., unevictable_bytes: _Optional[int] = ..., mapped_file_bytes: _Optional[int] = ..., dirty_bytes: _Optional[int] = ..., writeback_bytes: _Optional[int] = ..., shmem_bytes: _Optional[int] = ..., rss_huge_bytes: _Optional[int] = ..., kernel_stack_bytes: _Optional[int] = ..., slab_bytes: _Optional[int] = ..., slab_reclaimable_bytes: _Optional[int] = ..., slab_unreclaimable_bytes: _Optional[int] = ..., sock_bytes: _Optional[int] = ..., pgfault: _Optional[int] = ..., pgmajfault: _Optional[int] = ..., workingset_refault: _Optional[int] = ..., workingset_activate: _Optional[int] = ..., workingset_nodereclaim: _Optional[int] = ..., pgrefill: _Optional[int] = ..., pgscan: _Optional[int] = ..., pgsteal: _Optional[int] = ..., pgactivate: _Optional[int] = ..., pgdeactivate: _Optional[int] = ..., pglazyfree: _Optional[int] = ..., pglazyfreed: _Optional[int] = ..., thp_fault_alloc: _Optional[int] = ..., thp_collapse_alloc: _Optional[int] = ..., events_low: _Optional[int] = ..., events_high: _Optional[int] = ..., events_max: _Optional[int] = ..., events_oom: _Optional[int] = ...) -> None: ...

class PidsStats(_message.Message):
    __slots__ = ("current", "limit")
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    current: int
    limit: int
    def __init__(self, current: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class StatsContainerResponse(_message.Message):
    __slots__ = ("cpu", "memory", "pids")
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    cpu: CpuStats
    memory: MemoryStats
    pids: PidsStats
    def __init__(self, cpu: _Optional[_Union[CpuStats, _Mapping]] = ..., memory: _Optional[_Union[MemoryStats, _Mapping]] = ..., pids: _Optional[_Union[PidsStats, _Mapping]] = ...) -> None: ...

class ListProcessesRequest(_message.Message):
    __slots__ = ("container_id",)
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    def __init__(self, container_id: _Optional[str] = ...) -> None: ...

class ListProcessesResponse(_message.Message):
    __slots__ = ("pids",)
    PIDS_FIELD_NUMBER: _ClassVar[int]
    pids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, pids: _Optional[_Iterable[int]] = ...) -> None: ...

class ExecProcessRequest(_message.Message):
    __slots__ = ("container_id", "exec_id", "process_json", "stdio")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESS_JSON_FIELD_NUMBER: _ClassVar[int]
    STDIO_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    process_json: bytes
    stdio: StdioConfig
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., process_json: _Optional[bytes] = ..., stdio: _Optional[_Union[StdioConfig, _Mapping]] = ...) -> None: ...

class ExecProcessResponse(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    def __init__(self, pid: _Optional[int] = ...) -> None: ...

class SignalProcessRequest(_message.Message):
    __slots__ = ("container_id", "exec_id", "signal", "all")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    signal: int
    all: bool
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., signal: _Optional[int] = ..., all: _Optional[bool] = ...) -> None: ...

class WaitProcessRequest(_message.Message):
    __slots__ = ("container_id", "exec_id")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ...) -> None: ...

class WaitProcessResponse(_message.Message):
    __slots__ = ("exit_status", "exited_at")
    EXIT_STATUS_FIELD_NUMBER: _ClassVar[int]
    EXITED_AT_FIELD_NUMBER: _ClassVar[int]
    exit_status: int
    exited_at: _timestamp_pb2.Timestamp
    def __init__(self, exit_status: _Optional[int] = ..., exited_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WriteStreamRequest(_message.Message):
    __slots__ = ("container_id", "exec_id", "data")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    data: bytes
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class WriteStreamResponse(_message.Message):
    __slots__ = ("length",)
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    length: int
    def __init__(self, length: _Optional[int] = ...) -> None: ...

class CloseStdinRequest(_message.Message):
    __slots__ = ("container_id", "exec_id")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ...) -> None: ...

class ReadStreamRequest(_message.Message):
    __slots__ = ("container_id", "exec_id", "max_length")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    max_length: int
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., max_length: _Optional[int] = ...) -> None: ...

class ReadStreamResponse(_message.Message):
    __slots__ = ("data", "eof")
    DATA_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    eof: bool
    def __init__(self, data: _Optional[bytes] = ..., eof: _Optional[bool] = ...) -> None: ...

class TtyWinResizeRequest(_message.Message):
    __slots__ = ("container_id", "exec_id", "rows", "columns")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    rows: int
    columns: int
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., rows: _Optional[int] = ..., columns: _Optional[int] = ...) -> None: ...

class GetOOMEventRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OOMEvent(_message.Message):
    __slots__ = ("container_id",)
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    def __init__(self, container_id: _Optional[str] = ...) -> None: ...
