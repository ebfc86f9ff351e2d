"""Runs in a container's init child, inside its new mount namespace: assemble the rootfs and enter it."""
import errno
import os

from ..errors import InvalidArgument, SetupFailed
from ..linux import mounts as m
from ..oci.mounts import Mount
from ..oci.spec import ContainerSpec
from .devices import DEFAULT_DEVICES, create_device, create_in_fresh_dev, create_symlinks
from .securejoin import secure_join

# statvfs bits that are also mount(2) flags, kept when remounting read-only.
_KEPT_FLAGS = m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC


def enter_rootfs(spec: ContainerSpec, rootfs: str) -> None:
    """Mount everything the spec asks for under `rootfs`, then make it the process's root."""
    try:
        m.mount(None, "/", None, spec.rootfs_propagation)
        m.mount(rootfs, rootfs, None, m.MS_BIND | m.MS_REC)
    except OSError as exc:
        raise SetupFailed("rootfs", exc.strerror or str(exc)) from None
    dev_is_tmpfs = pts_mounted = False
    for mount in spec.mounts:
        _mount_entry(rootfs, mount)
        dev_is_tmpfs |= mount.destination == "/dev" and mount.type == "tmpfs"
        pts_mounted |= mount.destination == "/dev/pts" and mount.type == "devpts"
    try:
        if dev_is_tmpfs:
            dev = secure_join(rootfs, "/dev")
            create_in_fresh_dev(dev, DEFAULT_DEVICES)
            create_symlinks(dev, pts_mounted)
    except OSError as exc:
        raise SetupFailed("creating /dev", str(exc)) from None
    for i, device in enumerate(spec.devices):
        if os.path.normpath(device.path) == "/dev/ptmx":
            continue  # runc leaves it to the ptmx symlink into the container's devpts (privileged specs list it)
        try:
            create_device(secure_join(rootfs, device.path), device)
        except OSError as exc:
            raise InvalidArgument(f"linux.devices[{i}]", f"mknod {device.path}: {exc.strerror}") from None
    _pivot(rootfs)
    for i, path in enumerate(spec.masked_paths):
        _mask(path, f"linux.maskedPaths[{i}]")
    for i, path in enumerate(spec.readonly_paths):
        _make_readonly(path, f"linux.readonlyPaths[{i}]")
    if spec.readonly_root:
        try:
            _remount_readonly("/")
        except OSError as exc:
            raise SetupFailed("read-only rootfs", exc.strerror or str(exc)) from None


def _mount_entry(rootfs: str, mount: Mount) -> None:
    try:
        dest = secure_join(rootfs, mount.destination)
        if mount.is_bind:
            if not os.path.exists(mount.source):
                raise InvalidArgument(f"{mount.field}.source", f"{mount.source} does not exist")
            _make_mountpoint(dest, os.path.isdir(mount.source))
            m.mount(mount.source, dest, None, m.MS_BIND | (mount.flags & m.MS_REC))
            rest = mount.flags & ~(m.MS_BIND | m.MS_REC | m.MS_REMOUNT)
            if rest:
                m.mount(None, dest, None, m.MS_BIND | m.MS_REMOUNT | rest)
        else:
            _make_mountpoint(dest, True)
            kind = "cgroup2" if mount.type == "cgroup" else mount.type
            m.mount(mount.source, dest, kind, mount.flags & ~m.MS_REC, mount.data or None)
        if mount.propagation:
            m.mount(None, dest, None, mount.propagation)
    except OSError as exc:
        raise InvalidArgument(mount.field, f"mount {mount.type or 'bind'} on {mount.destination}: "
                                           f"{exc.strerror or exc}") from None


def _make_mountpoint(path: str, directory: bool) -> None:
    if directory:
        if not os.path.isdir(path):     # most are in the image already: one stat, not makedirs' three calls
            os.makedirs(path, exist_ok=True)
    elif not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _pivot(rootfs: str) -> None:
    """pivot_root(".", ".") as runc does; a root that cannot be pivoted (initramfs) falls back to MS_MOVE."""
    try:
        old_root = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        os.chdir(rootfs)
        try:
            m.pivot_root(".", ".")
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            m.mount(rootfs, "/", None, m.MS_MOVE)
            os.chroot(".")
        else:
            # The old root now sits on top of the new one: detach it without touching the agent's mounts.
            os.fchdir(old_root)
            m.mount(None, ".", None, m.MS_SLAVE | m.MS_REC)
            m.umount2(".", m.MNT_DETACH)
        os.close(old_root)
        os.chdir("/")
    except OSError as exc:
        raise SetupFailed("pivot_root", exc.strerror or str(exc)) from None


def _mask(path: str, field: str) -> None:
    try:
        if os.path.isdir(path):
            m.mount("tmpfs", path, "tmpfs", m.MS_RDONLY)
        elif os.path.lexists(path):
            m.mount("/dev/null", path, None, m.MS_BIND)
    except OSError as exc:
        raise InvalidArgument(field, f"masking {path}: {exc.strerror}") from None


def _make_readonly(path: str, field: str) -> None:
    if not os.path.exists(path):
        return
    try:
        m.mount(path, path, None, m.MS_BIND | m.MS_REC)
        _remount_readonly(path)
    except OSError as exc:
        raise InvalidArgument(field, f"read-only {path}: {exc.strerror}") from None


def _remount_readonly(path: str) -> None:
    kept = os.statvfs(path).f_flag & _KEPT_FLAGS
    m.mount(None, path, None, m.MS_BIND | m.MS_REMOUNT | m.MS_RDONLY | kept)
