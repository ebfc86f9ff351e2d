"""RootfsSlots over a real rootfs cache (real mkfs.erofs, as root): which guest device holds each container's image,
sharing an image already in the VM, hotplugging a new one, running out of slots with a reason, and unpinning."""
from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from rund import errors
from rund.resources.rootfs import RootfsCache
from rund.runtime.rootfs import RootfsSlots, SlotLayout
from rund.runtime.task_runtime import Mount

pytestmark = pytest.mark.root
MiB = 1 << 20


@pytest.fixture
def top():
    if os.geteuid() != 0:
        pytest.skip("needs root (the cache builds erofs images as root)")
    path = tempfile.mkdtemp(prefix="rund-slots-", dir="/tmp")
    yield Path(path)
    subprocess.run(["rm", "-rf", "--one-file-system", path], check=False)


def layer(top: Path, name: str) -> tuple[Mount, ...]:
    """containerd's snapshot mount of a one-layer image `name` (a view: no upper): one cached image per layer."""
    path = top / "layers" / name
    if not path.exists():
        path.mkdir(parents=True)
        (path / "id").write_text(name)
    return (Mount("overlay", "overlay", "", (f"lowerdir={path}",)),)


class Plugged:
    """The VM's hotplug call, as the sandbox hands it over (the real one is exercised end to end)."""
    def __init__(self):
        self.calls: list[tuple[int, Path]] = []

    async def __call__(self, index: int, image: Path) -> None:
        self.calls.append((index, image))


def scenario(top: Path, hotplug: int, body):
    cache = RootfsCache(str(top / "cache"), slot_bytes=4 * MiB, max_bytes=64 * MiB)
    slots = RootfsSlots(cache)
    plugged = Plugged()
    layout = SlotLayout(fixed=1, hotplug=hotplug, device=lambda i: f"/dev/pmem{i + 1}")

    async def run():
        first = await slots.acquire("sb", "ns:sb", layer(top, "a"), str(top))
        slots.launched(layout, (first,), ("/dev/pmem1",), plugged if hotplug else None)
        return await body(slots, plugged, cache)
    return asyncio.run(run())


def test_a_pod_shares_an_image_already_in_the_vm_and_hotplugs_a_new_one(top):
    async def body(slots, plugged, cache):
        assert await slots.device_for("sb") == "/dev/pmem1"
        await slots.acquire("same", "ns:same", layer(top, "a"), str(top))   # the same image
        assert await slots.device_for("same") == "/dev/pmem1" and plugged.calls == []
        await slots.acquire("other", "ns:other", layer(top, "b"), str(top))
        assert await slots.device_for("other") == "/dev/pmem2"
        assert [i for i, _ in plugged.calls] == [0]
        assert slots.device_of("other") == "/dev/pmem2"
        await slots.release_all()
        assert cache.statistics().pinned == 0
    scenario(top, hotplug=2, body=body)


def test_running_out_of_hotplug_slots_says_why_and_releases_nothing_it_holds(top):
    async def body(slots, plugged, cache):
        await slots.acquire("b", "ns:b", layer(top, "b"), str(top))
        await slots.device_for("b")
        await slots.release("b")                  # its slot stays: virtio-pmem cannot be unplugged
        await slots.acquire("c", "ns:c", layer(top, "c"), str(top))
        with pytest.raises(errors.ResourceExhausted, match="cannot unplug virtio-pmem") as e:
            await slots.device_for("c")
        assert "microvm" not in str(e.value)
        await slots.acquire("b2", "ns:b2", layer(top, "b"), str(top))
        assert await slots.device_for("b2") == "/dev/pmem2"      # the image still in the VM is used again
    scenario(top, hotplug=1, body=body)


def test_a_vm_started_without_an_image_hotplugs_into_its_first_hotplug_slot(top):
    """A CRI pod's VM starts for its holder, which has no image: its fixed slot stays empty."""
    cache = RootfsCache(str(top / "cache"), slot_bytes=4 * MiB, max_bytes=64 * MiB)
    slots, plugged = RootfsSlots(cache), Plugged()

    async def run():
        slots.launched(SlotLayout(fixed=1, hotplug=2, device=lambda i: f"/dev/pmem{i + 1}"), (), (), plugged)
        await slots.acquire("app", "ns:app", layer(top, "a"), str(top))
        assert await slots.device_for("app") == "/dev/pmem2"
        assert [i for i, _ in plugged.calls] == [0]
    asyncio.run(run())


def test_a_vm_without_hotplug_says_so(top):
    async def body(slots, plugged, cache):
        await slots.acquire("x", "ns:x", layer(top, "x"), str(top))
        with pytest.raises(errors.ResourceExhausted, match="no rootfs hotplug slots"):
            await slots.device_for("x")
    scenario(top, hotplug=0, body=body)
