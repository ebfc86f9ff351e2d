"""Credit host entropy to the kernel RNG and force a CRNG reseed (as guest/reseed.c does)."""
import fcntl
import os
import struct

RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207      # _IO('R', 0x07)


def rand_pool_info(entropy: bytes) -> bytes:
    """struct rand_pool_info: entropy_count (bits), buf_size (bytes), then the bytes."""
    return struct.pack("ii", len(entropy) * 8, len(entropy)) + entropy


def add_entropy_and_reseed(entropy: bytes, device: str = "/dev/random") -> None:
    fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if entropy:
            fcntl.ioctl(fd, RNDADDENTROPY, rand_pool_info(entropy))
        fcntl.ioctl(fd, RNDRESEEDCRNG)
    finally:
        os.close(fd)
