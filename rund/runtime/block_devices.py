"""Raw block devices of a pod's containers (OCI `linux.devices` of type b: Kubernetes' volumeDevices, `ctr run
--device`): the host device a spec names by major:minor is hot-plugged into the VM as a virtio-blk disk (q35: one
empty PCIe root port per disk, shape.disk_hotplug_slots) and the agent points the container's device node and its
cgroup rule at the disk the guest saw, found by its serial (agent/container/block_devices.py). A device that several
containers of the pod use is plugged once, and unplugged when the last of them goes.

Read-only when the spec's device rules (linux.resources.devices: CRI's permissions) grant no write to it: the disk
itself is then read-only in QEMU, whatever the guest does.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

from rund.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

log = logging.getLogger("rund.runtime.block_devices")

ANNOTATION = "io.rund.block-devices"        # {"<host major>:<host minor>": "<serial>"}, read by the agent


@dataclass(frozen=True)
class BlockRequest:
    major: int
    minor: int
    readonly: bool
    destination: str                          # the container's path, for messages

    @property
    def key(self) -> str:
        return f"{self.major}:{self.minor}"

    @property
    def serial(self) -> str:                  # at most 20 bytes (virtio-blk)
        return f"rund-{self.major}-{self.minor}"[:20]


def block_requests(spec: dict) -> tuple[BlockRequest, ...]:
    """The spec's block devices; annotates the spec with their serials for the agent (in place)."""
    linux = spec.get("linux") if isinstance(spec.get("linux"), dict) else {}
    found = []
    for i, device in enumerate(linux.get("devices") or []):
        if not isinstance(device, dict) or device.get("type") != "b":
            continue
        major, minor = device.get("major"), device.get("minor")
        if not isinstance(major, int) or not isinstance(minor, int) or major < 0 or minor < 0:
            raise InvalidArgument(f"linux.devices[{i}]: a block device needs its major and minor numbers")
        found.append(BlockRequest(major, minor, not _writable(linux, major, minor), str(device.get("path", ""))))
    if found:
        annotations = spec.get("annotations") if isinstance(spec.get("annotations"), dict) else {}
        spec["annotations"] = {**annotations, ANNOTATION: json.dumps({r.key: r.serial for r in found})}
    return tuple(found)


def _writable(linux: dict, major: int, minor: int) -> bool:
    """Whether the device rules, applied in order as the cgroup does, leave write access to major:minor (no rules:
    writable, as a spec without a device policy is)."""
    rules = ((linux.get("resources") or {}).get("devices") or []) if isinstance(linux.get("resources"), dict) else []
    writable = not rules
    for rule in rules:
        if not isinstance(rule, dict) or rule.get("type", "a") not in ("a", "b") or "w" not in rule.get("access", "rwm"):
            continue
        if rule.get("major", -1) not in (None, -1, major) or rule.get("minor", -1) not in (None, -1, minor):
            continue
        writable = bool(rule.get("allow"))
    return writable


def host_device(major: int, minor: int) -> Path:
    """/dev/<name> of the host block device major:minor (from sysfs: the node's own name, not a guess)."""
    try:
        uevent = Path(f"/sys/dev/block/{major}:{minor}/uevent").read_text()
    except OSError:
        raise InvalidArgument(f"no host block device {major}:{minor}") from None
    name = next((line.split("=", 1)[1] for line in uevent.splitlines() if line.startswith("DEVNAME=")), "")
    if not name or ".." in name.split("/"):
        raise InvalidArgument(f"host block device {major}:{minor} has no device node name")
    return Path("/dev") / name


Plug = Callable[[int, Path, str, bool], Awaitable[None]]
Unplug = Callable[[int], Awaitable[None]]


class PodDisks:
    """Which slot holds which host device, and which containers use it."""

    def __init__(self, slots: int, machine: str):
        self._slots: list[BlockRequest | None] = [None] * slots
        self._users: dict[str, set[str]] = {}          # request key -> container ids
        self._machine = machine

    async def attach(self, container_id: str, requests: tuple[BlockRequest, ...] | list[BlockRequest],
                     plug: Plug) -> None:
        try:
            for request in requests:
                if request.key in self._users:
                    self._users[request.key].add(container_id)
                    continue
                index = self._free_slot(request)
                path = host_device(request.major, request.minor)
                await plug(index, path, request.serial, request.readonly)
                self._slots[index] = request
                self._users[request.key] = {container_id}
                log.info("container %s: host block device %s (%s) is disk slot %d%s", container_id, request.key,
                         path, index, " (read-only)" if request.readonly else "")
        except BaseException:
            for request in requests:
                self._users.get(request.key, set()).discard(container_id)
            raise

    async def detach(self, container_id: str, unplug: Unplug) -> None:
        """Forget the container and unplug the disks no container of the pod uses any more."""
        for index in self.release(container_id):
            try:
                await unplug(index)
            except Exception as e:      # noqa: BLE001 - a dead VM or a guest holding on: the slot stays taken
                self._slots[index] = BlockRequest(-1, index, True, "(not released by the guest)")
                log.warning("container %s: unplugging disk slot %d: %s", container_id, index, e)

    def release(self, container_id: str) -> list[int]:
        """Forget the container; the slots whose device no container uses any more (the caller unplugs them)."""
        freed = []
        for index, request in enumerate(self._slots):
            if request is None:
                continue
            users = self._users.get(request.key, set())
            users.discard(container_id)
            if not users:
                self._users.pop(request.key, None)
                self._slots[index] = None
                freed.append(index)
        return freed

    def _free_slot(self, request: BlockRequest) -> int:
        if not self._slots:
            raise FailedPrecondition(f"block device {request.destination} ({request.key}): the {self._machine} "
                                     f"machine cannot add disks to a running VM (use q35)")
        for index, held in enumerate(self._slots):
            if held is None:
                return index
        raise ResourceExhausted(f"block device {request.destination} ({request.key}): all {len(self._slots)} disk "
                                f"slots of the pod's VM are in use")
