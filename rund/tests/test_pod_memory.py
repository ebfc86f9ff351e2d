"""The pod's memory policy (pure) and the order in which the VM and its host bound move (VMMemory)."""
from __future__ import annotations

import asyncio

import pytest

from rund import errors
from rund.config import HypervisorConfig
from rund.runtime import vm_memory
from rund.runtime.pod_memory import MemoryPolicy, PodMemory, memory_limit, sets_memory_limit
from rund.runtime.vm_memory import VMMemory

MiB = 1 << 20
CRI_SANDBOX = {"io.kubernetes.cri.container-type": "sandbox"}
CRI_CONTAINER = {"io.kubernetes.cri.container-type": "container"}


def policy(**kw) -> MemoryPolicy:
    base = dict(boot_bytes=256 * MiB, max_bytes=4096 * MiB, default_container_bytes=512 * MiB,
                overhead_bytes=160 * MiB)
    return MemoryPolicy(**{**base, **kw})


def limit(mib: int) -> dict:
    return {"memory": {"limit": mib * MiB}}


def test_policy_from_config_counts_boot_and_what_the_shape_can_grow_by():
    hv = HypervisorConfig(memory_mib=256, max_memory_mib=2048, default_container_memory_mib=128, vmm_overhead_mib=64)
    p = MemoryPolicy.from_config(hv, hotplug_mib=2048 - 256)
    assert (p.boot_bytes, p.max_bytes, p.default_container_bytes, p.overhead_bytes) == (
        256 * MiB, 2048 * MiB, 128 * MiB, 64 * MiB)
    fixed = MemoryPolicy.from_config(hv, hotplug_mib=0)     # microvm: the boot size, whatever is asked
    assert fixed.hotplug_capacity == 0


def test_a_pod_with_no_containers_is_its_boot_memory():
    plan = PodMemory(policy()).plan()
    assert (plan.wanted_bytes, plan.hotplug_bytes, plan.guest_bytes, plan.capped) == (256 * MiB, 0, 256 * MiB, False)


def test_containers_add_their_limit_and_the_default_without_one():
    pod = PodMemory(policy())
    pod.add("limited", limit(400))
    pod.add("free", None)
    pod.add("unlimited", {"memory": {"limit": -1}})      # OCI's "unlimited" is no limit: the default
    assert pod.plan().hotplug_bytes == (400 + 512 + 512) * MiB
    assert pod.plan().guest_bytes == (256 + 1424) * MiB


def test_cri_sandbox_container_adds_nothing_and_keeps_adding_nothing_after_an_update():
    pod = PodMemory(policy())
    pod.add("pause", limit(1024), CRI_SANDBOX)
    pod.add("app", limit(100), CRI_CONTAINER)
    assert pod.plan().hotplug_bytes == 100 * MiB
    pod.update("pause", limit(900))
    assert pod.plan().hotplug_bytes == 100 * MiB


def test_sizes_round_up_to_the_hotplug_block_and_cap_at_the_maximum():
    pod = PodMemory(policy(max_bytes=1024 * MiB))
    pod.add("odd", {"memory": {"limit": 100 * MiB + 1}})
    assert pod.plan().hotplug_bytes == 102 * MiB
    pod.add("big", limit(2048))
    plan = pod.plan()
    assert (plan.hotplug_bytes, plan.guest_bytes, plan.capped) == (768 * MiB, 1024 * MiB, True)
    assert plan.wanted_bytes == (256 + 100 + 2048) * MiB + 1


def test_update_changes_the_limit_only_when_it_names_one_and_remove_gives_it_back():
    pod = PodMemory(policy())
    pod.add("c", limit(400))
    pod.update("c", {"cpu": {"shares": 512}})             # CPU only: memory as it was
    assert pod.plan().hotplug_bytes == 400 * MiB
    pod.update("c", limit(600))
    assert pod.plan().hotplug_bytes == 600 * MiB
    pod.update("c", {"memory": {"limit": 0}})              # limit lifted: the default headroom
    assert pod.plan().hotplug_bytes == 512 * MiB
    pod.update("unknown", limit(100))
    pod.remove("c")
    pod.remove("c")
    assert pod.plan().hotplug_bytes == 0 and pod.asks() == {}


def test_the_preplugged_floor_is_kept_grown_from_and_never_shrunk_below():
    pod = PodMemory(policy(floor_bytes=512 * MiB))
    assert (pod.plan().hotplug_bytes, pod.plan().guest_bytes) == (512 * MiB, 768 * MiB)   # no container yet
    pod.add("pause", None, CRI_SANDBOX)
    pod.add("small", limit(100))
    assert pod.plan().hotplug_bytes == 512 * MiB and not pod.plan().capped    # asks less: the floor stays
    pod.add("free", None)
    assert pod.plan().hotplug_bytes == (100 + 512) * MiB                      # asks more: grows from the floor
    pod.remove("free")
    pod.remove("small")
    assert pod.plan().hotplug_bytes == 512 * MiB                              # shrinks back to the floor only
    pod.add("big", limit(8192))
    assert (pod.plan().hotplug_bytes, pod.plan().capped) == ((4096 - 256) * MiB, True)


