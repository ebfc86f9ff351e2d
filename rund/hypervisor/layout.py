"""Guest-physical layout of the q35 machine that QEMU 7.2 uses; pure arithmetic, no I/O.

pmem slots must sit at addresses pinned on the command line: QEMU does not migrate `memaddr`
and reassigns it first-fit on every start, so a clone with a differently sized slot would shift
the slots after it (measured, reference/qemu-on-this-machine.md, addendum).
"""

from __future__ import annotations

MiB = 1 << 20
GiB = 1 << 30

# pmem slot alignment: 2 MiB keeps slots section-friendly for the guest's nd_pmem/DAX mapping.
PMEM_ALIGN = 2 * MiB
# One slot per GiB of device memory, as measured; a slot may therefore be at most 1 GiB.
PMEM_SLOT_STRIDE = 1 * GiB


def round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def q35_device_memory_base(memory_bytes: int) -> int:
    """First guest-physical address of the q35 hotplug/device-memory region (pc_q35_init + pc_memory_init in QEMU 7.2)."""
    lowmem = 0x80000000 if memory_bytes >= 0xB0000000 else 0xB0000000
    above_4g = memory_bytes - lowmem if memory_bytes >= lowmem else 0
    return round_up(4 * GiB + above_4g, 1 * GiB)


def pmem_slot_address(memory_mib: int, index: int) -> int:
    """The pinned guest address of pmem slot `index` for a q35 VM with `memory_mib` of RAM."""
    if index < 0:
        raise ValueError(f"pmem slot index must be >= 0, got {index}")
    return q35_device_memory_base(memory_mib * MiB) + index * PMEM_SLOT_STRIDE


def q35_maxmem_bytes(memory_mib: int, slots: list[tuple[int, int]]) -> int:
    """The smallest `maxmem` that holds every (memaddr, size) slot.

    QEMU needs maxmem - ram >= the sum of device sizes, and the device region, which is
    maxmem - ram + 1 GiB per declared slot long, must reach the end of the highest slot.
    """
    ram = memory_mib * MiB
    if not slots:
        return ram
    base = q35_device_memory_base(ram)
    total = sum(size for _, size in slots)
    span = max(addr + size for addr, size in slots) - base - len(slots) * GiB
    return ram + round_up(max(total, span), PMEM_ALIGN)
