"""Cheap and thorough checks that a cache entry is an intact erofs image of the right size."""

from __future__ import annotations

import hashlib
import os

SUPERBLOCK_OFFSET = 1024
MAGIC = (0xE0F5E1E2).to_bytes(4, "little")


def quick_problem(path: str, slot_bytes: int) -> str | None:
    """Why the image at `path` is unusable, or None. Three syscalls past the open: fstat, pread, close.

    Raises FileNotFoundError when there is no image.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size != slot_bytes:
            return f"size {size} is not the slot size {slot_bytes}"
        magic = os.pread(fd, len(MAGIC), SUPERBLOCK_OFFSET)
        if magic != MAGIC:
            return f"no erofs magic at offset {SUPERBLOCK_OFFSET} (found {magic.hex() or 'nothing'})"
    finally:
        os.close(fd)
    return None


def digest(path: str, length: int) -> str:
    """sha256 of the first `length` bytes (the image before its padding)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = length
        while remaining > 0:
            chunk = f.read(min(1 << 20, remaining))
            if not chunk:
                break
            h.update(chunk)
            remaining -= len(chunk)
    return h.hexdigest()