def test_policy_from_config_takes_the_preplugged_floor_within_what_the_vm_can_grow_by():
    hv = HypervisorConfig(memory_mib=256, max_memory_mib=2048)
    assert MemoryPolicy.from_config(hv, hotplug_mib=1792, preplug_mib=512).floor_bytes == 512 * MiB
    assert MemoryPolicy.from_config(hv, hotplug_mib=256, preplug_mib=512).floor_bytes == 256 * MiB
    assert MemoryPolicy.from_config(hv, hotplug_mib=0, preplug_mib=512).floor_bytes == 0     # microvm: no floor
    assert MemoryPolicy.from_config(hv, hotplug_mib=1792).floor_bytes == 0


def test_host_limit_is_the_vm_plus_the_vmm_overhead():
    assert PodMemory(policy()).host_limit(512 * MiB) == (256 + 512 + 160) * MiB


@pytest.mark.parametrize("resources, expected", [
    (None, None), ({}, None), ({"memory": None}, None), ({"memory": {"limit": 0}}, None),
    ({"memory": {"limit": True}}, None), ({"memory": {"limit": "1G"}}, None), ({"memory": "x"}, None),
    ({"memory": {"limit": 5}}, 5),
])
def test_memory_limit_reads_oci_resources(resources, expected):
    assert memory_limit(resources) == expected


def test_sets_memory_limit():
    assert sets_memory_limit({"memory": {"limit": -1}})
    assert not sets_memory_limit({"memory": {"swap": 1}}) and not sets_memory_limit(None)


# ---- VMMemory: the order of the host bound and the guest's size ------------------------------------------------


class RecordingVM:
    """Records the calls VMMemory makes; `unplug_after` polls pass before a shrink shows."""

    def __init__(self, log: list, unplug_after: int = 0):
        self.log = log
        self.plugged = 0
        self.requested = 0
        self.unplug_after = unplug_after
        self._polls = 0

    async def resize_memory(self, hotplug_bytes: int, timeout: float = 10.0) -> int:
        self.log.append(("resize", hotplug_bytes // MiB))
        self.requested = hotplug_bytes
        if hotplug_bytes >= self.plugged:
            self.plugged = hotplug_bytes
        self._polls = 0
        return self.plugged

    async def hotplug_memory(self) -> int:
        self._polls += 1
        if self.requested < self.plugged and self._polls > self.unplug_after:
            self.plugged = self.requested
        return self.plugged


def memory(log: list, vm: RecordingVM, tasks: list, **kw) -> VMMemory:
    async def bound(limit_bytes: int) -> None:
        log.append(("bound", limit_bytes // MiB))

    def spawn(coro, name: str) -> None:
        tasks.append(asyncio.ensure_future(coro))

    return VMMemory("sb", PodMemory(policy(**kw)), vm, bound, spawn)


async def test_grow_raises_the_host_bound_before_the_guest_grows_and_shrink_lowers_it_after(monkeypatch):
    monkeypatch.setattr(vm_memory, "SETTLE_POLL", 0.001)
    log, tasks = [], []
    vm = RecordingVM(log, unplug_after=3)
    m = memory(log, vm, tasks)
    m.pod.add("c", limit(400))
    await m.fit()
    assert log == [("bound", 256 + 400 + 160), ("resize", 400)]
    assert m.guest_bytes == 656 * MiB
    log.clear()
    m.pod.remove("c")
    await m.fit()
    assert log == [("resize", 0)]                      # the bound waits for the guest
    await asyncio.gather(*tasks)
    assert log == [("resize", 0), ("bound", 256 + 160)]


async def test_an_unchanged_plan_touches_nothing_and_a_fixed_vm_never_resizes():
    log, tasks = [], []
    m = memory(log, RecordingVM(log), tasks)
    await m.fit()
    assert log == []
    fixed = memory(log, RecordingVM(log), tasks, max_bytes=256 * MiB)
    fixed.pod.add("c", limit(400))
    await fixed.fit()
    assert log == [] and tasks == []


async def test_set_guest_memory_checks_block_and_range():
    log, tasks = [], []
    m = memory(log, RecordingVM(log), tasks)
    await m.set_guest_memory(768 * MiB)
    assert log == [("bound", 768 + 160), ("resize", 512)]
    for bad in (255 * MiB, 4098 * MiB, 769 * MiB):
        with pytest.raises(errors.InvalidArgument):
            await m.set_guest_memory(bad)


async def test_a_vm_starts_at_its_floor_grows_from_it_and_shrinks_back_to_it_not_below(monkeypatch):
    monkeypatch.setattr(vm_memory, "SETTLE_POLL", 0.001)
    log, tasks = [], []
    vm = RecordingVM(log, unplug_after=2)
    vm.plugged = vm.requested = 512 * MiB             # the clone restored with the floor plugged
    m = memory(log, vm, tasks, floor_bytes=512 * MiB)
    assert m.guest_bytes == 768 * MiB
    m.pod.add("pause", None, CRI_SANDBOX)
    m.pod.add("app", None)                            # the default headroom: what the template holds already
    await m.fit()
    m.pod.add("small", limit(100))
    m.pod.remove("small")
    await m.fit()
    assert log == [] and tasks == []                  # no plug, no unplug, the bound as set at start
    m.pod.add("big", limit(1024))
    await m.fit()
    assert log == [("bound", 256 + 512 + 1024 + 160), ("resize", 1536)]
    log.clear()
    m.pod.remove("big")
    await m.fit()
    await asyncio.gather(*tasks)
    assert log == [("resize", 512), ("bound", 256 + 512 + 160)]
    assert vm.plugged == 512 * MiB and m.guest_bytes == 768 * MiB
    with pytest.raises(errors.InvalidArgument):
        await m.set_guest_memory(512 * MiB)           # below boot + floor
