"""The pod's volumes on the host: one share directory per sandbox that the VM exports (virtio-9p, VMPaths.share), into
which each container's host-directory binds are bind-mounted, so a later container needs no new device.

    <sandbox dir>/volumes/                  a private bind of itself, made before QEMU opens it: binds under it stay
        <container id>/<mount index>        out of other mount namespaces, and QEMU (which holds the root open) sees
                                            every bind made later as it walks paths

The guest names a volume by its path relative to the share ("rund-volume:<cid>/<n>", rund/runtime/guest_spec.py).
Read-only volumes are read-only binds here too (the guest also binds them read-only). Propagation: rprivate (the
default) and rslave are honoured on the host bind, which is what the guest sees through 9p; rshared cannot be (a
mount made in the guest never reaches the host) and is refused.

Nothing of it outlives the pod, and the host directories are never touched: teardown unmounts (MNT_DETACH) every
mount under the share, deepest first, then removes only empty directories (never rmtree through a bind).
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
from pathlib import Path

from rund.errors import InvalidArgument, Unavailable

log = logging.getLogger("rund.runtime.volumes")

_libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC = 0x20, 0x1000, 0x4000
MS_PRIVATE, MS_SLAVE, MS_SHARED = 1 << 18, 1 << 19, 1 << 20
MNT_DETACH = 2

PREFIX = "rund-volume:"               # the guest's marker: the rest is the volume's path inside the share
_PROPAGATION = {"private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC, "slave": MS_SLAVE,
                "rslave": MS_SLAVE | MS_REC}
_REFUSED = ("shared", "rshared")       # the guest's mounts cannot propagate back to the host
_KEPT = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}


class Volume:
    """One host-directory (or large file) bind of a container spec's mounts."""

    def __init__(self, index: int, mount: dict):
        self.index = index
        self.source = mount.get("source")
        self.destination = str(mount.get("destination", ""))
        options = [o for o in mount.get("options") or [] if isinstance(o, str)]
        for option in options:
            if option in _REFUSED:
                raise InvalidArgument(f"mount {self.destination}: propagation {option!r} (Kubernetes' "
                                      f"Bidirectional) cannot be honoured in a VM: a mount made in the guest never "
                                      f"reaches the host")
        self.readonly = "ro" in options
        self.recursive = "rbind" in options
        self.propagation = next((_PROPAGATION[o] for o in reversed(options) if o in _PROPAGATION),
                                MS_PRIVATE | MS_REC)
        self.flags = sum(flag for name, flag in _KEPT.items() if name in options)
        if not isinstance(self.source, str) or not os.path.isabs(self.source):
            raise InvalidArgument(f"mount {self.destination}: source {self.source!r} is not an absolute path")


def prepare(share: Path) -> None:
    """Make the share a private mount of itself (before the VM starts: QEMU keeps its root open)."""
    share.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.path.realpath(share) in mounts_under(os.path.realpath(share)):
        return
    try:
        _mount(str(share), str(share), MS_BIND)
        _mount(None, str(share), MS_PRIVATE)
    except OSError as e:
        _detach(str(share))
        raise Unavailable(f"preparing the pod's volume share {share}: {e.strerror or e}") from None


def bind(share: Path, container_id: str, volume: Volume) -> str:
    """Bind the volume's source into the share; returns its path relative to the share (the guest's marker)."""
    relative = f"{container_id}/{volume.index}"
    target = share / relative
    try:
        is_dir = os.path.isdir(volume.source)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if is_dir:
            target.mkdir(mode=0o700, exist_ok=True)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    except FileNotFoundError:
        raise InvalidArgument(f"mount {volume.destination}: source {volume.source} does not exist") from None
    except OSError as e:
        raise Unavailable(f"mount {volume.destination}: {target}: {e.strerror or e}") from None
    try:
        _mount(volume.source, str(target), MS_BIND | (MS_REC if volume.recursive else 0))
        try:
            _mount(None, str(target), volume.propagation)
            if volume.readonly or volume.flags:
                _mount(None, str(target), MS_BIND | MS_REMOUNT | volume.flags | (MS_RDONLY if volume.readonly else 0))
        except OSError:
            _detach(str(target))
            raise
    except OSError as e:
        _remove_empty(target)
        if e.errno == errno.ENOENT:
            raise InvalidArgument(f"mount {volume.destination}: source {volume.source} does not exist") from None
        raise Unavailable(f"mount {volume.destination}: binding {volume.source}: {e.strerror or e}") from None
    return relative


