"""The agent's side of a container rootfs: check a given directory, or assemble base image + overlay upper."""
import asyncio
import fcntl
import logging
import os
import shutil
import time

from ..errors import InvalidArgument, SetupFailed
from ..linux import mounts as m
from .types import LayeredRootfs, PathRootfs, Rootfs

log = logging.getLogger(__name__)
BLKFLSBUF = 0x1261
DEVICE_WAIT_TIMEOUT = 10.0   # a hotplugged pmem appears in ~0.1-2 s under TCG (measured)
DEVICE_POLL = 0.01


class PreparedRootfs:
    """A directory ready to become a container's root, and the mounts the agent made for it."""

    def __init__(self, path: str, readonly: bool, mounts: list[str], state_dir: str | None):
        self.path = path
        self.readonly = readonly
        self._mounts = mounts  # innermost last
        self._state_dir = state_dir

    def cleanup(self) -> None:
        for target in reversed(self._mounts):
            try:
                m.umount2(target, m.MNT_DETACH)
            except OSError as exc:
                log.warning("unmounting %s: %s", target, exc)
        self._mounts = []
        if self._state_dir:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None


def prepare(rootfs: Rootfs, state_dir: str) -> PreparedRootfs:
    if isinstance(rootfs, PathRootfs):
        if not os.path.isabs(rootfs.path):
            raise InvalidArgument("rootfs.path", f"must be an absolute path, got {rootfs.path!r}")
        if not os.path.isdir(rootfs.path):
            raise InvalidArgument("rootfs.path", f"{rootfs.path} is not a directory")
        return PreparedRootfs(rootfs.path, rootfs.readonly, [], None)
    return _layered(rootfs, state_dir)


async def wait_for_devices(rootfs: Rootfs, timeout: float = DEVICE_WAIT_TIMEOUT) -> None:
    """A device the host just hotplugged (a pod's next rootfs image) shows up once the guest kernel probed it."""
    if not isinstance(rootfs, LayeredRootfs):
        return
    deadline = time.monotonic() + timeout
    for device in (rootfs.base_device, rootfs.upper_device):
        while device and not os.path.exists(device) and time.monotonic() < deadline:
            await asyncio.sleep(DEVICE_POLL)


def _layered(spec: LayeredRootfs, state_dir: str) -> PreparedRootfs:
    for field, device in (("rootfs.layered.base_device", spec.base_device),
                          ("rootfs.layered.upper_device", spec.upper_device)):
        if device and not os.path.exists(device):
            raise InvalidArgument(field, f"{device} does not exist")
    if not spec.base_device:
        raise InvalidArgument("rootfs.layered.base_device", "is required")
    if spec.upper_device and not spec.upper_fstype:
        raise InvalidArgument("rootfs.layered.upper_fstype", "is required with upper_device")
    base, upper_mnt, root = (os.path.join(state_dir, d) for d in ("base", "upper", "rootfs"))
    for d in (base, upper_mnt, root):
        os.makedirs(d, exist_ok=True)
    prepared = PreparedRootfs(root, spec.readonly, [], state_dir)
    try:
        _flush_buffers(spec.base_device)
        base_options = "dax=always" if spec.dax else None
        _mount(prepared, spec.base_device, base, spec.base_fstype or "erofs", m.MS_RDONLY, base_options,
               "rootfs.layered.base_device")
        if spec.upper_device:
            _mount(prepared, spec.upper_device, upper_mnt, spec.upper_fstype, 0, None, "rootfs.layered.upper_device")
        else:
            size = f"size={spec.upper_size_bytes}" if spec.upper_size_bytes else None
            _mount(prepared, "tmpfs", upper_mnt, "tmpfs", 0, size, "rootfs.layered.upper_size_bytes")
        upper, work = os.path.join(upper_mnt, "upper"), os.path.join(upper_mnt, "work")
        os.makedirs(upper, exist_ok=True)
        os.makedirs(work, exist_ok=True)
        _mount(prepared, "overlay", root, "overlay", 0, f"lowerdir={base},upperdir={upper},workdir={work}",
               "rootfs.layered")
    except BaseException:
        prepared.cleanup()
        raise
    return prepared


def _flush_buffers(device: str) -> None:
    """Drop stale block cache a template may carry for a slot (reference: pmem slots). Never fsync pmem."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidArgument("rootfs.layered.base_device", f"{device}: {exc.strerror}") from None
    try:
        fcntl.ioctl(fd, BLKFLSBUF)
    except OSError as exc:
        log.debug("BLKFLSBUF on %s: %s", device, exc)
    finally:
        os.close(fd)


def _mount(prepared: PreparedRootfs, source: str, target: str, fstype: str, flags: int, data: str | None,
           field: str) -> None:
    try:
        m.mount(source, target, fstype, flags, data)
    except OSError as exc:
        if field == "rootfs.layered":
            raise SetupFailed("overlay rootfs", exc.strerror or str(exc)) from None
        raise InvalidArgument(field, f"mount {fstype} {source}: {exc.strerror}") from None
    prepared._mounts.append(target)
