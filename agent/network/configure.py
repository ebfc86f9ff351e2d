"""Apply a NetworkConfig to this (network) namespace over an rtnetlink socket."""
import fcntl
import os
import socket
import struct

from ..errors import InvalidArgument, SetupFailed
from . import rtnetlink as rt
from .types import Interface, NetworkConfig, Route, mac_bytes, resolv_conf

SIOCGIFFLAGS = 0x8913
IFF_UP = 1
# name -> index of the interfaces the agent found at its start (warm_links): the VM's NICs, which nothing renames, so
# a clone's PostRestore checks its network's names without a socket and an ioctl each (~10 ms in a TCG guest).
_known_index: dict[str, int] = {}
# Interfaces whose IPv6 duplicate address detection is off already (_skip_dad): warm_links turns it off for the NICs
# it warms, so a template's clones inherit the setting with the interface and skip the sysctl write (opening
# /proc/sys/net/ipv6/conf/<nic>/accept_dad alone cost a clone's network job ~12 ms of its 60-130 ms, TCG).
_dad_off: set[str] = set()


class Rtnl:
    """A NETLINK_ROUTE socket doing one request at a time (kernel answers in microseconds)."""

    def __init__(self):
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def request(self, data: bytes, what: str) -> None:
        """Send one ACKed request; OSError(errno) if the kernel refused it."""
        self._sock.send(data)
        seq = rt.HEADER.unpack_from(data)[3]
        while True:
            for kind, _flags, got_seq, payload in rt.split(self._sock.recv(65536)):
                if kind == rt.NLMSG_ERROR and got_seq == seq:
                    code = rt.error_code(payload)
                    if code:
                        raise OSError(code, f"{what}: {os.strerror(code)}")
                    return

    def dump(self, data: bytes) -> list[bytes]:
        self._sock.send(data)
        payloads = []
        while True:
            for kind, _flags, _seq, payload in rt.split(self._sock.recv(1 << 16)):
                if kind == rt.NLMSG_DONE:
                    return payloads
                if kind == rt.NLMSG_ERROR:
                    code = rt.error_code(payload)
                    raise OSError(code, os.strerror(code))
                payloads.append(payload)


def warm_links() -> list[str]:
    """Bring every interface of this network namespace that is down (but lo) up and down again, before a template
    is saved: opening a virtio NIC fills its receive ring and attaches its queueing discipline, which then stay for
    the next up, so a clone's network identity (apply(): down, MAC, addresses, up) costs it less guest time.
    Addresses, MAC and state are as before (down, nothing assigned; IPv6 link-local addresses go with the down and
    come from the MAC at the next up). Returns the names it warmed; an error leaves that interface alone (it is
    only a cost). Measured through CRI (TCG, A/B of guest images with and without it, 16 pods each): the shim's
    container create + start p50 520 -> 455 ms, RunPodSandbox unchanged. It also turns off IPv6 duplicate address
    detection on them (_skip_dad), as apply() would: a NIC is configured for a pod only, before anything else
    uses it."""
    warmed = []
    rtnl = None
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        for index, name in sorted(socket.if_nameindex(), key=lambda entry: entry[1]):
            _known_index[name] = index
            if name == "lo":
                continue
            try:
                request = struct.pack("16sH", name.encode(), 0).ljust(40, b"\0")
                flags = struct.unpack_from("H", fcntl.ioctl(probe, SIOCGIFFLAGS, request), 16)[0]
                if flags & IFF_UP:
                    continue                        # in use already
                try:
                    _skip_dad(name)
                except OSError:
                    pass                            # apply() tries again
                rtnl = rtnl or Rtnl()
                rtnl.request(rt.set_link(rtnl.next_seq(), index, up=True), f"{name} up")
                rtnl.request(rt.set_link(rtnl.next_seq(), index, up=False), f"{name} down")
                warmed.append(name)
            except OSError:
                continue
    finally:
        probe.close()
        if rtnl is not None:
            rtnl.close()
    return warmed


