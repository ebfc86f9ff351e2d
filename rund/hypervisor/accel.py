"""Which accelerator can run a standard guest here: KVM if /dev/kvm really can, else TCG.

"/dev/kvm exists" is not enough. A PVM host (module kvm_pvm, no kvm_intel/kvm_amd) has a
/dev/kvm that answers every ioctl, even KVM_CREATE_VM, yet a standard guest kernel hangs under
it. So the decision needs the hardware-virtualization CPU flag and a vendor module as well.
"""

from __future__ import annotations

import enum
import fcntl
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from rund.hypervisor.spec import Accel

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12
VENDOR_MODULES = ("kvm_intel", "kvm_amd")
PVM_MODULE = "kvm_pvm"


class Reason(enum.Enum):
    USABLE = "usable"
    NO_DEVICE = "no /dev/kvm"
    NOT_OPENABLE = "/dev/kvm cannot be opened read-write"
    BAD_API = "unexpected KVM API version"
    PVM_ONLY = "/dev/kvm is PVM-only (kvm_pvm without kvm_intel/kvm_amd)"
    NO_VENDOR_MODULE = "no kvm_intel or kvm_amd module"
    NO_HW_VIRT = "CPU has no vmx/svm flag"
    CREATE_VM_FAILED = "KVM_CREATE_VM failed"


@dataclass(frozen=True)
class KvmFacts:
    """What the host says about KVM; gathered by probe_kvm(), judged by decide()."""

    device_exists: bool
    device_openable: bool
    api_version: int | None
    create_vm_ok: bool
    modules: frozenset[str]
    cpu_flags: frozenset[str]


@dataclass(frozen=True)
class AccelDecision:
    accel: Accel
    reason: Reason


def decide(facts: KvmFacts) -> AccelDecision:
    """Pure: KVM only when every fact says a standard guest can run under it."""

    def tcg(reason: Reason) -> AccelDecision:
        return AccelDecision(Accel.TCG, reason)

    if not facts.device_exists:
        return tcg(Reason.NO_DEVICE)
    if not facts.device_openable:
        return tcg(Reason.NOT_OPENABLE)
    if facts.api_version != KVM_API_VERSION:
        return tcg(Reason.BAD_API)
    vendor = facts.modules & set(VENDOR_MODULES)
    if not vendor:
        return tcg(Reason.PVM_ONLY if PVM_MODULE in facts.modules else Reason.NO_VENDOR_MODULE)
    if not facts.cpu_flags & {"vmx", "svm"}:
        return tcg(Reason.NO_HW_VIRT)
    if not facts.create_vm_ok:
        return tcg(Reason.CREATE_VM_FAILED)
    return AccelDecision(Accel.KVM, Reason.USABLE)


def probe_kvm(dev: Path = Path("/dev/kvm"), sys_module: Path = Path("/sys/module"),
              cpuinfo: Path = Path("/proc/cpuinfo")) -> KvmFacts:
    modules = frozenset(m for m in (*VENDOR_MODULES, PVM_MODULE) if (sys_module / m).exists())
    flags = _cpu_flags(cpuinfo)
    if not dev.exists():
        return KvmFacts(False, False, None, False, modules, flags)
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return KvmFacts(True, False, None, False, modules, flags)
    try:
        api = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        try:
            os.close(fcntl.ioctl(fd, KVM_CREATE_VM, 0))
            create_ok = True
        except OSError:
            create_ok = False
    finally:
        os.close(fd)
    return KvmFacts(True, True, api, create_ok, modules, flags)


def _cpu_flags(cpuinfo: Path) -> frozenset[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@functools.cache
def detect_accel() -> AccelDecision:
    """The host's answer, probed once per process (modules do not come and go under a running shim)."""
    return decide(probe_kvm())
