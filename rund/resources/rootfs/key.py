"""The cache key of a layer chain: who its layers are, the slot size and how images are built.

Paths alone are not enough (a deleted snapshot's path could come back with other content), so each layer's device,
inode and ctime go in too: all from the stats the mount parsing already made, nothing read on the hot path.
"""

from __future__ import annotations

import hashlib

from .source import ImageSource

# Bump when the build changes (mkfs flags, padding, layout): old entries are then simply never hit again.
FORMAT_VERSION = "rund-rootfs-1;mkfs.erofs -Enoinline_data --preserve-mtime"


def chain_key(source: ImageSource, slot_bytes: int) -> str:
    digest = hashlib.sha256(f"{FORMAT_VERSION}\0{slot_bytes}\0{int(source.merge)}\n".encode())
    for layer in source.layers:
        digest.update(f"{layer.path}\0{layer.dev}\0{layer.ino}\0{layer.ctime_ns}\n".encode())
    return digest.hexdigest()[:40]
