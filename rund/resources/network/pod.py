"""Attach a pod's CNI network namespace to its VM, and detach it again."""
from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass

from pyroute2 import IPRoute

from . import netns
from .errors import NetworkError
from .redirect import redirect_both_ways, remove_ingress
from .tap import TAP_NAME, open_tap

RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTPROT_KERNEL = 2               # routes the kernel adds for an address: the guest's kernel adds its own
RT_SCOPE_UNIVERSE = 0


@dataclass(frozen=True)
class PodAddress:
    address: str
    prefix_length: int


@dataclass(frozen=True)
class PodRoute:
    destination: str            # "default" or a CIDR
    gateway: str = ""


@dataclass(frozen=True)
class PodNetwork:
    """What the VM's NIC must become: the CNI interface's identity, and the tap fd that carries its frames."""
    tap_fd: int
    interface: str              # the CNI interface's name in the netns (the guest's NIC is eth0 whatever it is)
    mac: str
    mtu: int
    addresses: tuple[PodAddress, ...]
    routes: tuple[PodRoute, ...]


def attach(netns_path: str) -> PodNetwork:
    """Create the pod's tap in its netns and redirect frames both ways between it and the CNI interface."""
    value, fds = netns.run_in(netns_path, _attach_wire)
    try:
        (tap_fd,) = fds
        return PodNetwork(tap_fd, value["interface"], value["mac"], value["mtu"],
                          tuple(PodAddress(**a) for a in value["addresses"]),
                          tuple(PodRoute(**r) for r in value["routes"]))
    except (ValueError, TypeError, KeyError) as e:
        for fd in fds:
            os.close(fd)
        raise NetworkError(f"attaching the pod's network: a bad answer from the netns child: {e}") from None


def detach(netns_path: str) -> None:
    """Remove the redirect (and the tap, if it still exists). A netns already gone (CNI DEL ran) is nothing to do."""
    if not os.path.exists(netns_path):
        return
    try:
        netns.run_in(netns_path, lambda: (_detach(), []))
    except NetworkError:
        pass


def _attach_wire() -> tuple[dict, list[int]]:
    """_attach in the netns child: the PodNetwork as JSON, its tap fd apart (handed over by SCM_RIGHTS)."""
    pod = _attach()
    value = asdict(pod)
    del value["tap_fd"]
    return value, [pod.tap_fd]


def _attach() -> PodNetwork:
    _detach()                                  # a previous shim's leftovers for this pod
    with IPRoute() as ipr:
        index, link = _pod_interface(ipr)
        fd = open_tap()
        try:
            (tap,) = ipr.link_lookup(ifname=TAP_NAME)
            mtu = link.get_attr("IFLA_MTU") or 1500
            ipr.link("set", index=tap, mtu=mtu, state="up")
            redirect_both_ways(ipr, index, tap)
            return PodNetwork(fd, link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_ADDRESS"), mtu,
                              _addresses(ipr, index), _routes(ipr, index))
        except BaseException as e:
            os.close(fd)
            remove_ingress(ipr, index)
            if isinstance(e, NetworkError):
                raise
            raise NetworkError(f"connecting the pod's interface to the VM: {e}") from e


def _detach() -> None:
    with IPRoute() as ipr:
        for link in ipr.get_links():
            if link.get_attr("IFLA_IFNAME") == TAP_NAME:
                ipr.link("del", index=link["index"])
            elif link.get_attr("IFLA_IFNAME") != "lo":
                remove_ingress(ipr, link["index"])


def _pod_interface(ipr: IPRoute):
    """The interface CNI made: the one (not lo, not our tap) with a global address; eth0 if there are several."""
    candidates = []
    for link in ipr.get_links():
        name = link.get_attr("IFLA_IFNAME")
        if name in ("lo", TAP_NAME):
            continue
        if any(a["scope"] == RT_SCOPE_UNIVERSE for a in ipr.get_addr(index=link["index"])):
            candidates.append((link["index"], link))
    if not candidates:
        raise NetworkError("the pod's network namespace has no interface with an address (did CNI run?)")
    if len(candidates) > 1:
        named = [c for c in candidates if c[1].get_attr("IFLA_IFNAME") == "eth0"]
        if len(named) != 1:
            names = sorted(c[1].get_attr("IFLA_IFNAME") for c in candidates)
            raise NetworkError(f"the pod's network namespace has several interfaces ({', '.join(names)}): "
                               f"rund gives the VM one NIC")
        return named[0]
    return candidates[0]


def _addresses(ipr: IPRoute, index: int) -> tuple[PodAddress, ...]:
    return tuple(PodAddress(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index)
                 if a["scope"] == RT_SCOPE_UNIVERSE)


def _routes(ipr: IPRoute, index: int) -> tuple[PodRoute, ...]:
    routes = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for r in ipr.get_routes(family=family, oif=index, table=RT_TABLE_MAIN):
            if r["type"] != RTN_UNICAST or r["proto"] == RTPROT_KERNEL:
                continue
            dst = r.get_attr("RTA_DST")
            routes.append(PodRoute(f"{dst}/{r['dst_len']}" if dst else "default", r.get_attr("RTA_GATEWAY") or ""))
    return tuple(routes)
