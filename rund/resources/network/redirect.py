"""Every frame that arrives on one interface leaves by the other: an ingress qdisc and a match-all u32 filter with a
mirred redirect on each side (`tc filter add dev A ingress protocol all u32 match u32 0 0 action mirred egress
redirect dev B`), so the pod's CNI interface and the VM's tap act as one wire."""
from __future__ import annotations

from pyroute2 import IPRoute

ETH_P_ALL = 0x0003
INGRESS = "ffff:"
PRIORITY = 49152


def redirect_both_ways(ipr: IPRoute, a: int, b: int) -> None:
    for src, dst in ((a, b), (b, a)):
        ipr.tc("add", "ingress", src, INGRESS)
        ipr.tc("add-filter", "u32", src, parent=INGRESS, protocol=ETH_P_ALL, prio=PRIORITY, target=0x1,
               keys=["0x0/0x0+0"],
               action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": dst})


def remove_ingress(ipr: IPRoute, index: int) -> None:
    """Drop the ingress qdisc (and its filters) of an interface; nothing to do if it has none."""
    try:
        ipr.tc("del", "ingress", index, INGRESS)
    except Exception:   # pyroute2 raises NetlinkError (ENOENT/EINVAL) when there is none
        pass
