"""Turn Debian's bzImage (vmlinuz) into the uncompressed vmlinux that QEMU boots directly through PVH.

parse_bzimage and has_pvh_entry are pure; extract() runs the host's `lz4` (Debian compresses this kernel with LZ4,
which the Python stdlib cannot decode).
"""

from __future__ import annotations

import struct
import subprocess
from dataclasses import dataclass

from guest import elf
from guest.errors import ElfError, KernelImageError

_HDR_MAGIC = b"HdrS"
_LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
_SHT_NOTE = 7
_XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point QEMU looks for


@dataclass(frozen=True)
class Payload:
    compression: str
    data: bytes  # the compressed stream, without the trailing size word
    uncompressed_size: int


def parse_bzimage(image: bytes) -> Payload:
    if len(image) < 0x250 or image[0x202:0x206] != _HDR_MAGIC:
        raise KernelImageError("not a bzImage (no HdrS header)")
    (version,) = struct.unpack_from("<H", image, 0x206)
    if version < 0x208:
        raise KernelImageError(f"boot protocol {version:#x} has no payload fields")
    setup_sects = image[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    end = start + payload_length
    if end > len(image) or payload_length < 8:
        raise KernelImageError("payload out of bounds")
    payload = image[start:end]
    # The kernel's build appends the uncompressed size (le32) to every compressed payload.
    (size,) = struct.unpack_from("<I", payload, len(payload) - 4)
    if payload.startswith(_LZ4_LEGACY_MAGIC):
        return Payload("lz4", payload[:-4], size)
    raise KernelImageError(f"unsupported kernel compression (magic {payload[:4].hex()})")


def has_pvh_entry(vmlinux: bytes) -> bool:
    try:
        notes = [s for s in elf.sections(vmlinux) if s.type == _SHT_NOTE]
    except ElfError:
        return False
    for sec in notes:
        pos, end = sec.offset, sec.offset + sec.size
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", vmlinux, pos)
            name = vmlinux[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == _XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + _align4(namesz) + _align4(descsz)
    return False


def extract(vmlinuz: bytes) -> bytes:
    """The PVH-bootable vmlinux inside a bzImage; checked for size and the PVH entry note."""
    payload = parse_bzimage(vmlinuz)
    argv = ["lz4", "-dc"]
    proc = subprocess.run(argv, input=payload.data, capture_output=True)
    if proc.returncode != 0:
        raise KernelImageError(f"lz4 -dc failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}")
    out = proc.stdout
    if len(out) != payload.uncompressed_size:
        raise KernelImageError(f"decompressed {len(out)} bytes, header says {payload.uncompressed_size}")
    if not has_pvh_entry(out):
        raise KernelImageError("vmlinux has no PVH entry note (kernel built without CONFIG_PVH?)")
    return out


def _align4(n: int) -> int:
    return (n + 3) & ~3
