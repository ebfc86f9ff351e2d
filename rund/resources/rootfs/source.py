"""What containerd hands us (its rootfs mounts) and what image that asks for: pure parsing plus a few stats.

An overlay snapshot's read-only chain is its lowerdirs (leftmost on top); committed snapshots never change, so an
image of the chain can be shared by every sandbox of that image. Anything that can hold per-container content (a
non-empty upperdir, a bind-mounted active snapshot) gets an image of its own that nobody else sees.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from .errors import LayerNotFound, UnsupportedMount

# Characters that overlay's lowerdir syntax would need escaped; containerd's snapshot paths never contain them.
_OVERLAY_SPECIAL = frozenset(",:\\\n")


@dataclass(frozen=True)
class SnapshotMount:
    """containerd.types.Mount of a rootfs (containerd 1.6 never sets `target`)."""

    type: str
    source: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerIdentity:
    """Who a layer directory is: a path reused for a different snapshot has a new inode or ctime."""

    path: str
    dev: int
    ino: int
    ctime_ns: int


@dataclass(frozen=True)
class ImageSource:
    """The tree an image must show: `layers` merged as overlay lowers (top first), or one plain directory."""

    layers: tuple[LayerIdentity, ...]
    merge: bool  # True: apply whiteouts and opaque dirs across `layers`; False: copy layers[0] as it is
    cacheable: bool  # True: depends only on immutable layers, so one image serves every owner
    upper_empty: bool  # False: an active snapshot's upperdir already had content, which the image includes

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(layer.path for layer in self.layers)


def plan_source(mounts: tuple[SnapshotMount, ...] | list[SnapshotMount]) -> ImageSource:
    if len(mounts) != 1:
        raise UnsupportedMount(f"expected exactly one rootfs mount, got {len(mounts)}")
    mount = mounts[0]
    if mount.type == "overlay":
        return _overlay(mount)
    if mount.type == "bind":
        # The native snapshotter: a full, writable directory. Its content belongs to this container only.
        return ImageSource((_identify(mount.source, "bind source"),), merge=False, cacheable=False,
                           upper_empty=True)
    raise UnsupportedMount(f"rootfs mount type {mount.type!r} is not supported (overlay or bind)")


def _overlay(mount: SnapshotMount) -> ImageSource:
    options = _options(mount.options)
    lowerdir = options.get("lowerdir")
    if not lowerdir:
        raise UnsupportedMount("overlay rootfs mount without lowerdir=")
    lowers = tuple(_identify(path, "lowerdir", overlay=True) for path in lowerdir.split(":"))
    upper = options.get("upperdir")
    if upper is None:  # a view snapshot: read-only by construction
        return ImageSource(lowers, merge=True, cacheable=True, upper_empty=True)
    upper_layer = _identify(upper, "upperdir", overlay=True)
    if _is_empty(upper):
        return ImageSource(lowers, merge=True, cacheable=True, upper_empty=True)
    # CRI may copy image volume content up before create: keep it, in an image of this owner's merged view.
    return ImageSource((upper_layer,) + lowers, merge=True, cacheable=False, upper_empty=False)


def _options(options: tuple[str, ...]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for option in options:
        name, sep, value = option.partition("=")
        if sep:
            parsed[name] = value
    return parsed


def _identify(path: str, what: str, overlay: bool = False) -> LayerIdentity:
    if not path or not os.path.isabs(path):
        raise UnsupportedMount(f"{what} {path!r} must be an absolute path")
    if overlay and _OVERLAY_SPECIAL.intersection(path):
        raise UnsupportedMount(f"{what} {path!r} contains a character overlay would need escaped")
    try:
        st = os.stat(path)
    except OSError as exc:
        raise LayerNotFound(f"{what} {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise LayerNotFound(f"{what} {path} is not a directory")
    return LayerIdentity(path, st.st_dev, st.st_ino, st.st_ctime_ns)


def _is_empty(path: str) -> bool:
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError as exc:
        raise LayerNotFound(f"upperdir {path}: {exc.strerror}") from None
