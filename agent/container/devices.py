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


def create_symlinks(dev_dir_in_rootfs: str, with_ptmx: bool) -> None:
    links = list(SYMLINKS)
    if with_ptmx:
        links.append(("pts/ptmx", "/dev/ptmx"))
    for target, link in links:
        path = os.path.join(dev_dir_in_rootfs, os.path.basename(link))
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(target, path)
