"""The runtime's own check of pmem slot sizes, because QEMU does not check them.

A backing file smaller than the slot is refused by QEMU; a larger one, or a clone whose slot
size differs from its template's, is accepted silently and the guest reads zeros past the real
end (measured). So every image must be exactly its slot's size: pad images to the slot size.
"""

from __future__ import annotations

import os

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
