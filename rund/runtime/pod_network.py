"""The pod's network for its VM: the CNI netns a sandbox spec names, attached to the VM's NIC (a tap with a tc
redirect each way, rund/resources/network), and the identity the guest gives its eth0 (the CNI interface's MAC,
MTU, every address, its routes). DNS comes with CRI's resolv.conf, copied like any small host file."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass

from rund.agent import Interface, IPAddress, NetworkConfig, Route
from rund.resources.network import PodNetwork, attach, attach_moved, detach, inspect

log = logging.getLogger("rund.runtime.network")

GUEST_NIC = "eth0"      # the VM's one virtio-net NIC, whatever CNI named the pod's interface


def netns_path(spec: dict) -> str:
    """The network namespace CRI (CNI) prepared for the pod, named by path in the sandbox spec; "" for none."""
    linux = spec.get("linux")
    for ns in (linux.get("namespaces") or []) if isinstance(linux, dict) else []:
        if isinstance(ns, dict) and ns.get("type") == "network" and isinstance(ns.get("path"), str):
            return ns["path"]
    return ""


@dataclass
class AttachedNetwork:
    netns: str
    tap_fd: int | None
    config: NetworkConfig

    def close_tap(self) -> None:
        """QEMU holds its own copy once started: the shim's goes (the tap then lives as long as the VM)."""
        if self.tap_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.tap_fd)
            self.tap_fd = None

    async def detach(self) -> None:
        self.close_tap()
        await asyncio.to_thread(detach, self.netns)


async def attach_pod(netns: str, moved_tap: tuple[str, str] | None = None) -> AttachedNetwork:
    """moved_tap: (netns path, name) of a spare VM's tap to move in and use instead of a new one."""
    if moved_tap is not None:
        pod = await asyncio.to_thread(attach_moved, netns, *moved_tap)
    else:
        pod = await asyncio.to_thread(attach, netns)
    log.info("pod network %s: %s %s mtu %d, %s", netns, pod.interface, pod.mac, pod.mtu,
             " ".join(f"{a.address}/{a.prefix_length}" for a in pod.addresses))
    return AttachedNetwork(netns, pod.tap_fd if pod.tap_fd >= 0 else None, guest_network(pod))


async def inspect_pod(netns: str) -> NetworkConfig:
    """What the guest's NIC must become, read without wiring anything (a spare VM's tap is moved and wired
    alongside its adoption: attach_pod with moved_tap)."""
    return guest_network(await asyncio.to_thread(inspect, netns))


def guest_network(pod: PodNetwork) -> NetworkConfig:
    return NetworkConfig(
        interfaces=(Interface(GUEST_NIC, pod.mac, pod.mtu,
                              tuple(IPAddress(a.address, a.prefix_length) for a in pod.addresses)),),
        routes=tuple(Route(r.destination, r.gateway, GUEST_NIC) for r in pod.routes))
