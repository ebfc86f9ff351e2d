"""Layer trees for the rootfs cache tests and bench: what an OCI image unpacked by containerd's overlay snapshotter
looks like on disk (whiteouts as char 0/0 devices, opaque dirs as trusted.overlay.opaque=y), and a tree walker to
compare two views of a file system."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from contextlib import contextmanager
from collections.abc import Iterator

MTIME_NS = 978_307_200_123_456_789  # 2001-01-01, with nanoseconds: must survive the image
CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service, effective


def busybox_tree(path: str) -> None:
    """Enough of a distribution to run busybox sh in a container."""
    for sub in ("bin", "proc", "dev", "sys", "tmp", "etc", "root"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    shutil.copy2("/bin/busybox", os.path.join(path, "bin", "busybox"))
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", os.path.join(path, "bin", applet))
    _write(os.path.join(path, "etc", "passwd"), b"root:x:0:0:root:/root:/bin/sh\n")


def lower_layer(path: str) -> None:
    """The bottom layer: every kind of inode, odd owners and modes, xattrs, and what the upper layer will hide."""
    busybox_tree(path)
    _write(f"{path}/data/keep", b"kept\n")
    _write(f"{path}/data/gone", b"deleted by the upper layer\n")
    _write(f"{path}/data/changed", b"old\n")
    _write(f"{path}/dir-gone/inner", b"x\n")
    _write(f"{path}/opq/old", b"hidden by the opaque dir\n")
    _write(f"{path}/opq/sub/old2", b"hidden too\n")
    _write(f"{path}/owned/user-file", b"owned by 1000:1001\n")
    os.chown(f"{path}/owned/user-file", 1000, 1001)
    os.chmod(f"{path}/owned/user-file", 0o640)
    os.chown(f"{path}/owned", 1000, 1001)
    _write(f"{path}/owned/suid", b"#!/bin/sh\n")
    os.chmod(f"{path}/owned/suid", 0o4755)
    os.mkdir(f"{path}/owned/sticky", 0o1777)
    os.chmod(f"{path}/owned/sticky", 0o1777)
    _write(f"{path}/xattrs/file", b"has xattrs\n")
    os.setxattr(f"{path}/xattrs/file", "user.rund.test", b"value-1")
    os.setxattr(f"{path}/xattrs/file", "security.capability", CAPABILITY)
    os.mknod(f"{path}/dev/null-copy", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(f"{path}/dev/block-copy", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    os.mkfifo(f"{path}/dev/fifo", 0o600)
    os.symlink("../data/keep", f"{path}/data/link")
    os.link(f"{path}/data/keep", f"{path}/data/hardlink")
    _write(f"{path}/data/random.bin", hashlib.sha256(b"seed").digest() * 4096)  # 128 KiB, not all zeros
    _fixed_mtimes(path)


def upper_layer(path: str) -> None:
    """The top layer: a deletion of a file and of a directory (whiteouts), an opaque dir, a changed and a new file."""
    os.makedirs(f"{path}/data")
    os.mknod(f"{path}/data/gone", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    os.mknod(f"{path}/dir-gone", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    _write(f"{path}/data/changed", b"new\n")
    _write(f"{path}/data/added", b"added by the upper layer\n")
    os.makedirs(f"{path}/opq")
    os.setxattr(f"{path}/opq", "trusted.overlay.opaque", b"y")
    _write(f"{path}/opq/new", b"the only entry of the opaque dir\n")
    _fixed_mtimes(path)


def bulk_layer(path: str, total_bytes: int, files: int = 20) -> None:
    """`files` files of random bytes under /bulk, `total_bytes` in all: something to read through the base."""
    os.makedirs(f"{path}/bulk")
    for i in range(files):
        _write(f"{path}/bulk/{i:03d}.bin", os.urandom(total_bytes // files))


def two_layer_image(top: str) -> tuple[str, str]:
    """(upper, lower) layer directories under `top`, in lowerdir order."""
    lower, upper = f"{top}/layers/1/fs", f"{top}/layers/2/fs"
    os.makedirs(lower)
    os.makedirs(upper)
    lower_layer(lower)
    upper_layer(upper)
    return upper, lower


@contextmanager
def overlay_view(lowers: list[str], target: str) -> Iterator[str]:
    """The host kernel's own read-only merge of `lowers` (top first): what runc would show."""
    os.makedirs(target, exist_ok=True)
    subprocess.run(["mount", "-t", "overlay", "-o", f"ro,lowerdir={':'.join(lowers)}", "overlay", target], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", target], check=True)


@contextmanager
def erofs_view(image: str, target: str) -> Iterator[str]:
    os.makedirs(target, exist_ok=True)
    subprocess.run(["mount", "-t", "erofs", "-o", "ro", image, target], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", target], check=True)


def snapshot(root: str, with_mtime: bool = True) -> dict[str, tuple]:
    """Everything runc's rootfs would expose about each inode below `root` (directory sizes and link counts are
    file-system specific and left out)."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""] if dirpath == root else [*dirnames, *filenames]:
            full = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(full)
            rel = os.path.relpath(full, root)
            kind = stat.S_IFMT(st.st_mode)
            if kind == stat.S_IFREG:
                with open(full, "rb") as f:
                    content = hashlib.sha256(f.read()).hexdigest()
            elif kind == stat.S_IFLNK:
                content = os.readlink(full)
            elif kind in (stat.S_IFCHR, stat.S_IFBLK):
                content = (os.major(st.st_rdev), os.minor(st.st_rdev))
            else:
                content = None
            xattrs = () if kind == stat.S_IFLNK else tuple(
                sorted((k, os.getxattr(full, k, follow_symlinks=False)) for k in os.listxattr(full)))
            mtime = st.st_mtime_ns if with_mtime and kind != stat.S_IFLNK else None
            result[rel] = (st.st_mode, st.st_uid, st.st_gid, content, xattrs, mtime)
    return result


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _fixed_mtimes(root: str) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*filenames, *dirnames]:
            os.utime(os.path.join(dirpath, name), ns=(MTIME_NS, MTIME_NS), follow_symlinks=False)
    os.utime(root, ns=(MTIME_NS, MTIME_NS))
