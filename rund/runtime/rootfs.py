"""Which guest device holds each container's rootfs: images from the rootfs cache, bound to the VM's slots.

The first container's image is bound to a slot when the VM starts (a clone binds it at restore: no hotplug on the
start path). A later container of the pod shares an image already there (a read-only base; each container gets its
own writable upper in the guest), or its image is hotplugged into the running VM (q35, a few slots per VM). A
hotplugged image stays until the VM ends: its cache pin is held by its containers, the device by the VM.
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

from rund import errors
from rund.config import Config
from rund.resources.rootfs import RootfsImage, SnapshotMount
from rund.runtime.resource_config import rootfs_cache
from rund.runtime.task_runtime import Mount


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


class RootfsPins:
    def __init__(self, cfg: Config, sandbox):
        self._cache = rootfs_cache(cfg)
        self._sandbox = sandbox
        self._bound: list[Path] = []                  # image files bound at launch (slot i)
        self._plugged: dict[Path, str] = {}           # image files added since, and their guest device
        self._held: dict[str, tuple[RootfsImage, str]] = {}   # container id -> (image, owner)

    async def _acquire(self, container_id: str, owner: str, mounts: tuple[Mount, ...], bundle: str) -> RootfsImage:
        image = await asyncio.to_thread(self._cache.acquire, snapshot_mounts(mounts, bundle), owner)
        self._held[container_id] = (image, owner)
        return image

    async def prepare_first(self, container_id: str, owner: str, mounts: tuple[Mount, ...],
                            bundle: str) -> tuple[Path, ...]:
        """The images to bind at launch: the first container's."""
        image = await self._acquire(container_id, owner, mounts, bundle)
        self._bound = [image.path]
        return tuple(self._bound)

    async def device_for(self, container_id: str, owner: str, mounts: tuple[Mount, ...],
                         bundle: str) -> str:
        """The guest device holding the container's image (acquired now unless prepare_first did)."""
        held = self._held.get(container_id)
        image = held[0] if held else await self._acquire(container_id, owner, mounts, bundle)
        if image.path in self._bound:
            return self._sandbox.launched.rootfs_devices[self._bound.index(image.path)]
        if image.path not in self._plugged:    # a pod's container with another image: add it to the VM
            try:
                self._plugged[image.path] = await self._sandbox.hotplug_rootfs(image.path)
            except BaseException:
                await self.release(container_id)
                raise
        return self._plugged[image.path]

    async def release(self, container_id: str) -> None:
        held = self._held.pop(container_id, None)
        if held is not None:
            await asyncio.to_thread(self._cache.release, *held)

    async def release_all(self) -> None:
        for cid in list(self._held):
            await self.release(cid)