def unbind_container(share: Path, container_id: str) -> None:
    """Unmount a container's volumes and remove their (empty) mount points."""
    _release(share / container_id)


def teardown(share: Path) -> bool:
    """Unmount everything under the share and the share itself; remove it if empty. True if nothing is left."""
    return _release(share)


def _release(top: Path) -> bool:
    top_s = os.path.realpath(top)      # as the mount table spells it
    for mountpoint in sorted(mounts_under(top_s), key=len, reverse=True):   # deepest first
        _detach(mountpoint)
    if mounts_under(top_s):
        log.error("%s: mounts are left under it; not removing it", top_s)
        return False
    return _remove_tree_of_empty_dirs(Path(top_s))


def mounts_under(path: str) -> list[str]:
    """Mount points at or under `path` in this mount namespace."""
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = _unescape(line.split(" ", 5)[4])
                if point == path or point.startswith(path.rstrip("/") + "/"):
                    found.append(point)
    except OSError as e:
        raise Unavailable(f"reading the mount table: {e}") from None
    return found


def _remove_tree_of_empty_dirs(top: Path) -> bool:
    """rmdir/unlink bottom-up, only what is empty (an empty placeholder file of a file volume is ours too), and
    nothing under a directory on another mount (one the table did not show: a same-filesystem bind has the same
    st_dev, so mounts are told apart by their mount ids)."""
    try:
        mount_id = _mount_id(str(top))
    except FileNotFoundError:
        return True
    return _remove_ours(str(top), mount_id)


def _remove_ours(directory: str, mount_id: int) -> bool:
    ok = True
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                if _mount_id(entry.path) != mount_id:
                    log.error("%s is another mount: not removing it or anything under it", entry.path)
                    ok = False
                elif entry.is_dir(follow_symlinks=False):
                    ok = _remove_ours(entry.path, mount_id) and ok
                elif entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_size == 0:
                    os.unlink(entry.path)
                else:
                    ok = False
            except OSError as e:
                log.warning("%s: %s; left in place", entry.path, e.strerror)
                ok = False
    if ok:
        try:
            os.rmdir(directory)
        except OSError as e:
            log.warning("%s: %s; left in place", directory, e.strerror)
            return False
    return ok


def _mount_id(path: str) -> int:
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    finally:
        os.close(fd)
    raise Unavailable(f"no mount id for {path} in /proc/self/fdinfo")


def _remove_empty(path: Path) -> None:
    try:
        if path.is_dir():
            path.rmdir()
        elif path.exists() and path.stat().st_size == 0:
            path.unlink()
    except OSError:
        pass


def _mount(source: str | None, target: str, flags: int) -> None:
    if _libc.mount(source.encode() if source else None, target.encode(), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def _detach(target: str) -> None:
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):     # not a mount point (any more)
            log.warning("unmounting %s: %s", target, os.strerror(err))


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit() and len(field[i + 1:i + 4]) == 3:
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


class PodShare:
    """The Sandbox's handle on its share: prepared before the VM starts, a container's volumes bound before the
    guest creates it and unbound when it goes, everything gone at the sandbox's teardown."""

    def __init__(self, share: Path):
        self.path = share
        self._prepared = False

    def prepare(self) -> None:
        prepare(self.path)
        self._prepared = True

    def bind_container(self, container_id: str, volumes: tuple[Volume, ...] | list[Volume]) -> None:
        if not volumes:
            return
        if not self._prepared:
            raise Unavailable(f"the pod's volume share {self.path} was not prepared")
        try:
            for volume in volumes:
                bind(self.path, container_id, volume)
        except BaseException:
            unbind_container(self.path, container_id)
            raise

    def unbind_container(self, container_id: str) -> None:
        if self._prepared:
            unbind_container(self.path, container_id)

    def teardown(self) -> None:
        if not teardown(self.path):
            log.error("the pod's volume share %s could not be emptied; left in place", self.path)
