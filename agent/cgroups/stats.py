"""Parse cgroup v2 stat files into ContainerStats. Pure: takes the files' text."""
from ..container.types import ContainerStats, CpuStats, MemoryStats, PidsStats


def flat_keyed(text: str) -> dict[str, int]:
    """'key value' lines (cpu.stat, memory.stat, memory.events)."""
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[key] = int(value)
    return values


def single(text: str) -> int:
    """A one-value file; 'max' (no limit) reads as 0."""
    text = text.strip()
    return int(text) if text.isdigit() else 0


def parse(files: dict[str, str]) -> ContainerStats:
    """`files` maps file name -> content for those that exist."""
    cpu = flat_keyed(files.get("cpu.stat", ""))
    memory = flat_keyed(files.get("memory.stat", ""))
    events = flat_keyed(files.get("memory.events", ""))
    return ContainerStats(
        cpu=CpuStats(
            usage_total_ns=cpu.get("usage_usec", 0) * 1000,
            usage_user_ns=cpu.get("user_usec", 0) * 1000,
            usage_kernel_ns=cpu.get("system_usec", 0) * 1000,
            throttled_periods=cpu.get("nr_throttled", 0),
            throttled_time_ns=cpu.get("throttled_usec", 0) * 1000,
        ),
        memory=MemoryStats(
            usage_bytes=single(files.get("memory.current", "")),
            max_usage_bytes=single(files.get("memory.peak", "")),
            limit_bytes=single(files.get("memory.max", "")),
            cache_bytes=memory.get("file", 0),
            rss_bytes=memory.get("anon", 0),
            inactive_file_bytes=memory.get("inactive_file", 0),
            oom_events=events.get("oom_kill", 0),
        ),
        pids=PidsStats(current=single(files.get("pids.current", "")), limit=single(files.get("pids.max", ""))),
    )


STAT_FILES = ("cpu.stat", "memory.stat", "memory.events", "memory.current", "memory.peak", "memory.max",
              "pids.current", "pids.max")
