"""The runtime's own check of pmem slot sizes, because QEMU does not check them.

A backing file smaller than the slot is refused by QEMU; a larger one, or a clone whose slot
size differs from its template's, is accepted silently and the guest reads zeros past the real
end (measured). So every image must be exactly its slot's size: pad images to the slot size.

A hotplugged image is not in any template, so its device need not fill its slot: it maps only the part of the
image its erofs superblock counts, in 2 MiB steps (mapped_size). What that saves the guest is per device byte: the
pmem driver gives every 4 KiB of a DAX device a 64-byte struct page, allocated, zeroed and initialised at probe
time in guest RAM (8 MiB for a 512 MiB slot, a private copy on the host for every clone), and the probe and the
first mount walk all of it.
"""

from __future__ import annotations

import os
from pathlib import Path

from rund.hypervisor.errors import PmemSlotMismatch
from rund.hypervisor.spec import PmemSlot


def check_pmem_images(slots: tuple[PmemSlot, ...]) -> None:
    for slot in slots:
        try:
            actual = os.stat(slot.image).st_size
        except OSError as exc:
            raise PmemSlotMismatch(f"pmem image {slot.image}: {exc.strerror}") from exc
        if actual != slot.size:
            raise PmemSlotMismatch(
                f"pmem image {slot.image} is {actual} bytes; its slot is {slot.size} bytes (pad it to the slot size)"
            )


EROFS_SUPERBLOCK_OFFSET = 1024
EROFS_MAGIC = 0xE0F5E1E2
MAPPING_STEP = 2 << 20      # the guest maps device memory in 2 MiB subsections


def mapped_size(image: Path, slot_size: int) -> int:
    """How much of a hotplugged slot's image the device maps: an erofs image's length (the superblock's block count
    times its block size) rounded up to 2 MiB, at most the slot; the whole slot for anything else."""
    try:
        with open(image, "rb") as f:
            f.seek(EROFS_SUPERBLOCK_OFFSET)
            sb = f.read(40)
    except OSError:
        return slot_size
    if len(sb) < 40 or int.from_bytes(sb[0:4], "little") != EROFS_MAGIC:
        return slot_size
    length = int.from_bytes(sb[36:40], "little") << sb[12]     # blocks << blkszbits
    return min(slot_size, max(MAPPING_STEP, -(-length // MAPPING_STEP) * MAPPING_STEP))
