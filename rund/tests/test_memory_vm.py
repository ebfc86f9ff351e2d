"""Memory hotplug with real QEMU and the real guest: a clone of a rund template (default shape: q35 with a virtio-mem
device, here with 512 MiB pre-plugged in the template: hypervisor.preplug_memory_mib) starts with that memory online,
grows by 512 MiB after its restore, the guest sees it and can use it, and shrinking back to the pre-plugged floor
gives it back to the host.

One template is built for the module (a TCG cold boot costs 15-30 s here), in a private tmpfs dir.
"""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rund import config
from rund.hypervisor import MemoryResizeError
from rund.hypervisor.testing import leak_checked_dirs
from rund.templates import LaunchRequest, Launcher, shape_from_config
from rund.tests.test_templates_vm import guest_os_rootfs, run_container, shut

pytestmark = pytest.mark.vm

BUILD_TIMEOUT = 600
PREPLUG_MIB = 512
MiB = 1 << 20


@pytest.fixture(scope="module")
def launcher_env():
    from guest.build import ensure_built
    ensure_built()
    with leak_checked_dirs(with_shm=True) as (base, shm):
        config_file = base / "config.toml"
        config_file.write_text(f'state_dir = "{base / "state"}"\n[templates]\ndir = "{shm / "templates"}"\n'
                               f'[hypervisor]\npreplug_memory_mib = {PREPLUG_MIB}\n')
        cmd = [sys.executable, "-m", "rund.cli", "--config", str(config_file), "templates", "build"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        assert r.returncode == 0, r.stderr[-2000:]
        yield base, config.load(config_file)


def rss_anon_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no RssAnon")


def mem_total_mib(out: bytes) -> int:
    return int(out.split()[1]) // 1024


def movable_managed_mib(zoneinfo: bytes) -> int:
    """The guest's movable zone (where it onlines hotplugged memory) as its page allocator manages it."""
    zone = re.split(r"zone +Movable\n", zoneinfo.decode(), maxsplit=1)[1].split("Node", 1)[0]
    pages = next(int(line.split()[1]) for line in zone.splitlines() if line.split()[:1] == ["managed"])
    return pages * 4096 // MiB


def test_a_clone_grows_by_512_mib_uses_it_and_gives_it_back(launcher_env):
    base, cfg = launcher_env

    async def scenario():
        shape = shape_from_config(cfg)
        assert shape.memory_hotplug_mib == cfg.hypervisor.max_memory_mib - cfg.hypervisor.memory_mib > 512
        floor = shape.memory_preplug_mib
        assert floor == PREPLUG_MIB
        launcher = Launcher(shape, work_dir=Path(cfg.state_dir), templates_dir=Path(cfg.templates.dir))
        (base / "grow").mkdir()
        launched = await launcher.launch(LaunchRequest(name="grow", dir=base / "grow", hostname="grow"))
        vm, rootfs = launched.vm, guest_os_rootfs(launcher)
        meminfo = "grep MemTotal /proc/meminfo"
        try:
            assert launched.how == "clone"
            # The template saved the floor plugged and onlined: the clone has it from its restore, nothing to plug.
            assert await vm.hotplug_memory() == floor * MiB
            assert movable_managed_mib(await run_container(launched.agent, rootfs, "zones", "cat /proc/zoneinfo")
                                       ) == floor
            boot_total = mem_total_mib(await run_container(launched.agent, rootfs, "before", meminfo))
            # Without the growth, the guest cannot hold 400 MiB more than it has.
            assert boot_total < 256 + floor

            t0 = time.monotonic()
            assert await vm.resize_memory((floor + 512) * MiB) == (floor + 512) * MiB
            grow_s = time.monotonic() - t0
            grown_total = mem_total_mib(await run_container(launched.agent, rootfs, "grown", meminfo))
            assert grown_total == boot_total + 512, (boot_total, grown_total)

            rss_before = rss_anon_mib(vm.pid)
            out = await run_container(launched.agent, rootfs, "use",
                                      "dd if=/dev/zero of=/dev/null bs=800M count=1 2>&1 && echo used")
            assert out.endswith(b"used\n"), out
            rss_used = rss_anon_mib(vm.pid)
            assert rss_used - rss_before >= 350, (rss_before, rss_used)   # the guest's pages are the host's now

            t0 = time.monotonic()
            assert await vm.resize_memory(floor * MiB, timeout=30) == floor * MiB
            shrink_s = time.monotonic() - t0
            after_total = mem_total_mib(await run_container(launched.agent, rootfs, "after", meminfo))
            assert after_total == boot_total
            rss_after = rss_anon_mib(vm.pid)
            # The unplugged half's blocks went back to the host: what dd touched there (~290 of its 800 MiB).
            assert rss_used - rss_after >= 200, (rss_used, rss_after)
            print(f"grow +512 MiB after restore: {grow_s:.3f} s; shrink to the floor: {shrink_s:.3f} s; QEMU anon RSS "
                  f"{rss_before} -> {rss_used} -> {rss_after} MiB")

            with pytest.raises(MemoryResizeError):
                await vm.resize_memory(shape.memory_hotplug_mib * MiB + 2 * MiB)
            with pytest.raises(MemoryResizeError):
                await vm.resize_memory(MiB)                                   # not a whole block
        finally:
            await shut(launched)

    asyncio.run(scenario())
