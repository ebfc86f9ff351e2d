"""bzImage payload parsing and the PVH note check (on ELF files built by the host's gcc)."""

from __future__ import annotations

import struct
import subprocess

import pytest

from guest.errors import KernelImageError
from guest.vmlinux import has_pvh_entry, parse_bzimage

NOTE_ASM = """
.pushsection .note.Xen, "a", @note
.long 4
.long 8
.long {type}
.asciz "Xen"
.quad 0x1000000
.popsection
"""


def _elf_with_xen_note(tmp_path, note_type):
    src = tmp_path / f"n{note_type}.s"
    src.write_text(NOTE_ASM.format(type=note_type))
    out = tmp_path / f"n{note_type}.o"
    subprocess.run(["gcc", "-c", "-o", str(out), str(src)], check=True)
    return out.read_bytes()


def test_pvh_entry_note_is_found(tmp_path):
    assert has_pvh_entry(_elf_with_xen_note(tmp_path, 18))


def test_other_xen_notes_are_not_a_pvh_entry(tmp_path):
    assert not has_pvh_entry(_elf_with_xen_note(tmp_path, 6))
    assert not has_pvh_entry(b"not an elf" * 10)


def _bzimage(payload: bytes, setup_sects=3) -> bytes:
    img = bytearray((setup_sects + 1) * 512)
    img[0x1F1] = setup_sects
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x206, 0x20F)
    struct.pack_into("<II", img, 0x248, 16, len(payload))
    return bytes(img) + b"\0" * 16 + payload


def test_lz4_payload_and_its_size_word():
    payload = b"\x02\x21\x4c\x18" + b"data" + struct.pack("<I", 12345)
    p = parse_bzimage(_bzimage(payload))
    assert (p.compression, p.data, p.uncompressed_size) == ("lz4", payload[:-4], 12345)


def test_unknown_compression_and_non_bzimages_are_errors():
    with pytest.raises(KernelImageError, match="compression"):
        parse_bzimage(_bzimage(b"\x1f\x8b\x08\x00" + b"x" * 8))
    with pytest.raises(KernelImageError, match="HdrS"):
        parse_bzimage(b"\0" * 4096)
    with pytest.raises(KernelImageError, match="bounds"):
        parse_bzimage(_bzimage(b"\x02\x21\x4c\x18" * 4)[:-8])
