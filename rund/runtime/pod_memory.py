"""How much memory a pod's VM should have, from its containers (pure: no I/O).

The VM boots with `memory_mib` (the guest kernel, the agent, the pod's base). Each container adds its memory limit
(OCI linux.resources.memory.limit), as Kata does; a container without one adds a default headroom. CRI's sandbox
(pause) container adds nothing: the base covers it, and what the pod's containers ask for comes with them. The sum
is capped at `max_memory_mib`, and rounded up to the hotplug block. What the VM's template saved plugged (the
pre-plugged headroom, `preplug_memory_mib`) is a floor: a pod asking less keeps it (unplugging costs 0.7-2.3 s of
guest CPU under TCG, holding memory the guest never touched costs the host nothing), a pod asking more grows from
it, and a shrink stops at it. The VMM's host cgroup is bounded at the VM's memory plus the VMM's own overhead, so a
pod cannot take the host's memory.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rund.config import MEMORY_BLOCK_MIB, HypervisorConfig

MiB = 1 << 20
# The annotation that marks a pod's sandbox (pause) container: containerd's CRI, CRI-O.
SANDBOX_TYPE_ANNOTATIONS = {"io.kubernetes.cri.container-type": "sandbox",
                            "io.kubernetes.cri-o.ContainerType": "sandbox"}


@dataclass(frozen=True)
class MemoryPolicy:
    boot_bytes: int                  # the VM's boot memory
    max_bytes: int                   # boot + what it may grow by (boot: the VM cannot grow)
    default_container_bytes: int     # what a container without a memory limit adds
    overhead_bytes: int              # the VMM's own memory, on top of the guest's, in its host cgroup's bound
    block_bytes: int = MEMORY_BLOCK_MIB * MiB
    floor_bytes: int = 0             # hotplug memory the VM holds from its start (pre-plugged): never given back

    @classmethod
    def from_config(cls, hv: HypervisorConfig, hotplug_mib: int, preplug_mib: int = 0) -> MemoryPolicy:
        """hotplug_mib: what the VM's shape can grow by (0 on a machine without memory hotplug); preplug_mib: what
        of it the VM starts with (the shape's memory_preplug_mib)."""
        return cls(boot_bytes=hv.memory_mib * MiB, max_bytes=(hv.memory_mib + hotplug_mib) * MiB,
                   default_container_bytes=hv.default_container_memory_mib * MiB,
                   overhead_bytes=hv.vmm_overhead_mib * MiB, floor_bytes=min(preplug_mib, hotplug_mib) * MiB)

    @property
    def hotplug_capacity(self) -> int:
        return self.max_bytes - self.boot_bytes


@dataclass(frozen=True)
class MemoryPlan:
    wanted_bytes: int                # boot + what the containers ask, uncapped
    hotplug_bytes: int               # what the VM should hold on top of its boot memory
    guest_bytes: int                 # boot + hotplug

    @property
    def capped(self) -> bool:
        return self.wanted_bytes > self.guest_bytes


def memory_limit(resources: Mapping[str, Any] | None) -> int | None:
    """An OCI linux.resources' memory limit; None when unset or unlimited (0, -1)."""
    memory = (resources or {}).get("memory") or {}
    limit = memory.get("limit") if isinstance(memory, Mapping) else None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        return None
    return limit


def sets_memory_limit(resources: Mapping[str, Any] | None) -> bool:
    """Whether an update names the memory limit at all (an update of the CPU alone leaves memory as it is)."""
    memory = (resources or {}).get("memory")
    return isinstance(memory, Mapping) and "limit" in memory


def is_pod_sandbox(annotations: Mapping[str, Any] | None) -> bool:
    return any((annotations or {}).get(k) == v for k, v in SANDBOX_TYPE_ANNOTATIONS.items())


class PodMemory:
    """What each container of a pod asks of its VM's memory."""

    def __init__(self, policy: MemoryPolicy):
        self.policy = policy
        self._asks: dict[str, int] = {}
        self._sandboxes: set[str] = set()

    def add(self, container_id: str, resources: Mapping[str, Any] | None,
            annotations: Mapping[str, Any] | None = None) -> None:
        if is_pod_sandbox(annotations):
            self._sandboxes.add(container_id)
            self._asks[container_id] = 0
        else:
            self._asks[container_id] = self._ask(resources)

    def update(self, container_id: str, resources: Mapping[str, Any] | None) -> None:
        """A new memory limit (UpdateContainerResources); the pod sandbox's stays nothing."""
        if container_id in self._asks and container_id not in self._sandboxes and sets_memory_limit(resources):
            self._asks[container_id] = self._ask(resources)

    def remove(self, container_id: str) -> None:
        self._asks.pop(container_id, None)
        self._sandboxes.discard(container_id)

    def asks(self) -> dict[str, int]:
        return dict(self._asks)

    def plan(self) -> MemoryPlan:
        p = self.policy
        wanted = p.boot_bytes + sum(self._asks.values())
        hotplug = max(min(_round_up(wanted - p.boot_bytes, p.block_bytes), p.hotplug_capacity), p.floor_bytes)
        return MemoryPlan(wanted, hotplug, p.boot_bytes + hotplug)

    def host_limit(self, hotplug_bytes: int) -> int:
        """The bound of the VMM's host cgroup while the guest holds `hotplug_bytes` of hotplug memory."""
        return self.policy.boot_bytes + hotplug_bytes + self.policy.overhead_bytes

    def _ask(self, resources: Mapping[str, Any] | None) -> int:
        limit = memory_limit(resources)
        return self.policy.default_container_bytes if limit is None else limit


def _round_up(value: int, align: int) -> int:
    return -(-value // align) * align
