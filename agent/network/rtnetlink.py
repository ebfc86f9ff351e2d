"""rtnetlink messages for links, addresses and routes: encoding and decoding only, no I/O."""
import socket
import struct

NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300

IFLA_ADDRESS = 1
IFLA_MTU = 4
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5

IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1

HEADER = struct.Struct("=IHHII")      # nlmsghdr: len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")   # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")   # family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTATTR = struct.Struct("=HH")


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, value: bytes) -> bytes:
    length = RTATTR.size + len(value)
    return RTATTR.pack(length, kind) + value + b"\0" * (_align(length) - length)


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return HEADER.pack(HEADER.size + len(body), kind, flags, seq, 0) + body


def set_link(seq: int, index: int, up: bool | None = None, mac: bytes = b"", mtu: int = 0) -> bytes:
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)
    if mac:
        body += attr(IFLA_ADDRESS, mac)
    if mtu:
        body += attr(IFLA_MTU, struct.pack("=I", mtu))
    return message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, body)


IFA_F_NODAD = 0x02


def address(seq: int, add: bool, index: int, family: int, prefix: int, packed: bytes, scope: int = 0,
            flags: int = 0) -> bytes:
    body = IFADDRMSG.pack(family, prefix, flags, scope, index) + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
    if add:
        return message(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq, body)
    return message(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, seq, body)


def dump_addresses(seq: int) -> bytes:
    return message(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))


def route(seq: int, family: int, dst: bytes, dst_len: int, gateway: bytes, oif: int) -> bytes:
    scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
    body = RTMSG.pack(family, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope, RTN_UNICAST, 0)
    if dst_len:
        body += attr(RTA_DST, dst)
    if gateway:
        body += attr(RTA_GATEWAY, gateway)
    if oif:
        body += attr(RTA_OIF, struct.pack("=i", oif))
    return message(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq, body)


def split(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """One datagram -> [(type, flags, seq, payload)]."""
    messages, offset = [], 0
    while offset + HEADER.size <= len(data):
        length, kind, flags, seq, _pid = HEADER.unpack_from(data, offset)
        if length < HEADER.size:
            break
        messages.append((kind, flags, seq, data[offset + HEADER.size:offset + length]))
        offset += _align(length)
    return messages


def error_code(payload: bytes) -> int:
    """An NLMSG_ERROR payload's errno (0 is the ACK)."""
    return -struct.unpack_from("=i", payload)[0]


def attributes(payload: bytes, offset: int) -> dict[int, bytes]:
    attrs = {}
    while offset + RTATTR.size <= len(payload):
        length, kind = RTATTR.unpack_from(payload, offset)
        if length < RTATTR.size:
            break
        attrs[kind] = payload[offset + RTATTR.size:offset + length]
        offset += _align(length)
    return attrs


def parse_address(payload: bytes) -> tuple[int, int, int, int, bytes]:
    """RTM_NEWADDR -> (family, prefix length, scope, interface index, local address)."""
    family, prefix, _flags, scope, index = IFADDRMSG.unpack_from(payload)
    attrs = attributes(payload, IFADDRMSG.size)
    return family, prefix, scope, index, attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS, b"")
