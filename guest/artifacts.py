"""Where a finished guest build is: ``current()`` for the one ``python3 -m guest.build`` made last."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from guest import manifest as manifest_mod
from guest import spec
from guest.errors import ManifestError, NotBuiltError
from guest.sources import REPO

OUT_DIR = REPO / "guest" / "out"
CURRENT = "current"


@dataclass(frozen=True)
class GuestArtifacts:
    directory: Path  # guest/out/<key>, never the `current` symlink, so it stays valid after a rebuild
    key: str
    vmlinux: Path  # uncompressed, PVH entry: QEMU -kernel boots it directly
    initrd: Path  # uncompressed newc cpio
    rootfs: Path  # erofs, read-only, padded to a 2 MiB multiple (virtio-pmem size= must equal rootfs_size)
    manifest: Path
    kernel_release: str
    rootfs_size: int  # bytes, padded
    rootfs_content_size: int  # bytes of erofs before padding
    modules_list: str  # guest path of the list of modules the agent loads, in dependency order
    agent_argv: tuple[str, ...]  # what the image's /sbin/init execs


def from_dir(directory: Path) -> GuestArtifacts:
    directory = directory.resolve()
    try:
        m = manifest_mod.load(directory)
        manifest_mod.verify(directory, m)
    except ManifestError as exc:
        raise NotBuiltError(f"no usable guest build in {directory} ({exc})") from exc
    rootfs = m["outputs"]["rootfs.erofs"]
    return GuestArtifacts(
        directory=directory,
        key=m["key"],
        vmlinux=directory / "vmlinux",
        initrd=directory / "initrd.cpio",
        rootfs=directory / "rootfs.erofs",
        manifest=directory / manifest_mod.FILENAME,
        kernel_release=m["kernel_release"],
        rootfs_size=rootfs["size"],
        rootfs_content_size=m["rootfs"]["content_size"],
        modules_list=spec.MODULES_LIST,
        agent_argv=tuple(m["rootfs"]["agent_argv"]),
    )


def current(out_dir: Path = OUT_DIR) -> GuestArtifacts:
    """The build `guest/out/current` points to. Raises NotBuiltError if there is none."""
    link = out_dir / CURRENT
    if not link.is_symlink() and not link.exists():
        raise NotBuiltError(f"no guest build yet ({link} does not exist)")
    return from_dir(link)