def check(config: NetworkConfig) -> None:
    """What apply() can tell before it changes anything: every interface it names exists."""
    for i, iface in enumerate(config.interfaces):
        _index(iface.name, f"network.interfaces[{i}].name")
    for i, r in enumerate(config.routes):
        if r.device:
            _index(r.device, f"network.routes[{i}].device")


def apply(config: NetworkConfig, resolv_conf_path: str | None) -> None:
    rtnl = Rtnl()
    try:
        for i, iface in enumerate(config.interfaces):
            _configure_interface(rtnl, iface, f"network.interfaces[{i}]")
        for i, r in enumerate(config.routes):
            _add_route(rtnl, r, f"network.routes[{i}]")
    finally:
        rtnl.close()
    if resolv_conf_path and (config.dns_servers or config.dns_searches):
        os.makedirs(os.path.dirname(resolv_conf_path), exist_ok=True)
        tmp = resolv_conf_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(resolv_conf(config))
        os.replace(tmp, resolv_conf_path)


def _index(name: str, field: str) -> int:
    if name in _known_index:
        return _known_index[name]
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise InvalidArgument(field, f"no interface {name!r} in the guest") from None


def _configure_interface(rtnl: Rtnl, iface: Interface, field: str) -> None:
    index = _index(iface.name, f"{field}.name")
    try:
        # Down first: not every driver takes a new MAC while up.
        rtnl.request(rt.set_link(rtnl.next_seq(), index, up=False), f"{iface.name} down")
        if iface.mac or iface.mtu:
            mac = mac_bytes(iface.mac, f"{field}.mac") if iface.mac else b""
            rtnl.request(rt.set_link(rtnl.next_seq(), index, mac=mac, mtu=iface.mtu), f"{iface.name} mac/mtu")
        existing = map(rt.parse_address, rtnl.dump(rt.dump_addresses(rtnl.next_seq())))
        for family, prefix, scope, owner, packed in existing:
            if owner == index and scope != rt.RT_SCOPE_LINK:
                rtnl.request(rt.address(rtnl.next_seq(), False, index, family, prefix, packed, scope),
                             f"{iface.name} flush")
        for j, addr in enumerate(iface.addresses):
            nodad = rt.IFA_F_NODAD if addr.family == socket.AF_INET6 else 0     # see _skip_dad
            rtnl.request(rt.address(rtnl.next_seq(), True, index, addr.family, addr.prefix_length, addr.packed(),
                                    flags=nodad), f"{field}.addresses[{j}]")
        _skip_dad(iface.name)
        rtnl.request(rt.set_link(rtnl.next_seq(), index, up=True), f"{iface.name} up")
    except OSError as exc:
        raise SetupFailed(f"configuring {iface.name}", str(exc)) from None


def _skip_dad(name: str) -> None:
    """No IPv6 duplicate address detection on a pod interface (its link-local address here; CNI's addresses are
    added with IFA_F_NODAD): its addresses and MAC are CNI's, already checked on
    the pod's network, and CNI hands them over settled. With it, each address stays tentative for ~1 s after the up
    (not usable as a source: a container's first IPv6 connection hung) and the first neighbour solicitations wait.
    Once per interface (_dad_off): the setting stays with the interface."""
    if name in _dad_off:
        return
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/accept_dad", "w") as f:
            f.write("0")
    except FileNotFoundError:       # IPv6 off in this guest: nothing to detect
        pass
    _dad_off.add(name)


def _add_route(rtnl: Rtnl, r: Route, field: str) -> None:
    if r.is_default:
        family = socket.AF_INET6 if ":" in r.gateway else socket.AF_INET
        dst, dst_len = b"", 0
    else:
        address, _, prefix = r.destination.partition("/")
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        dst, dst_len = socket.inet_pton(family, address), int(prefix)
    gateway = socket.inet_pton(family, r.gateway) if r.gateway else b""
    oif = _index(r.device, f"{field}.device") if r.device else 0
    try:
        rtnl.request(rt.route(rtnl.next_seq(), family, dst, dst_len, gateway, oif), field)
    except OSError as exc:
        raise InvalidArgument(field, str(exc)) from None
