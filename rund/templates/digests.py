"""Content hashes of large input files (kernel, guest image, QEMU), computed once and cached by file identity.

Hashing the ~100 MB of inputs costs ~0.1 s; a shim starts per pod, so the result is kept in a small JSON file next
to the templates, keyed by path and valid while (device, inode, size, mtime_ns) are unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from rund.atomicfile import write_atomic

CHUNK = 1 << 20


def sha256_file(path: Path, offset: int = 0, length: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left is None or left > 0:
            block = f.read(CHUNK if left is None else min(CHUNK, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h.hexdigest()


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


class DigestCache:
    """sha256 of files, remembered in `cache_file` across processes (last writer wins; every write is whole)."""

    def __init__(self, cache_file: Path | None):
        self.cache_file = cache_file
        self._entries: dict[str, dict] | None = None

    def _load(self) -> dict[str, dict]:
        if self._entries is None:
            self._entries = {}
            if self.cache_file is not None:
                try:
                    loaded = json.loads(self.cache_file.read_text())
                    if isinstance(loaded, dict):
                        self._entries = loaded
                except (OSError, ValueError):
                    pass   # a missing or damaged cache only costs a re-hash
        return self._entries

    def sha256(self, path: Path) -> str:
        real = os.path.realpath(path)
        identity = _identity(os.stat(real))
        entries = self._load()
        entry = entries.get(real)
        if isinstance(entry, dict) and entry.get("identity") == identity and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
        digest = sha256_file(Path(real))
        entries[real] = {"identity": identity, "sha256": digest}
        if self.cache_file is not None:
            try:
                write_atomic(self.cache_file, json.dumps(entries, sort_keys=True).encode())
            except OSError:
                pass   # read-only or full: hashing again next time is correct, only slower
        return digest
