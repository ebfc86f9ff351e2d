"""Just enough ELF64 (little-endian) reading for the build: named sections and DT_NEEDED. No I/O."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from guest.errors import ElfError

_MAGIC = b"\x7fELF"
_SHT_DYNAMIC = 6
_DT_NEEDED = 1


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    offset: int
    size: int
    link: int


def sections(data: bytes) -> list[Section]:
    if len(data) < 64 or data[:4] != _MAGIC:
        raise ElfError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError("only 64-bit little-endian ELF is supported")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shoff == 0 or shnum == 0:
        return []
    if shoff + shnum * shentsize > len(data) or shstrndx >= shnum:
        raise ElfError("section header table out of bounds")
    raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_off = raw[shstrndx][4]
    out = []
    for name_idx, sh_type, _flags, _addr, offset, size, link, _info, _align, _entsize in raw:
        out.append(Section(_cstr(data, names_off + name_idx), sh_type, offset, size, link))
    return out


def section_bytes(data: bytes, name: str) -> bytes | None:
    for s in sections(data):
        if s.name == name:
            return data[s.offset : s.offset + s.size]
    return None


def needed_libraries(data: bytes) -> list[str]:
    """The DT_NEEDED sonames of a dynamically linked ELF, in order ([] for a static one)."""
    secs = sections(data)
    for s in secs:
        if s.type != _SHT_DYNAMIC:
            continue
        strtab = secs[s.link]
        needed = []
        for pos in range(s.offset, s.offset + s.size, 16):
            tag, val = struct.unpack_from("<qQ", data, pos)
            if tag == 0:
                break
            if tag == _DT_NEEDED:
                needed.append(_cstr(data, strtab.offset + val))
        return needed
    return []


def is_elf(data: bytes) -> bool:
    return data[:4] == _MAGIC


def _cstr(data: bytes, offset: int) -> str:
    end = data.find(b"\0", offset)
    if end < 0:
        raise ElfError("unterminated string")
    return data[offset:end].decode()
