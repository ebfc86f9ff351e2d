"""RootfsSlots: which guest device holds each container's rootfs, the one place that answers it.

Images come from the rootfs cache (one erofs per layer chain, pinned per container). The first container's image is
bound to a fixed slot when the VM starts (a clone binds it at restore: no hotplug on the start path). A later
container of the pod shares an image already in the VM (a read-only base; each container gets its own writable upper
in the guest), or its image is hotplugged into a free hotplug slot (q35). QEMU cannot unplug a virtio-pmem device
("virtio based memory devices cannot be unplugged", QEMU 7.2), so a hotplug slot keeps its image until the VM ends;
the image stays usable by later containers of the pod.

It is handed the VM's hotplug call once the VM runs, never the sandbox.
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

from rund import errors
from rund.resources.rootfs import RootfsCache, RootfsImage, SnapshotMount
from rund.runtime.task_runtime import Mount

Plug = Callable[[int, Path], Awaitable[None]]     # (hotplug slot index, image) -> bound in the running VM


def owner_of(namespace: str, container_id: str) -> str:
    """The rootfs cache pin owner of a container (no '/': it names a file)."""
    return f"{namespace}:{container_id}"


def snapshot_mounts(mounts: tuple[Mount, ...], bundle: str) -> list[SnapshotMount]:
    if mounts:
        return [SnapshotMount(m.type, m.source, tuple(m.options)) for m in mounts]
    # No snapshot mounts: the client prepared <bundle>/rootfs itself (`ctr run --rootfs`, or a static bundle).
    rootfs = os.path.join(bundle, "rootfs")
    if not os.path.isdir(rootfs) or not os.listdir(rootfs):
        raise errors.InvalidArgument(f"no rootfs: neither rootfs mounts nor a populated {rootfs}")
    return [SnapshotMount("bind", rootfs, ("rbind", "ro"))]


@dataclass(frozen=True)
class SlotLayout:
    """The VM's rootfs slots: fixed ones bound at launch, then hotplug ones, and each slot's guest device."""
    fixed: int
    hotplug: int
    device: Callable[[int], str]       # slot index (fixed first, then hotplug) -> guest device path


class RootfsSlots:
    def __init__(self, cache: RootfsCache):
        self._cache = cache
        self._layout = SlotLayout(0, 0, str)
        self._devices: list[str] = []                # guest device of each slot in use, by slot index
        self._images: list[Path] = []                # the image in each slot in use, same order
        self._held: dict[str, tuple[RootfsImage, str]] = {}   # container id -> (pinned image, pin owner)
        self._plug: Plug | None = None
        self._plugged = 0                            # images hotplugged since launch (fixed slots may stay empty)

    async def acquire(self, container_id: str, owner: str, mounts: tuple[Mount, ...], bundle: str) -> Path:
        """Pin the container's image in the cache (an image already pinned for it is returned again)."""
        held = self._held.get(container_id)
        if held is None:
            image = await asyncio.to_thread(self._cache.acquire, snapshot_mounts(mounts, bundle), owner)
            self._held[container_id] = held = (image, owner)
        return held[0].path

    def launched(self, layout: SlotLayout, images: tuple[Path, ...], devices: tuple[str, ...],
                 plug: Plug | None, taken: int = 0) -> None:
        """The VM runs with `images` bound to its first fixed slots (as `devices`); `plug` adds more (None: it
        cannot); its first `taken` hotplug slots hold something else already (a spare VM's warm-up image)."""
        self._layout = layout
        self._images, self._devices, self._plug = list(images), list(devices), plug
        self._plugged = taken

    async def device_for(self, container_id: str) -> str:
        """The guest device holding the container's (acquired) image, hotplugging it if the VM lacks it."""
        device = self.device_of(container_id)
        if device is not None:
            return device
        index = self._plugged                      # hotplug slots taken (never given back: see above)
        if self._plug is None or index >= self._layout.hotplug:
            raise errors.ResourceExhausted(self._no_slot_reason(index))
        image = self._held[container_id][0].path
        await self._plug(index, image)
        self._plugged += 1
        self._images.append(image)
        self._devices.append(self._layout.device(self._layout.fixed + index))
        return self._devices[-1]

    def _no_slot_reason(self, used: int) -> str:
        if self._layout.hotplug == 0:
            return ("this pod's VM has no rootfs hotplug slots (rootfs.hotplug_slots = 0, or the microvm machine, "
                    "which has no hotplug): all its containers must use the first container's image")
        return (f"all {self._layout.hotplug} rootfs hotplug slots of this pod's VM hold other images ({used} "
                f"images added since it started; QEMU cannot unplug virtio-pmem, so a slot is freed only when the "
                f"VM ends): raise rootfs.hotplug_slots for pods with more images")

    def device_of(self, container_id: str) -> str | None:
        """The guest device a container's (acquired) image is in, if it is in the VM yet."""
        held = self._held.get(container_id)
        if held is None or held[0].path not in self._images:
            return None
        return self._devices[self._images.index(held[0].path)]

    async def release(self, container_id: str) -> None:
        """Unpin the container's image (the VM keeps its slot, see above)."""
        held = self._held.pop(container_id, None)
        if held is not None:
            await asyncio.to_thread(self._cache.release, *held)

    async def release_all(self) -> None:
        for cid in list(self._held):
            await self.release(cid)
