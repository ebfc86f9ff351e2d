"""The Task API's Stats payload: a container's guest cgroup figures as containerd's cgroups v1 or v2 Metrics, in the
host's cgroup mode, with what containerd 1.6's CRI reads from each (pkg/cri/server/container_stats_list_linux.go)."""
from __future__ import annotations

import dataclasses

import pytest

from proto.gen.containerd.cgroups.v1 import metrics_pb2 as v1
from proto.gen.containerd.cgroups.v2 import metrics_pb2 as v2
from rund.agent.types import NO_LIMIT, ContainerStats, CpuStats, MemoryStats, PidsStats
from rund.shim import metrics

MiB = 1 << 20
# Every field distinct, so a field read from the wrong place shows.
STATS = ContainerStats(
    cpu=CpuStats(usage_total_ns=9_000_000, usage_user_ns=6_000_000, usage_kernel_ns=3_000_000, throttled_periods=4,
                 throttled_time_ns=5_000, periods=11),
    memory=MemoryStats(**{f.name: 1000 + i for i, f in enumerate(dataclasses.fields(MemoryStats))}),
    pids=PidsStats(current=3, limit=40),
)
ALLOCATED = dataclasses.replace(STATS, memory=dataclasses.replace(
    STATS.memory, usage_bytes=70 * MiB, rss_bytes=64 * MiB, cache_bytes=4 * MiB, inactive_file_bytes=1 * MiB,
    limit_bytes=NO_LIMIT, swap_limit_bytes=NO_LIMIT, pgfault=17_000, pgmajfault=2))


def cri_reads(payload) -> dict:
    """What containerd 1.6's CRI makes of a task's metrics (cpuContainerStats, memoryContainerStats)."""
    if payload.type_url == metrics.V1_URL:
        m = v1.Metrics.FromString(payload.value)
        usage, inactive, limit = m.memory.usage.usage, m.memory.total_inactive_file, m.memory.usage.limit
        cpu, rss = m.cpu.usage.total, m.memory.total_rss
        faults, major = m.memory.total_pg_fault, m.memory.total_pg_maj_fault
    else:
        assert payload.type_url == metrics.V2_URL
        m = v2.Metrics.FromString(payload.value)
        usage, inactive, limit = m.memory.usage, m.memory.inactive_file, m.memory.usage_limit
        cpu, rss = m.cpu.usage_usec * 1000, m.memory.anon
        faults, major = m.memory.pgfault, m.memory.pgmajfault
    working_set = usage - inactive if inactive < usage else 0
    available = (limit - working_set) % 2**64 if limit <= 1 << 62 else 0   # Go's uint64 arithmetic
    return {"cpu": cpu, "usage": usage, "working_set": working_set, "available": available, "rss": rss,
            "page_faults": faults, "major_page_faults": major}


@pytest.mark.parametrize("unified", [False, True], ids=["v1", "v2"])
def test_cri_reads_usage_working_set_rss_and_page_faults(unified):
    got = cri_reads(metrics.metrics_any(ALLOCATED, unified))
    assert got == {"cpu": 9_000_000, "usage": 70 * MiB, "working_set": 69 * MiB, "available": 0, "rss": 64 * MiB,
                   "page_faults": 17_000, "major_page_faults": 2}


@pytest.mark.parametrize("unified", [False, True], ids=["v1", "v2"])
def test_a_memory_limit_gives_cri_the_bytes_still_available(unified):
    limited = dataclasses.replace(ALLOCATED, memory=dataclasses.replace(ALLOCATED.memory, limit_bytes=100 * MiB))
    assert cri_reads(metrics.metrics_any(limited, unified))["available"] == 31 * MiB


