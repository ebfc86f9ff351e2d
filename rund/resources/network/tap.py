"""A tap device in the calling thread's network namespace, as an open fd for QEMU (`-netdev tap,fd=N`). It is not
persistent: it goes away when the last fd to it closes (QEMU's, once the VM ends)."""
from __future__ import annotations

import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000          # no packet-info header; no vnet header either (see hypervisor PodNic)
TAP_NAME = "tap0_rund"


def open_tap(name: str = TAP_NAME) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except BaseException:
        os.close(fd)
        raise
    return fd
