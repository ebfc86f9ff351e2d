"""A container's guest cgroup figures as containerd's task metrics (the payload of the Task API's Stats).

containerd decodes the payload by its type: `ctr task metrics` and CRI read either io.containerd.cgroups.v1.Metrics
or io.containerd.cgroups.v2.Metrics, but containerd's cgroups metrics plugin reads only the one of the host's cgroup
mode (containerd's `cgroups.Mode()`: v2 when /sys/fs/cgroup is cgroup2, else v1, hybrid included), so rund sends
what runc's shim sends on the same host. The figures always come from the guest's cgroup v2 group.

CRI (containerd 1.6) reads from v1: cpu.usage.total, memory.usage.usage and .limit, total_inactive_file (working set
= usage - total_inactive_file), total_rss, total_pg_fault, total_pg_maj_fault; from v2: cpu.usage_usec,
memory.usage, usage_limit, inactive_file, anon (its rss), pgfault, pgmajfault. A limit that is not set must read as
huge in both (CRI's available bytes = limit - working set unless the limit is above 2^62).
"""
from __future__ import annotations

import functools

from google.protobuf import any_pb2

from proto.gen.containerd.cgroups.v1 import metrics_pb2 as v1
from proto.gen.containerd.cgroups.v2 import metrics_pb2 as v2
from rund.agent.types import NO_LIMIT, ContainerStats
from rund.resources.cgroups.mounts import MOUNTINFO, parse_mountinfo

V1_URL = "io.containerd.cgroups.v1.Metrics"
V2_URL = "io.containerd.cgroups.v2.Metrics"
# What a cgroup v1 kernel reports for an unset memory limit (PAGE_COUNTER_MAX pages of 4 KiB), as runc passes it on.
V1_NO_MEMORY_LIMIT = 0x7FFFFFFFFFFFF000


def host_is_unified(mountinfo: str = MOUNTINFO) -> bool:
    """containerd's cgroups.Mode() == Unified: cgroup2 mounted on /sys/fs/cgroup itself."""
    try:
        with open(mountinfo) as f:
            mounts = parse_mountinfo(f.read())
    except OSError:
        return False
    return any(m.version == 2 and m.path == "/sys/fs/cgroup" for m in mounts)


@functools.cache
def _host_unified() -> bool:
    return host_is_unified()


def _v1_limit(value: int) -> int:
    return V1_NO_MEMORY_LIMIT if value == NO_LIMIT else value


def v1_metrics(s: ContainerStats) -> v1.Metrics:
    """The guest group has no children, so each total_* (hierarchical) figure is its own."""
    c, m, p = s.cpu, s.memory, s.pids
    memory_limit = _v1_limit(m.limit_bytes)
    if NO_LIMIT in (m.limit_bytes, m.swap_limit_bytes):
        memsw_limit = V1_NO_MEMORY_LIMIT
    else:  # v1's memsw counts memory and swap together
        memsw_limit = m.limit_bytes + m.swap_limit_bytes
    stat = dict(
        cache=m.cache_bytes, rss=m.rss_bytes, rss_huge=m.rss_huge_bytes, mapped_file=m.mapped_file_bytes,
        dirty=m.dirty_bytes, writeback=m.writeback_bytes, pg_fault=m.pgfault, pg_maj_fault=m.pgmajfault,
        inactive_anon=m.inactive_anon_bytes, active_anon=m.active_anon_bytes, inactive_file=m.inactive_file_bytes,
        active_file=m.active_file_bytes, unevictable=m.unevictable_bytes,
    )
    return v1.Metrics(
        cpu=v1.CPUStat(
            usage=v1.CPUUsage(total=c.usage_total_ns, kernel=c.usage_kernel_ns, user=c.usage_user_ns),
            throttling=v1.Throttle(periods=c.periods, throttled_periods=c.throttled_periods,
                                   throttled_time=c.throttled_time_ns)),
        memory=v1.MemoryStat(
            **stat, **{f"total_{k}": v for k, v in stat.items()},
            hierarchical_memory_limit=memory_limit, hierarchical_swap_limit=memsw_limit,
            usage=v1.MemoryEntry(limit=memory_limit, usage=m.usage_bytes, max=m.max_usage_bytes,
                                 failcnt=m.events_max),
            swap=v1.MemoryEntry(limit=memsw_limit, usage=m.usage_bytes + m.swap_usage_bytes),
            kernel=v1.MemoryEntry(limit=V1_NO_MEMORY_LIMIT, usage=m.kernel_stack_bytes + m.slab_bytes),
            kernel_tcp=v1.MemoryEntry(limit=V1_NO_MEMORY_LIMIT, usage=m.sock_bytes)),
        memory_oom_control=v1.MemoryOomControl(oom_kill=m.oom_events, under_oom=0),
        pids=v1.PidsStat(current=p.current, limit=0 if p.limit == NO_LIMIT else p.limit),  # runc: 0 is no limit
    )


