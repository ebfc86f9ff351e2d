"""manifest.json of a template: its key and inputs, and checksums of its two files.

The RAM file is hashed in 1 MiB chunks so that a clone can spot-check a few random chunks in about a millisecond,
while a full check (all chunks, ~0.2 s for 256 MiB) runs at build time and on `rund templates verify`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from rund.templates.errors import TemplateCorrupt

MANIFEST_FORMAT = 1
MEMORY_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class FileRecord:
    """A file as it was published: identity (any write or replace changes it) and content checksum(s)."""
    size: int
    mtime_ns: int
    ino: int
    sha256: str = ""                        # whole file (the state: small, checked on every clone)
    chunk_bytes: int = 0                    # chunked (the RAM file)
    chunks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    key: str
    inputs: dict
    created_unix: float
    state: FileRecord
    memory: FileRecord
    build: dict = field(default_factory=dict)   # timings and notes of the build, for people
    format: int = MANIFEST_FORMAT

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "Manifest":
        try:
            raw = json.loads(data)
            if raw.get("format") != MANIFEST_FORMAT:
                raise TemplateCorrupt(f"{where}: manifest format {raw.get('format')!r}, expected {MANIFEST_FORMAT}")
            files = {}
            for name in ("state", "memory"):
                rec = dict(raw[name])
                rec["chunks"] = tuple(rec.get("chunks", ()))
                files[name] = FileRecord(**rec)
            manifest = cls(key=raw["key"], inputs=raw["inputs"], created_unix=float(raw["created_unix"]),
                           build=raw.get("build", {}), **files)
        except TemplateCorrupt:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise TemplateCorrupt(f"{where}: unreadable manifest: {e!r}") from e
        if not isinstance(manifest.key, str) or not isinstance(manifest.inputs, dict):
            raise TemplateCorrupt(f"{where}: manifest key/inputs have the wrong type")
        mem = manifest.memory
        if mem.chunk_bytes <= 0 or len(mem.chunks) != -(-mem.size // mem.chunk_bytes):
            raise TemplateCorrupt(f"{where}: memory chunk list does not cover {mem.size} bytes")
        return manifest
