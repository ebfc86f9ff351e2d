"""A container's stats follow what it allocates, read by the agent from its cgroup v2 group in the real guest.

This host's cgroup v2 hierarchy carries no memory or pids controller (hybrid: they are bound to v1), so memory
figures can only be seen in a guest; this uses the session's booted VM (the `booted` fixture). The allocation is
anonymous memory: busybox `dd` reads 64 MiB of /dev/zero into one buffer, then blocks writing it into a pipe nobody
reads, holding the buffer until it is killed.
"""
import asyncio

import pytest

from rund.agent import AgentClient, LayeredRootfs
from rund.agent.types import NO_LIMIT

from .helpers import process, spec

pytestmark = pytest.mark.vm

LAYERED = LayeredRootfs(base_device="/dev/vda", base_fstype="erofs", upper_size_bytes=16 << 20)
MiB = 1 << 20
HOG = "dd if=/dev/zero bs=64M count=1 2>/dev/null | sleep 600"


async def wait_for_rss(client: AgentClient, container_id: str, at_least: int, timeout: float = 20.0):
    """The stats once the group's anonymous memory reaches `at_least` (TCG is slow to touch 64 MiB)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (stats := await client.stats_container(container_id)).memory.rss_bytes < at_least:
        assert loop.time() < deadline, f"rss never reached {at_least}: {stats}"
        await asyncio.sleep(0.2)
    return stats


async def test_memory_rss_and_page_faults_grow_with_allocation_and_fall_when_it_is_freed(booted):
    async with await AgentClient.connect_unix(booted.socket, timeout=60.0) as client:
        init = await client.create_container("alloc", spec(["sleep", "600"]), LAYERED)
        try:
            await client.start_container("alloc")
            before = await client.stats_container("alloc")
            assert before.pids.current == 1 and await client.list_processes("alloc") == (init,)   # init in its group
            await client.exec_process("alloc", "hog", process(["sh", "-c", HOG]))
            held = await wait_for_rss(client, "alloc", before.memory.rss_bytes + 60 * MiB)

            grew = {"usage": held.memory.usage_bytes - before.memory.usage_bytes,
                    "rss": held.memory.rss_bytes - before.memory.rss_bytes,
                    "anon lists": (held.memory.active_anon_bytes + held.memory.inactive_anon_bytes)
                    - (before.memory.active_anon_bytes + before.memory.inactive_anon_bytes)}
            assert all(g >= 60 * MiB for g in grew.values()), (grew, before, held)
            assert held.memory.max_usage_bytes >= held.memory.usage_bytes
            assert held.memory.usage_bytes - held.memory.inactive_file_bytes >= 60 * MiB   # CRI's working set
            # one fault per page touched: 4 KiB pages, or 2 MiB ones where transparent huge pages served it
            huge = held.memory.rss_huge_bytes - before.memory.rss_huge_bytes
            faults = held.memory.pgfault - before.memory.pgfault
            assert faults >= 0.9 * ((grew["rss"] - huge) // 4096 + huge // (2 * MiB)), (faults, before, held)
            assert held.memory.pgmajfault >= before.memory.pgmajfault
            assert held.cpu.usage_total_ns > before.cpu.usage_total_ns
            assert held.cpu.usage_total_ns >= held.cpu.usage_user_ns + held.cpu.usage_kernel_ns - 1000
            assert held.pids.current == 4   # sleep (init); the hog's sh, dd and sleep
            assert (held.memory.limit_bytes, held.pids.limit) == (NO_LIMIT, NO_LIMIT)

            await client.exec_process("alloc", "free", process(["killall", "dd"]))
            assert (await client.wait_process("alloc", "free")).code == 0
            await client.signal_process("alloc", "hog", 9)
            await client.wait_process("alloc", "hog")
            # the kernel uncharges freed pages in batches: usage can trail the exit for a moment (56.9 MiB of the
            # 64 seen once in the full suite), so wait for it
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10.0
            while held.memory.usage_bytes - (freed := await client.stats_container("alloc")).memory.usage_bytes \
                    < 60 * MiB and loop.time() < deadline:
                await asyncio.sleep(0.2)
            assert held.memory.usage_bytes - freed.memory.usage_bytes >= 60 * MiB, (held, freed)
            assert held.memory.rss_bytes - freed.memory.rss_bytes >= 60 * MiB, (held, freed)
            assert freed.memory.pgfault >= held.memory.pgfault   # counters never go back
        finally:
            await client.remove_container("alloc", force=True)


async def test_a_limited_container_reports_its_limits_with_its_usage(booted):
    """swap equal to the memory limit is a swap.max of 0: a limit, not "none"."""
    async with await AgentClient.connect_unix(booted.socket, timeout=60.0) as client:
        s = spec(["sleep", "600"])
        s["linux"]["resources"] = {"memory": {"limit": 96 * MiB, "swap": 96 * MiB}, "pids": {"limit": 20}}
        await client.create_container("capped", s, LAYERED)
        try:
            await client.start_container("capped")
            await client.exec_process("capped", "hog", process(["sh", "-c", HOG]))
            st = await wait_for_rss(client, "capped", 60 * MiB)
            m = st.memory
            assert (m.limit_bytes, m.swap_limit_bytes, st.pids.limit) == (96 * MiB, 0, 20)
            assert 60 * MiB <= m.usage_bytes <= m.limit_bytes and m.rss_bytes >= 60 * MiB
            assert m.oom_events == 0 and m.events_oom == 0
        finally:
            await client.remove_container("capped", force=True)