def v2_metrics(s: ContainerStats) -> v2.Metrics:
    c, m, p = s.cpu, s.memory, s.pids
    return v2.Metrics(
        pids=v2.PidsStat(current=p.current, limit=0 if p.limit == NO_LIMIT else p.limit),
        cpu=v2.CPUStat(usage_usec=c.usage_total_ns // 1000, user_usec=c.usage_user_ns // 1000,
                       system_usec=c.usage_kernel_ns // 1000, nr_periods=c.periods, nr_throttled=c.throttled_periods,
                       throttled_usec=c.throttled_time_ns // 1000),
        memory=v2.MemoryStat(
            anon=m.rss_bytes, file=m.cache_bytes, kernel_stack=m.kernel_stack_bytes, slab=m.slab_bytes,
            sock=m.sock_bytes, shmem=m.shmem_bytes, file_mapped=m.mapped_file_bytes, file_dirty=m.dirty_bytes,
            file_writeback=m.writeback_bytes, anon_thp=m.rss_huge_bytes, inactive_anon=m.inactive_anon_bytes,
            active_anon=m.active_anon_bytes, inactive_file=m.inactive_file_bytes, active_file=m.active_file_bytes,
            unevictable=m.unevictable_bytes, slab_reclaimable=m.slab_reclaimable_bytes,
            slab_unreclaimable=m.slab_unreclaimable_bytes, pgfault=m.pgfault, pgmajfault=m.pgmajfault,
            workingset_refault=m.workingset_refault, workingset_activate=m.workingset_activate,
            workingset_nodereclaim=m.workingset_nodereclaim, pgrefill=m.pgrefill, pgscan=m.pgscan,
            pgsteal=m.pgsteal, pgactivate=m.pgactivate, pgdeactivate=m.pgdeactivate, pglazyfree=m.pglazyfree,
            pglazyfreed=m.pglazyfreed, thp_fault_alloc=m.thp_fault_alloc, thp_collapse_alloc=m.thp_collapse_alloc,
            usage=m.usage_bytes, usage_limit=m.limit_bytes, swap_usage=m.swap_usage_bytes,
            swap_limit=m.swap_limit_bytes),
        memory_events=v2.MemoryEvents(low=m.events_low, high=m.events_high, max=m.events_max, oom=m.events_oom,
                                      oom_kill=m.oom_events),
    )


def metrics_any(s: ContainerStats, unified: bool) -> any_pb2.Any:
    """The Stats payload in the host's cgroup mode."""
    if unified:
        return any_pb2.Any(type_url=V2_URL, value=v2_metrics(s).SerializeToString())
    return any_pb2.Any(type_url=V1_URL, value=v1_metrics(s).SerializeToString())


def for_this_host(s: ContainerStats) -> any_pb2.Any:
    """metrics_any in this host's cgroup mode (read once per shim)."""
    return metrics_any(s, _host_unified())
