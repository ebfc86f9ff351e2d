"""Device nodes and /dev symlinks of a container whose /dev is a fresh tmpfs (runc's defaults)."""
import os
import stat

from ..oci.spec import Device

DEFAULT_DEVICES = (
    Device("/dev/null", "c", 1, 3), Device("/dev/zero", "c", 1, 5), Device("/dev/full", "c", 1, 7),
    Device("/dev/random", "c", 1, 8), Device("/dev/urandom", "c", 1, 9), Device("/dev/tty", "c", 5, 0),
)
SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"), ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
)
_KIND = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def create_device(path: str, device: Device) -> None:
    """mknod `device` at `path` (its place inside the rootfs), replacing what is there."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    os.mknod(path, device.mode | _KIND[device.type], os.makedev(device.major, device.minor))
    os.chmod(path, device.mode)  # mknod applies the umask
    os.chown(path, device.uid, device.gid)


def create_in_fresh_dev(dev_dir_in_rootfs: str, devices: tuple[Device, ...]) -> None:
    """The default devices in a /dev that is a tmpfs mounted just now, so (nearly always) empty: one mknod each, with
    the umask cleared for the call instead of a chmod after it, and no chown for a node the creator owns already
    (a node created by root is root's); something already there (a spec's mount on /dev/null, say) is replaced as
    create_device does."""
    owner = (os.geteuid(), os.getegid())
    if os.stat(dev_dir_in_rootfs).st_mode & stat.S_ISGID:
        owner = None            # new nodes take the directory's group
    old_umask = os.umask(0)
    try:
        for device in devices:
            path = os.path.join(dev_dir_in_rootfs, device.path[len("/dev/"):])
            try:
                os.mknod(path, device.mode | _KIND[device.type], os.makedev(device.major, device.minor))
            except FileExistsError:
                create_device(path, device)
                continue
            if (device.uid, device.gid) != owner:
                os.chown(path, device.uid, device.gid)
    finally:
        os.umask(old_umask)


def create_symlinks(dev_dir_in_rootfs: str, with_ptmx: bool) -> None:
    links = list(SYMLINKS)
    if with_ptmx:
        links.append(("pts/ptmx", "/dev/ptmx"))
    for target, link in links:
        path = os.path.join(dev_dir_in_rootfs, os.path.basename(link))
        try:
            os.symlink(target, path)    # a fresh /dev has none: one call, not a check and a call
        except FileExistsError:
            os.unlink(path)
            os.symlink(target, path)