def test_v1_metrics_field_for_field():
    m = metrics.v1_metrics(STATS)
    s = STATS.memory
    assert (m.cpu.usage.total, m.cpu.usage.user, m.cpu.usage.kernel) == (9_000_000, 6_000_000, 3_000_000)
    assert (m.cpu.throttling.periods, m.cpu.throttling.throttled_periods, m.cpu.throttling.throttled_time) == (
        11, 4, 5_000)
    pairs = {"cache": s.cache_bytes, "rss": s.rss_bytes, "rss_huge": s.rss_huge_bytes,
             "mapped_file": s.mapped_file_bytes, "dirty": s.dirty_bytes, "writeback": s.writeback_bytes,
             "pg_fault": s.pgfault, "pg_maj_fault": s.pgmajfault, "inactive_anon": s.inactive_anon_bytes,
             "active_anon": s.active_anon_bytes, "inactive_file": s.inactive_file_bytes,
             "active_file": s.active_file_bytes, "unevictable": s.unevictable_bytes}
    for name, value in pairs.items():   # a leaf group: the hierarchical total is its own figure
        assert (getattr(m.memory, name), getattr(m.memory, f"total_{name}")) == (value, value), name
    assert (m.memory.usage.usage, m.memory.usage.max, m.memory.usage.limit, m.memory.usage.failcnt) == (
        s.usage_bytes, s.max_usage_bytes, s.limit_bytes, s.events_max)
    assert m.memory.hierarchical_memory_limit == s.limit_bytes
    assert (m.memory.swap.usage, m.memory.swap.limit) == (s.usage_bytes + s.swap_usage_bytes,
                                                          s.limit_bytes + s.swap_limit_bytes)   # v1 memsw
    assert m.memory.kernel.usage == s.kernel_stack_bytes + s.slab_bytes and m.memory.kernel_tcp.usage == s.sock_bytes
    assert m.memory_oom_control.oom_kill == s.oom_events
    assert (m.pids.current, m.pids.limit) == (3, 40)


def test_v1_metrics_without_limits_read_as_a_v1_kernel_reports_them():
    m = metrics.v1_metrics(dataclasses.replace(ALLOCATED, pids=PidsStats(current=1, limit=NO_LIMIT)))
    assert m.memory.usage.limit == m.memory.hierarchical_memory_limit == metrics.V1_NO_MEMORY_LIMIT
    assert m.memory.usage.limit > 1 << 62          # CRI's "unlimited"
    assert m.memory.swap.limit == metrics.V1_NO_MEMORY_LIMIT
    assert m.pids.limit == 0                        # runc's v1 figure for pids.max "max"


def test_v2_metrics_field_for_field():
    m = metrics.v2_metrics(STATS)
    s = STATS.memory
    assert (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec) == (9000, 6000, 3000)
    assert (m.cpu.nr_periods, m.cpu.nr_throttled, m.cpu.throttled_usec) == (11, 4, 5)
    renamed = {"anon": "rss_bytes", "file": "cache_bytes", "anon_thp": "rss_huge_bytes",
               "file_mapped": "mapped_file_bytes", "file_dirty": "dirty_bytes", "file_writeback": "writeback_bytes",
               "usage": "usage_bytes", "usage_limit": "limit_bytes", "swap_usage": "swap_usage_bytes",
               "swap_limit": "swap_limit_bytes"}
    for field in v2.MemoryStat.DESCRIPTOR.fields:   # every field of containerd's v2 MemoryStat is filled
        ours = renamed.get(field.name) or (field.name if hasattr(s, field.name) else f"{field.name}_bytes")
        assert getattr(m.memory, field.name) == getattr(s, ours), field.name
    assert (m.memory_events.low, m.memory_events.high, m.memory_events.max, m.memory_events.oom,
            m.memory_events.oom_kill) == (s.events_low, s.events_high, s.events_max, s.events_oom, s.oom_events)
    assert (m.pids.current, m.pids.limit) == (3, 40)
    unlimited = metrics.v2_metrics(ALLOCATED)
    assert unlimited.memory.usage_limit == unlimited.memory.swap_limit == 2**64 - 1   # containerd's "max"


HYBRID = """\
25 1 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
"""
UNIFIED = """\
25 1 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
"""


@pytest.mark.parametrize("text, unified", [(HYBRID, False), (UNIFIED, True), ("", False)],
                         ids=["hybrid", "unified", "none"])
def test_the_host_mode_is_containerds(tmp_path, text, unified):
    path = tmp_path / "mountinfo"
    path.write_text(text)
    assert metrics.host_is_unified(str(path)) is unified
    assert metrics.host_is_unified(str(tmp_path / "absent")) is False


def test_this_host_gets_the_type_of_its_cgroup_mode():
    payload = metrics.for_this_host(STATS)
    assert payload.type_url == (metrics.V2_URL if metrics.host_is_unified() else metrics.V1_URL)
