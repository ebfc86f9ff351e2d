"""A template's key: the hash of everything it is built from. Change any input and the key (so the template) changes.

Inputs: the content of the guest kernel, initrd and OS image (the image carries the agent, so its version too), the
QEMU binary's content (its version decides the migration format), rund's version (the host side of PostRestore),
every SandboxShape field that reaches the VM, virtio-serial's port count (hypervisor.spec.AGENT_MAX_PORTS), whether
the template was warmed, and the store's format version.
Not an input: the TCG translation buffer size (tb_size_mib). It is QEMU's own cache of translated code, neither guest
state nor in the migration stream, so a runtime class with a small buffer clones the same template as one with a
large buffer (measured: a clone with tb-size 4 of a template saved with 16 runs its containers).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import rund
from rund.errors import FailedPrecondition
from rund.hypervisor import spec as hvspec
from rund.hypervisor.qemu import QEMU_BINARY
from rund.templates.digests import DigestCache
from rund.templates.shape import SandboxShape

FORMAT_VERSION = 1
KEY_HEX_CHARS = 24


@dataclass(frozen=True)
class TemplateKey:
    key: str          # hex, names the template's directory
    inputs: dict      # what went into it, recorded in the manifest (JSON-ready)


def shape_inputs(shape: SandboxShape) -> dict:
    """The shape's fields that make a saved VM differ (the QEMU binary counts by its content, see template_key)."""
    return {
        "machine": shape.machine.value, "accel": shape.accel.value, "vcpus": shape.vcpus,
        "memory_mib": shape.memory_mib, "cmdline": shape.cmdline(),
        "image_bytes": shape.image_bytes, "rootfs_slots": shape.rootfs_slots,
        "rootfs_slot_bytes": shape.rootfs_slot_bytes, "rootfs_hotplug_slots": shape.rootfs_hotplug_slots,
        "memory_hotplug_mib": shape.memory_hotplug_mib, "memory_preplug_mib": shape.memory_preplug_mib,
        "nic": shape.nic, "share": shape.share,
        "disk_hotplug_slots": shape.disk_hotplug_slots,
        "tsc_khz": shape.tsc_khz,
        "agent_max_ports": hvspec.AGENT_MAX_PORTS,   # not a shape field: the same for every shape, fixed in argv
        "key_extra": [repr(x) for x in shape.key_extra],
    }


def qemu_binary_path(binary: str | Path = QEMU_BINARY) -> Path:
    found = shutil.which(str(binary))
    if found is None:
        raise FailedPrecondition(f"QEMU binary {binary} not found on PATH")
    return Path(found).resolve()


def template_key(shape: SandboxShape, digests: DigestCache, warm: bool) -> TemplateKey:
    inputs = {
        "format": FORMAT_VERSION,
        "rund": rund.__version__,
        "qemu_sha256": digests.sha256(qemu_binary_path(shape.qemu_binary)),
        "kernel_sha256": digests.sha256(shape.kernel),
        "initrd_sha256": digests.sha256(shape.initrd),
        "image_sha256": digests.sha256(shape.image),
        "shape": shape_inputs(shape),
        "warm": warm,
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return TemplateKey(hashlib.sha256(canonical).hexdigest()[:KEY_HEX_CHARS], inputs)
