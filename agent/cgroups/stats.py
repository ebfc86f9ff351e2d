"""Parse cgroup v2 stat files into ContainerStats. Pure: takes the files' text."""
from ..container.types import NO_LIMIT, ContainerStats, CpuStats, MemoryStats, PidsStats

# MemoryStats field <- memory.stat key, where the names differ or the field is a byte count.
_MEMORY_STAT_BYTES = {
    "cache_bytes": "file",
    "rss_bytes": "anon",
    "inactive_file_bytes": "inactive_file",
    "active_file_bytes": "active_file",
    "inactive_anon_bytes": "inactive_anon",
    "active_anon_bytes": "active_anon",
    "unevictable_bytes": "unevictable",
    "mapped_file_bytes": "file_mapped",
    "dirty_bytes": "file_dirty",
    "writeback_bytes": "file_writeback",
    "shmem_bytes": "shmem",
    "rss_huge_bytes": "anon_thp",
    "kernel_stack_bytes": "kernel_stack",
    "slab_bytes": "slab",
    "slab_reclaimable_bytes": "slab_reclaimable",
    "slab_unreclaimable_bytes": "slab_unreclaimable",
    "sock_bytes": "sock",
}
# Counters that keep the kernel's name.
_MEMORY_STAT_COUNTS = ("pgfault", "pgmajfault", "workingset_nodereclaim", "pgrefill", "pgscan", "pgsteal",
                       "pgactivate", "pgdeactivate", "pglazyfree", "pglazyfreed", "thp_fault_alloc",
                       "thp_collapse_alloc")
# Split into _anon and _file since Linux 5.9; older kernels have the plain key.
_MEMORY_STAT_SPLIT = ("workingset_refault", "workingset_activate")


def flat_keyed(text: str) -> dict[str, int]:
    """'key value' lines (cpu.stat, memory.stat, memory.events)."""
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[key] = int(value)
    return values


def single(text: str) -> int:
    """A one-value counter file; absent or unreadable reads as 0."""
    text = text.strip()
    return int(text) if text.isdigit() else 0


def limit(text: str | None) -> int:
    """A limit file: 'max', or no file (no controller, no limit), is NO_LIMIT."""
    text = (text or "").strip()
    return int(text) if text.isdigit() else NO_LIMIT


def _split_counter(stat: dict[str, int], key: str) -> int:
    if key in stat:
        return stat[key]
    return stat.get(f"{key}_anon", 0) + stat.get(f"{key}_file", 0)


def parse(files: dict[str, str]) -> ContainerStats:
    """`files` maps file name -> content for those that exist."""
    cpu = flat_keyed(files.get("cpu.stat", ""))
    stat = flat_keyed(files.get("memory.stat", ""))
    events = flat_keyed(files.get("memory.events", ""))
    memory = {field: stat.get(key, 0) for field, key in _MEMORY_STAT_BYTES.items()}
    memory.update((key, stat.get(key, 0)) for key in _MEMORY_STAT_COUNTS)
    memory.update((key, _split_counter(stat, key)) for key in _MEMORY_STAT_SPLIT)
    return ContainerStats(
        cpu=CpuStats(
            usage_total_ns=cpu.get("usage_usec", 0) * 1000,
            usage_user_ns=cpu.get("user_usec", 0) * 1000,
            usage_kernel_ns=cpu.get("system_usec", 0) * 1000,
            throttled_periods=cpu.get("nr_throttled", 0),
            throttled_time_ns=cpu.get("throttled_usec", 0) * 1000,
            periods=cpu.get("nr_periods", 0),
        ),
        memory=MemoryStats(
            usage_bytes=single(files.get("memory.current", "")),
            max_usage_bytes=single(files.get("memory.peak", "")),
            limit_bytes=limit(files.get("memory.max")),
            swap_usage_bytes=single(files.get("memory.swap.current", "")),
            swap_limit_bytes=limit(files.get("memory.swap.max")),
            oom_events=events.get("oom_kill", 0),
            events_low=events.get("low", 0),
            events_high=events.get("high", 0),
            events_max=events.get("max", 0),
            events_oom=events.get("oom", 0),
            **memory,
        ),
        pids=PidsStats(current=single(files.get("pids.current", "")), limit=limit(files.get("pids.max"))),
    )


STAT_FILES = ("cpu.stat", "memory.stat", "memory.events", "memory.current", "memory.peak", "memory.max",
              "memory.swap.current", "memory.swap.max", "pids.current", "pids.max")
