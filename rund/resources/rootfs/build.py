"""Build one erofs image from an ImageSource into a scratch directory, padded to the slot size and fsynced.

Layer chains are merged by a read-only overlay mount, so the kernel applies whiteouts and opaque directories exactly as
runc's overlay would, and mkfs.erofs reads a whiteout-free tree (overlay also hides its trusted.overlay.* xattrs). The
mount lives in a private mount namespace of the mkfs process (unshare): it disappears with that process, even if we
are killed mid-build, and no other process on the host ever sees it.
"""

from __future__ import annotations

import errno
import os
import subprocess
from dataclasses import dataclass

from . import erofs
from .errors import BuildFailed, DiskFull, ImageTooLarge, UnsupportedMount
from .layout import IMAGE_MODE
from .source import ImageSource

# Ownership, modes, xattrs, device nodes are kept by default (no --all-root); DAX needs data not inlined in inodes.
MKFS_FLAGS = ("--quiet", "-Enoinline_data", "--preserve-mtime")
# mount(2) copies at most one page of options; stay clear of it.
MOUNT_DATA_MAX = 4000
# `cd` first so that long chains can be given relative to their common parent (as containerd's mount helper does).
_MOUNT_THEN_EXEC = 'cd "$1" && mount -r -t overlay -o "$2" overlay "$3" && shift 3 && exec "$@"'
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# If the process that builds dies, the build dies with it instead of running on as an orphan (setpriv sets the
# parent-death signal, which survives the execs into unshare, sh and mkfs.erofs).
_DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "KILL", "--")


@dataclass(frozen=True)
class BuiltImage:
    image_bytes: int  # before padding
    sha256: str  # of those bytes


def build_image(source: ImageSource, out: str, scratch: str, slot_bytes: int) -> BuiltImage:
    """Write the image of `source` to `out` (inside `scratch`, which the caller removes afterwards)."""
    mkfs = ["mkfs.erofs", *MKFS_FLAGS, out]
    if source.merge:
        mnt = os.path.join(scratch, "merged")
        os.mkdir(mnt)
        cwd, lowerdir = _lowerdir(source, scratch)
        argv = [*_DIE_WITH_PARENT, "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _MOUNT_THEN_EXEC, "sh",
                cwd, f"lowerdir={lowerdir}", mnt, *mkfs, mnt]
    else:
        argv = [*_DIE_WITH_PARENT, *mkfs, source.paths[0]]
    try:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
    except OSError as exc:  # a missing tool (erofs-utils, util-linux) on this host
        raise BuildFailed(f"cannot run {argv[0]}: {exc.strerror}") from None
    if result.returncode != 0:
        if _nearly_full(scratch):
            raise DiskFull(f"no space left in {scratch} while building the rootfs image")
        detail = (result.stderr or result.stdout).strip()[-800:]
        raise BuildFailed(f"building the image of {', '.join(source.paths)} failed (exit {result.returncode}): {detail}")
    try:
        image_bytes = os.stat(out).st_size
        if image_bytes > slot_bytes:
            raise ImageTooLarge(image_bytes, slot_bytes)
        sha256 = erofs.digest(out, image_bytes)
        fd = os.open(out, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, slot_bytes)  # sparse: the padding takes no disk space
            os.fchmod(fd, IMAGE_MODE)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise DiskFull(f"no space left for the rootfs image {out}: {exc.strerror}") from None
        raise
    return BuiltImage(image_bytes, sha256)


def _lowerdir(source: ImageSource, scratch: str) -> tuple[str, str]:
    """(directory to mount from, lowerdir= value)."""
    paths = list(source.paths)
    if len(paths) == 1:
        # overlay needs two lowers without an upper; an empty bottom layer changes nothing in the merge.
        os.mkdir(os.path.join(scratch, "empty"))
        return scratch, f"{paths[0]}:empty"
    absolute = ":".join(paths)
    if len(absolute) <= MOUNT_DATA_MAX:
        return "/", absolute
    parent = os.path.commonpath(paths)
    relative = ":".join(os.path.relpath(path, parent) for path in paths)
    if len(relative) > MOUNT_DATA_MAX:
        raise UnsupportedMount(f"{len(paths)} layers: the lowerdir list is too long for one overlay mount")
    return parent, relative


def _nearly_full(path: str) -> bool:
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    free_blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    out_of_inodes = st.f_files > 0 and st.f_ffree == 0
    return free_blocks * st.f_frsize < (1 << 20) or out_of_inodes
