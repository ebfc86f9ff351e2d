"""A runtime class whose template holds memory pre-plugged (hypervisor.preplug_memory_mib), through CRI: the pod's VM
is a clone that starts with that memory online and plugs nothing for a container asking less, a container asking
more grows it from there, and when that container leaves the VM shrinks back to the pre-plugged floor, not below."""
from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from integration.cri.client import sandbox_config
from integration.test_pod_memory import BOOT, OVERHEAD, eventually, guest_mem_total_mib, pod_helpers

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]

MiB = 1 << 20
FLOOR = 512
RUND_CONFIG = f"[hypervisor]\npreplug_memory_mib = {FLOOR}\n"     # the rund handler's ConfigPath (conftest)


def movable_managed_mib(zoneinfo: str) -> int:
    """The guest's movable zone (where it onlines hotplugged memory) as its page allocator manages it."""
    zone = re.split(r"zone +Movable\n", zoneinfo, maxsplit=1)[1].split("Node", 1)[0]
    return next(int(line.split()[1]) for line in zone.splitlines() if line.split()[:1] == ["managed"]) * 4096 // MiB


def test_a_pod_starts_with_the_preplugged_floor_grows_from_it_and_shrinks_back_to_it_not_below(cri, cri_containerd):
    ctd = cri_containerd
    # The class's template, built before the pod so that its VM is a clone (the shims share the templates dir).
    build = subprocess.run([sys.executable, "-m", "rund.cli", "--config", ctd.rund_config_path, "templates", "build"],
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-2000:]
    config = sandbox_config("floor-pod", log_directory=str(ctd.log_dir / "floor-pod"))
    log_start = ctd.log_path.stat().st_size
    sid = cri.run_pod_sandbox(config, "rund")
    try:
        start, limit = pod_helpers(cri, ctd, sid, config)

        def shim_lines(text: str) -> list[str]:
            with open(ctd.log_path, errors="replace") as f:
                f.seek(log_start)
                return [line for line in f if sid in line and text in line]

        # A container asking less than the floor: the clone came with the floor online, nothing is plugged.
        small = start("small", 64 * MiB)
        assert any("vm=clone" in line for line in shim_lines("trace create")), "the pod's VM was not a clone"
        at_floor = guest_mem_total_mib(cri, small)
        assert at_floor >= BOOT // 2 + FLOOR, at_floor
        zones = cri.exec_sync(small, ["cat", "/proc/zoneinfo"], timeout=60).stdout.decode()
        assert movable_managed_mib(zones) == FLOOR
        assert limit() == BOOT + FLOOR + OVERHEAD
        assert shim_lines("guest memory grown") == []

        # A container asking more grows the VM from the floor to what both ask: 64 + 1024 MiB.
        big = start("big", 1024 * MiB)
        assert guest_mem_total_mib(cri, small) == at_floor - FLOOR + 64 + 1024
        assert limit() == BOOT + 64 + 1024 + OVERHEAD
        assert len(shim_lines("guest memory grown")) == 1

        # It leaves: the VM shrinks back to the floor, not to the 64 MiB the pod still asks.
        cri.stop_container(big, timeout=0)
        cri.remove_container(big)
        eventually(lambda: guest_mem_total_mib(cri, small), at_floor)
        eventually(limit, BOOT + FLOOR + OVERHEAD)
        time.sleep(2)
        assert guest_mem_total_mib(cri, small) == at_floor and limit() == BOOT + FLOOR + OVERHEAD
    finally:
        cri.remove_pod(sid)
