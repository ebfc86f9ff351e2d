"""The pod VM's memory, kept at what its containers ask (pod_memory.py), with the VMM's host cgroup bound along.

Order keeps the VMM inside its bound at every moment: to grow, the host bound is raised before the guest is asked
for more; to shrink, the guest is asked to unplug first and the bound is lowered once it has (in the background:
unplugging takes 0.7-2.3 s under TCG, and a container's delete should not wait for it). A guest that cannot unplug
everything keeps what it holds inside the bound; it retries on its own and the next resize settles again. The VM
starts with its policy's floor plugged (its template saved it so, a cold boot plugs it while booting), and is never
asked for less.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Protocol

from rund import errors
from rund.hypervisor import HypervisorError
from rund.runtime.pod_memory import PodMemory

log = logging.getLogger("rund.runtime.memory")

GROW_TIMEOUT = 10.0      # measured: +2 GiB in 0.18 s under TCG
SETTLE_TIMEOUT = 30.0    # measured: -2 GiB in 0.7-2.3 s under TCG
SETTLE_POLL = 0.05
MiB = 1 << 20


class HotplugVM(Protocol):
    async def resize_memory(self, hotplug_bytes: int, timeout: float = ...) -> int: ...

    async def hotplug_memory(self) -> int: ...


Bound = Callable[[int], Awaitable[None]]     # sets the VMM's host cgroup memory limit, in bytes
Spawn = Callable[[Awaitable[None], str], None]


class VMMemory:
    def __init__(self, name: str, pod: PodMemory, vm: HotplugVM, bound: Bound, spawn: Spawn):
        self.name = name
        self.pod = pod
        self._vm = vm
        self._bound = bound
        self._spawn = spawn
        self._target = pod.policy.floor_bytes   # hotplug bytes asked of the guest: at start, the pre-plugged floor
        self._lock = asyncio.Lock()
        self._settling = False
        self._capped_warned = False

    @property
    def guest_bytes(self) -> int:
        """What the VM was last asked to hold: boot memory plus hotplug memory."""
        return self.pod.policy.boot_bytes + self._target

    async def fit(self) -> None:
        """Grow or shrink the VM to what the pod's containers ask now."""
        plan = self.pod.plan()
        if plan.capped and not self._capped_warned:
            self._capped_warned = True
            log.warning("sandbox %s: its containers ask %d MiB of guest memory, more than the VM can have (%d MiB: "
                        "hypervisor.max_memory_mib, or the boot size on a machine without memory hotplug)",
                        self.name, plan.wanted_bytes // MiB, plan.guest_bytes // MiB)
        await self._set(lambda: self.pod.plan().hotplug_bytes)   # planned again under the lock: the latest wins

    async def set_guest_memory(self, guest_bytes: int) -> None:
        """Hold `guest_bytes` of guest memory in all (boot + hotplug, a multiple of the hotplug block, not below
        the boot memory plus the pre-plugged floor)."""
        p = self.pod.policy
        hotplug = guest_bytes - p.boot_bytes
        if not p.floor_bytes <= hotplug <= p.hotplug_capacity or hotplug % p.block_bytes:
            raise errors.InvalidArgument(
                f"sandbox {self.name}: guest memory of {guest_bytes} bytes: must be a multiple of {p.block_bytes} "
                f"in [{p.boot_bytes + p.floor_bytes}, {p.max_bytes}]")
        await self._set(lambda: hotplug)

    async def _set(self, target: Callable[[], int]) -> None:
        if self.pod.policy.hotplug_capacity == 0:
            return
        async with self._lock:
            hotplug = target()
            if hotplug > self._target:
                await self._bound(self.pod.host_limit(hotplug))
                self._target = hotplug
                t0 = time.monotonic()
                plugged = await self._call(self._vm.resize_memory(hotplug, timeout=GROW_TIMEOUT))
                log.info("sandbox %s: guest memory grown to %d MiB in %.3f s", self.name,
                         (self.pod.policy.boot_bytes + plugged) // MiB, time.monotonic() - t0)
                if plugged < hotplug:
                    log.warning("sandbox %s: the guest plugged %d MiB of the %d MiB asked within %s s", self.name,
                                plugged // MiB, hotplug // MiB, GROW_TIMEOUT)
            elif hotplug < self._target:
                self._target = hotplug
                await self._call(self._vm.resize_memory(hotplug, timeout=0))
                if not self._settling:
                    self._settling = True
                    self._spawn(self._settle(), "memory-settle")

    async def _settle(self) -> None:
        """Lower the host bound once the guest has unplugged down to its target (or gave up trying for now)."""
        try:
            t0 = time.monotonic()
            while True:
                plugged = await self._vm.hotplug_memory()
                if plugged <= self._target or time.monotonic() - t0 > SETTLE_TIMEOUT:
                    break
                await asyncio.sleep(SETTLE_POLL)
            async with self._lock:
                self._settling = False
                plugged = await self._vm.hotplug_memory()
                if plugged > self._target:
                    log.warning("sandbox %s: the guest still holds %d MiB of hotplug memory after %s s (asked: "
                                "%d MiB); it keeps trying", self.name, plugged // MiB, SETTLE_TIMEOUT,
                                self._target // MiB)
                else:
                    log.info("sandbox %s: guest memory shrunk to %d MiB in %.3f s", self.name,
                             (self.pod.policy.boot_bytes + plugged) // MiB, time.monotonic() - t0)
                await self._bound(self.pod.host_limit(max(plugged, self._target)))
        except HypervisorError as e:         # the VM went away: nothing left to bound
            self._settling = False
            log.debug("sandbox %s: memory settle ended: %s", self.name, e)

    async def _call(self, aw: Awaitable[int]) -> int:
        try:
            return await aw
        except HypervisorError as e:
            raise errors.Unavailable(f"sandbox {self.name}: resizing guest memory: {e}") from e
