"""The hypervisor driver: a VMSpec in, a running VM out (QEMU over QMP).

This layer never imports the agent client or rund.templates; the sandbox hands the agent
client the address a VM exposes (VirtualMachine.agent_address).
"""

from rund.hypervisor.accel import AccelDecision, detect_accel
from rund.hypervisor.argv import build_argv
from rund.hypervisor.base import VirtualMachine
from rund.hypervisor.errors import (
    HypervisorError,
    InvalidSpec,
    MemoryResizeError,
    MigrationError,
    PmemSlotMismatch,
    QMPCommandError,
    QMPConnectionLost,
    VMDied,
    VMNotRunning,
    VMStartError,
    VMTimeout,
)
from rund.hypervisor.layout import pmem_slot_address
from rund.hypervisor.qemu import QemuVM
from rund.hypervisor.spec import (
    Accel,
    AgentAddress,
    AnonymousMemory,
    BlockDevice,
    FileMemory,
    FileShare,
    Machine,
    MemoryHotplug,
    PmemHotplugSlot,
    PmemSlot,
    SerialChannel,
    SerialSocketAddress,
    PodNic,
    TapNetwork,
    VMSpec,
    VsockAddress,
    VsockChannel,
)
from rund.hypervisor.tsc import host_tsc_khz
from rund.hypervisor.vsock import CidReservation, CidUnavailable, reserve_guest_cid

__all__ = [
    "Accel", "AccelDecision", "CidReservation", "CidUnavailable", "AgentAddress", "AnonymousMemory", "BlockDevice", "FileMemory", "FileShare",
    "HypervisorError", "InvalidSpec", "Machine", "MemoryHotplug", "MemoryResizeError",
    "MigrationError", "PmemHotplugSlot", "PmemSlot",
    "PmemSlotMismatch", "QMPCommandError", "QMPConnectionLost", "QemuVM",
    "PodNic", "SerialChannel", "SerialSocketAddress", "TapNetwork", "VMDied", "VMNotRunning", "VMSpec",
    "VMStartError", "VMTimeout", "VirtualMachine", "VsockAddress", "VsockChannel", "build_argv",
    "detect_accel", "host_tsc_khz", "pmem_slot_address", "reserve_guest_cid",
]
