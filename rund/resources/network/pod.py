"""Attach a pod's CNI network namespace to its VM, and detach it again."""
from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass

from pyroute2 import IPRoute

from . import netns
from .errors import NetworkError
from .redirect import keep_router_multicast_out, redirect_both_ways, remove_ingress
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
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise NetworkError(f"attaching the pod's network: the netns child sent {len(fds)} fds, not the tap's")
    return _pod_network(fds[0], value, fds)


def _pod_network(tap_fd: int, value: dict, fds: list[int]) -> PodNetwork:
    try:
        return PodNetwork(tap_fd, value["interface"], value["mac"], value["mtu"],
                          tuple(PodAddress(**a) for a in value["addresses"]),
                          tuple(PodRoute(**r) for r in value["routes"]))
    except (ValueError, TypeError, KeyError) as e:
        for fd in fds:
            os.close(fd)
        raise NetworkError(f"attaching the pod's network: a bad answer from the netns child: {e}") from None


def inspect(netns_path: str) -> PodNetwork:
    """The CNI interface's identity, nothing changed (tap_fd -1): what the guest's NIC takes, known before the
    spare VM's tap is moved in and wired (attach_moved), so the two can run side by side."""
    value, fds = netns.run_in(netns_path, _inspect_wire)
    for fd in fds:
        os.close(fd)
    return _pod_network(-1, value, [])


def _inspect_wire() -> tuple[dict, list[int]]:
    with IPRoute() as ipr:
        index, link = _pod_interface(ipr)
        return _answer(_identity(ipr, index, link, -1))


def _identity(ipr: IPRoute, index: int, link, tap_fd: int) -> PodNetwork:
    return PodNetwork(tap_fd, link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_ADDRESS"),
                      link.get_attr("IFLA_MTU") or 1500, _addresses(ipr, index), _routes(ipr, index))


def attach_moved(netns_path: str, source_netns: str, tap_name: str) -> PodNetwork:
    """Like attach(), with a tap that already exists in `source_netns` (a spare VM's, its QEMU holding the only fd):
    moved into the pod's netns, renamed to ours and wired the same way. The PodNetwork's tap_fd is -1."""
    value, fds = netns.run_in(source_netns, lambda: _move_and_attach(tap_name, netns_path))
    for fd in fds:
        os.close(fd)
    return _pod_network(-1, value, [])


def _move_and_attach(tap_name: str, netns_path: str) -> tuple[dict, list[int]]:
    """In one netns child (one fork, not two): move the tap from here to the pod's netns, follow it, wire it."""
    _move(tap_name, netns_path)
    netns.join(netns_path)
    return _attach_wire(tap_name)


def _move(tap_name: str, netns_path: str) -> None:
    target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=tap_name)
            if not found:
                raise NetworkError(f"the spare VM's tap {tap_name} is not in its keeper's network namespace")
            ipr.link("set", index=found[0], net_ns_fd=target)
    except NetworkError:
        raise
    except Exception as e:  # noqa: BLE001 - netlink's errors, named
        raise NetworkError(f"moving the spare VM's tap {tap_name} into the pod's netns: {e}") from e
    finally:
        os.close(target)


def detach(netns_path: str) -> None:
    """Remove the redirect (and the tap, if it still exists). A netns already gone (CNI DEL ran) is nothing to do."""
    if not os.path.exists(netns_path):
        return
    try:
        netns.run_in(netns_path, lambda: (_detach(), []))
    except NetworkError:
        pass


def _attach_wire(moved: str = "") -> tuple[dict, list[int]]:
    return _answer(_attach(moved))


def _answer(pod: PodNetwork) -> tuple[dict, list[int]]:
    """A netns child's answer: the PodNetwork as JSON, its tap fd apart (handed over by SCM_RIGHTS), if any."""
    value = asdict(pod)
    del value["tap_fd"]
    return value, [pod.tap_fd] if pod.tap_fd >= 0 else []


def _attach(moved: str = "") -> PodNetwork:
    """moved: the name of a tap attach_moved brought into this netns, used instead of a new one."""
    _detach()                                  # a previous shim's leftovers for this pod
    with IPRoute() as ipr:
        index, link = _pod_interface(ipr)
        if moved:
            fd = -1
            found = ipr.link_lookup(ifname=moved)
            if not found:
                raise NetworkError(f"the spare VM's tap {moved} did not arrive in the pod's netns")
            ipr.link("set", index=found[0], ifname=TAP_NAME)
        else:
            fd = open_tap()
        try:
            (tap,) = ipr.link_lookup(ifname=TAP_NAME)
            pod = _identity(ipr, index, link, fd)
            ipr.link("set", index=tap, mtu=pod.mtu, state="up")
            redirect_both_ways(ipr, index, tap)
            keep_router_multicast_out(ipr, index)
            _stop_router_solicitations(pod.interface)
            return pod
        except BaseException as e:
            if fd >= 0:
                os.close(fd)
            remove_ingress(ipr, index)
            if isinstance(e, NetworkError):
                raise
            raise NetworkError(f"connecting the pod's interface to the VM: {e}") from e


def _stop_router_solicitations(interface: str) -> None:
    """The CNI interface's own IPv6 stack keeps soliciting routers (with backoff, for as long as it is up) though
    nothing here uses it any more: the guest owns the pod's traffic. One frame less flooded to every pod now and
    then; the guest keeps its own settings, as a runc pod's interface would."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{interface}/router_solicitations", "w") as f:
            f.write("0")
    except FileNotFoundError:       # no IPv6 in this netns
        pass


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
