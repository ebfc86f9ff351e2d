"""Every frame that arrives on one interface leaves by the other: an ingress qdisc and a match-all u32 filter with a
mirred redirect on each side (`tc filter add dev A ingress protocol all u32 match u32 0 0 action mirred egress
redirect dev B`), so the pod's CNI interface and the VM's tap act as one wire.

Multicast only routers listen to is kept out of the VM (keep_router_multicast_out)."""
from __future__ import annotations

import ipaddress

from pyroute2 import IPRoute

ETH_P_ALL = 0x0003
ETH_P_IPV6 = 0x86DD
INGRESS = "ffff:"
PRIORITY = 49152
# IPv6 router solicitations (to ff02::2, all routers) and MLDv2 reports (to ff02::16, all MLDv2 routers). A bridge
# without a multicast querier (CNI's bridge plugin makes none) floods them to every port, and every pod sends them
# as it starts (its CNI interface's stack and its guest: ~14 frames) and keeps soliciting routers with backoff.
# Each frame redirected woke the VM's QEMU (main loop, ~56 us under TCG) to be dropped by virtio-net's filter: at
# 200 pods each idle pod's QEMU woke ~10 times a second while pods were starting. A pod is neither an IPv6 router
# nor a multicast router; one that is (a routing daemon in a VM) needs a runtime class of its own.
ROUTERS_ONLY = ("ff02::2", "ff02::16")
IPV6_DST_OFFSET = 24            # in the IPv6 header, where u32 offsets start on ingress


def redirect_both_ways(ipr: IPRoute, a: int, b: int) -> None:
    for src, dst in ((a, b), (b, a)):
        ipr.tc("add", "ingress", src, INGRESS)
        ipr.tc("add-filter", "u32", src, parent=INGRESS, protocol=ETH_P_ALL, prio=PRIORITY, target=0x1,
               keys=["0x0/0x0+0"],
               action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": dst})


def keep_router_multicast_out(ipr: IPRoute, index: int) -> None:
    """On the interface's ingress (a qdisc redirect_both_ways added), ahead of its redirect: a filter without an
    action for IPv6 packets to each ROUTERS_ONLY group. A match ends the classification, so such a packet skips the
    redirect and goes up the interface's own stack, which drops it (it is no router either). (No `drop` action:
    it needs act_gact, which this host's kernel lacks; mirred is what the redirect needs anyway.)"""
    for n, group in enumerate(ROUTERS_ONLY, start=1):
        ipr.tc("add-filter", "u32", index, parent=INGRESS, protocol=ETH_P_IPV6, prio=PRIORITY - n, target=0x1,
               keys=ipv6_dst_keys(group))


def ipv6_dst_keys(address: str) -> list[str]:
    """u32 keys (pyroute2's value/mask+offset) matching an IPv6 destination address exactly."""
    packed = ipaddress.IPv6Address(address).packed
    return [f"0x{packed[i:i + 4].hex()}/0xffffffff+{IPV6_DST_OFFSET + i}" for i in range(0, 16, 4)]


def remove_ingress(ipr: IPRoute, index: int) -> None:
    """Drop the ingress qdisc (and its filters) of an interface; nothing to do if it has none."""
    try:
        ipr.tc("del", "ingress", index, INGRESS)
    except Exception:   # pyroute2 raises NetlinkError (ENOENT/EINVAL) when there is none
        pass
