"""A fresh guest CID per VM on hosts with /dev/vhost-vsock (this machine has none).

The CID is reserved in the kernel, not guessed: VHOST_VSOCK_SET_GUEST_CID on our own open
/dev/vhost-vsock fails with EADDRINUSE if any other VM holds the CID, and once it succeeds
nobody else can take it. QEMU receives that fd (vhostfd=) and sets the same CID again, which
the kernel accepts for the same fd. Clones of one template each get their own CID; QEMU's
vhost-vsock tells the restored guest to re-read it (a transport reset event after load).
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import struct
from dataclasses import dataclass
from pathlib import Path

from rund.hypervisor.errors import HypervisorError

VHOST_VSOCK_DEVICE = Path("/dev/vhost-vsock")
VHOST_VSOCK_SET_GUEST_CID = 0x4008AF60  # _IOW(VHOST_VIRTIO=0xAF, 0x60, __u64)
FIRST_GUEST_CID = 3  # 0-2 are reserved (hypervisor, local, host)
LAST_GUEST_CID = 0xFFFFFFFE  # U32_MAX is VMADDR_CID_ANY


class CidUnavailable(HypervisorError):
    """No guest CID could be reserved (no /dev/vhost-vsock, or every try was taken)."""


@dataclass(frozen=True)
class CidReservation:
    """An open /dev/vhost-vsock holding `cid`; hand `fd` to QEMU (VsockChannel.vhost_fd), close it after QEMU exits."""

    fd: int
    cid: int

    def close(self) -> None:
        os.close(self.fd)


def vhost_vsock_available(device: Path = VHOST_VSOCK_DEVICE) -> bool:
    return device.exists()


def reserve_guest_cid(device: Path = VHOST_VSOCK_DEVICE, attempts: int = 64,
                      rng: random.Random | None = None) -> CidReservation:
    """Open the device and claim a random unused CID (random: no shared counter between shims)."""
    rng = rng or random.SystemRandom()
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise CidUnavailable(f"cannot open {device}: {exc.strerror}") from exc
    try:
        for _ in range(attempts):
            cid = rng.randint(FIRST_GUEST_CID, LAST_GUEST_CID)
            try:
                fcntl.ioctl(fd, VHOST_VSOCK_SET_GUEST_CID, struct.pack("=Q", cid))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise CidUnavailable(f"VHOST_VSOCK_SET_GUEST_CID {cid}: {exc.strerror}") from exc
            return CidReservation(fd, cid)
        raise CidUnavailable(f"no free guest CID after {attempts} tries")
    except BaseException:
        os.close(fd)
        raise
