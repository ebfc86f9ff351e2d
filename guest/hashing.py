"""Content hashes for the build key and the manifest (paths and bytes only, never mtimes)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_sha256(root: Path, files: Iterable[Path]) -> str:
    """One hash over (relative path, content) of files under root, independent of listing order and mtimes."""
    h = hashlib.sha256()
    for rel in sorted(str(Path(f).relative_to(root)) for f in files):
        h.update(rel.encode() + b"\0")
        h.update(bytes.fromhex(file_sha256(root / rel)))
    return h.hexdigest()
