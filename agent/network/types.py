"""Network identity as the agent applies it (validated, packed where the kernel wants bytes)."""
import socket
from typing import NamedTuple

from ..errors import InvalidArgument


class IPAddress(NamedTuple):
    address: str
    prefix_length: int

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET

    def packed(self) -> bytes:
        return socket.inet_pton(self.family, self.address)


class Interface(NamedTuple):
    name: str
    mac: str = ""
    mtu: int = 0
    addresses: tuple[IPAddress, ...] = ()


class Route(NamedTuple):
    destination: str = ""  # CIDR; "" or "default" for the default route
    gateway: str = ""
    device: str = ""

    @property
    def is_default(self) -> bool:
        return self.destination in ("", "default")


class NetworkConfig(NamedTuple):
    interfaces: tuple[Interface, ...] = ()
    routes: tuple[Route, ...] = ()
    dns_servers: tuple[str, ...] = ()
    dns_searches: tuple[str, ...] = ()


def mac_bytes(mac: str, field: str) -> bytes:
    parts = mac.split(":")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raw = b""
    if len(parts) != 6 or len(raw) != 6 or any(len(p) != 2 for p in parts):
        raise InvalidArgument(field, f"not a MAC address: {mac!r}")
    return raw


def _check_ip(address: str, field: str) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        socket.inet_pton(family, address)
    except OSError:
        raise InvalidArgument(field, f"not an IP address: {address!r}") from None
    return family


def validate(config: NetworkConfig, field: str = "network") -> NetworkConfig:
    """InvalidArgument naming the first bad field; returns `config` unchanged."""
    names = set()
    for i, iface in enumerate(config.interfaces):
        f = f"{field}.interfaces[{i}]"
        if not iface.name or len(iface.name) > 15 or "/" in iface.name:
            raise InvalidArgument(f"{f}.name", f"not an interface name: {iface.name!r}")
        names.add(iface.name)
        if iface.mac:
            mac_bytes(iface.mac, f"{f}.mac")
        if iface.mtu and not 68 <= iface.mtu <= 65535:
            raise InvalidArgument(f"{f}.mtu", f"must be 68..65535, got {iface.mtu}")
        for j, addr in enumerate(iface.addresses):
            family = _check_ip(addr.address, f"{f}.addresses[{j}].address")
            limit = 32 if family == socket.AF_INET else 128
            if not 0 <= addr.prefix_length <= limit:
                raise InvalidArgument(f"{f}.addresses[{j}].prefix_length", f"must be 0..{limit}")
    for i, route in enumerate(config.routes):
        f = f"{field}.routes[{i}]"
        if not route.is_default:
            address, _, prefix = route.destination.partition("/")
            family = _check_ip(address, f"{f}.destination")
            if not prefix.isdigit() or int(prefix) > (32 if family == socket.AF_INET else 128):
                raise InvalidArgument(f"{f}.destination", f"not a CIDR: {route.destination!r}")
        if route.gateway:
            _check_ip(route.gateway, f"{f}.gateway")
        if not route.gateway and not route.device:
            raise InvalidArgument(f, "needs a gateway or a device")
    for i, server in enumerate(config.dns_servers):
        _check_ip(server, f"{field}.dns_servers[{i}]")
    for i, search in enumerate(config.dns_searches):
        if not search or any(c.isspace() for c in search):
            raise InvalidArgument(f"{field}.dns_searches[{i}]", f"not a domain: {search!r}")
    return config


def resolv_conf(config: NetworkConfig) -> str:
    lines = [f"nameserver {s}" for s in config.dns_servers]
    if config.dns_searches:
        lines.append("search " + " ".join(config.dns_searches))
    return "".join(line + "\n" for line in lines)
