"""The sparse, all-zero image that empty rootfs slots are bound to: one per slot size, created once, never changed."""
from __future__ import annotations

import os
from pathlib import Path


def ensure_placeholder(directory: Path, size: int) -> Path:
    path = directory / f"empty-slot-{size}.img"
    if path.exists() and path.stat().st_size == size:
        return path
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{path.name}.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.truncate(size)   # sparse: costs no disk
    os.replace(tmp, path)
    return path
