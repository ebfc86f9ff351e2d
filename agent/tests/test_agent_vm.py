"""The agent as PID 1 of the real guest (QEMU microvm, TCG): virtio-serial channel, reconnects, containers on
a layered erofs rootfs, cgroup v2 limits, stats and OOM events, PostRestore's clock. One booted VM for the session
(the `booted` fixture, rund/tests/vm_fixtures.py)."""
import asyncio
import os
import time

import pytest

from rund import errors
from rund.agent import AgentClient, LayeredRootfs, StdioConfig

from .helpers import process, read_all, spec

pytestmark = pytest.mark.vm


LAYERED = LayeredRootfs(base_device="/dev/vda", base_fstype="erofs", upper_size_bytes=16 << 20)


async def test_reconnecting_hosts_get_a_working_connection(booted):
    for _ in range(3):
        async with await AgentClient.connect_unix(booted.socket, timeout=30.0) as client:
            health = await client.health()
            assert health.kernel_release.endswith("cloud-amd64")
    # A host that vanishes with calls in flight, and the next one right behind it.
    client = await AgentClient.connect_unix(booted.socket, timeout=30.0)
    pending = asyncio.ensure_future(client.get_oom_event())
    await asyncio.sleep(0.1)
    await client.close()
    with pytest.raises(errors.Unavailable):
        await pending
    async with await AgentClient.connect_unix(booted.socket, timeout=30.0) as client:
        assert (await client.health()).agent_version


async def test_setup_sandbox_checks_kernel_modules_in_the_guest(booted):
    async with await AgentClient.connect_unix(booted.socket, timeout=60.0) as client:
        with pytest.raises(errors.InvalidArgument) as info:
            await client.setup_sandbox("sb", hostname="guest-sb", kernel_modules=("overlay", "no_such_module"))
        assert "kernel_modules[1]" in str(info.value)
        await client.setup_sandbox("sb", hostname="guest-sb", kernel_modules=("overlay", "virtio_net"))
        await client.destroy_sandbox("sb")


async def test_container_on_a_layered_erofs_rootfs_in_the_guest(booted):
    async with await AgentClient.connect_unix(booted.socket, timeout=60.0) as client:
        args = ["sh", "-c", "echo $$ $(hostname); grep ' / ' /proc/mounts; echo x > /written; cat /written; exit 5"]
        await client.create_container("guest1", spec(args, hostname="g1"), LAYERED, StdioConfig(stdout=True))
        await client.start_container("guest1")
        out = (await read_all(client, "guest1")).decode().splitlines()
        assert out[0] == "1 g1"
        assert out[1].startswith("overlay / overlay") and out[2] == "x"
        assert (await client.wait_process("guest1")).code == 5
        await client.remove_container("guest1")


async def test_guest_cgroups_limit_account_and_report_oom(booted):
    async with await AgentClient.connect_unix(booted.socket, timeout=60.0) as client:
        s = spec(["sleep", "600"])
        s["linux"]["resources"] = {"memory": {"limit": 16 << 20}, "pids": {"limit": 20}}
        await client.create_container("limited", s, LAYERED)
        await client.start_container("limited")
        stats = await client.stats_container("limited")
        assert stats.memory.limit_bytes == 16 << 20 and stats.pids.limit == 20 and stats.pids.current == 1
        await client.update_container("limited", {"pids": {"limit": 30}})
        assert (await client.stats_container("limited")).pids.limit == 30
        oom = asyncio.ensure_future(client.get_oom_event())
        try:
            # busybox tail buffers a line that never ends: it grows until the limit kills it.
            await client.exec_process("limited", "hog", process(["tail", "/dev/zero"]))
            assert await asyncio.wait_for(oom, 120) == "limited"
        finally:
            oom.cancel()
        assert (await client.wait_process("limited", "hog")).code == 137
        assert (await client.stats_container("limited")).memory.oom_events >= 1
        await client.remove_container("limited", force=True)
        with pytest.raises(errors.NotFound):
            await client.stats_container("limited")


async def test_post_restore_sets_the_guest_clock(booted):
    async with await AgentClient.connect_unix(booted.socket, timeout=60.0) as client:
        target = time.time_ns() + 3600 * 10**9  # an hour ahead: impossible to get right by accident
        await client.post_restore(target, os.urandom(64))
        await client.create_container("clock", spec(["date", "+%s"]), LAYERED, StdioConfig(stdout=True))
        await client.start_container("clock")
        guest_seconds = int(await read_all(client, "clock"))
        await client.wait_process("clock")
        await client.remove_container("clock")
        assert abs(guest_seconds - target / 1e9) < 30
        await client.post_restore(time.time_ns(), os.urandom(64))


def test_a_fatal_error_as_pid1_says_why_and_powers_off(vm_factory):
    """PID 1 must never just exit (the kernel would panic): it prints a last word and powers the guest off."""
    guest = vm_factory.vm(initcmd="exec /usr/bin/python3.11 -I -m agent.main --pid1 --listen bogus:1", quiet=False)
    assert guest.run_to_exit() == 0  # powered off, not a panic
    console = guest.console(tail=1 << 20)
    assert "rund-agent: fatal: ValueError: unknown listen address 'bogus:1'" in console
    assert "Attempted to kill init" not in console
