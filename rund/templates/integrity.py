"""Checksums of a template's files when it is published, and the checks before it is used.

Per clone (quick, ~1-2 ms): both files keep the identity they were published with (size, inode, mtime: catches any
write(), truncate or replacement), the state file's full sha256 (a few hundred KB), and `samples` random 1 MiB chunks
of the RAM file (catches in-place changes that bypass mtime, such as a shared mmap, with growing probability over
many clones). Full (~0.2 s per 256 MiB): every chunk; at build time and on demand (`rund templates verify`).
The files are also made read-only when published.
"""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

from rund.templates.digests import sha256_file
from rund.templates.errors import TemplateCorrupt
from rund.templates.manifest import MEMORY_CHUNK_BYTES, FileRecord, Manifest

DEFAULT_SAMPLES = 2


def chunk_digests(path: Path, chunk_bytes: int = MEMORY_CHUNK_BYTES) -> tuple[str, ...]:
    out = []
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            if not block:
                return tuple(out)
            out.append(hashlib.sha256(block).hexdigest())


def record_state(path: Path) -> FileRecord:
    st = os.stat(path)
    return FileRecord(size=st.st_size, mtime_ns=st.st_mtime_ns, ino=st.st_ino, sha256=sha256_file(path))


def record_memory(path: Path) -> FileRecord:
    st = os.stat(path)
    return FileRecord(size=st.st_size, mtime_ns=st.st_mtime_ns, ino=st.st_ino,
                      chunk_bytes=MEMORY_CHUNK_BYTES, chunks=chunk_digests(path))


def _check_identity(path: Path, rec: FileRecord) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TemplateCorrupt(f"{path} is missing") from None
    if st.st_size != rec.size:
        raise TemplateCorrupt(f"{path} is {st.st_size} bytes, the manifest says {rec.size}")
    if st.st_ino != rec.ino or st.st_mtime_ns != rec.mtime_ns:
        raise TemplateCorrupt(f"{path} was modified or replaced after it was published "
                              f"(inode {st.st_ino}/{rec.ino}, mtime_ns {st.st_mtime_ns}/{rec.mtime_ns})")


def _check_chunks(path: Path, rec: FileRecord, indexes: list[int]) -> None:
    with open(path, "rb") as f:
        for i in indexes:
            f.seek(i * rec.chunk_bytes)
            if hashlib.sha256(f.read(rec.chunk_bytes)).hexdigest() != rec.chunks[i]:
                raise TemplateCorrupt(f"{path}: chunk {i} (offset {i * rec.chunk_bytes}) does not match its checksum")


def verify(directory: Path, manifest: Manifest, samples: int | None = DEFAULT_SAMPLES) -> None:
    """Raise TemplateCorrupt with the reason; samples=None checks every RAM chunk."""
    state, memory = directory / "state", directory / "memory"
    _check_identity(state, manifest.state)
    _check_identity(memory, manifest.memory)
    if sha256_file(state) != manifest.state.sha256:
        raise TemplateCorrupt(f"{state}: sha256 does not match the manifest")
    n = len(manifest.memory.chunks)
    indexes = list(range(n)) if samples is None else random.sample(range(n), min(samples, n))
    _check_chunks(memory, manifest.memory, indexes)
