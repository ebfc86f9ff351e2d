"""Typed errors of the rootfs image cache; callers match on the class, never on the message."""

from __future__ import annotations

from rund.errors import InvalidArgument, NotFound, ResourceExhausted, RundError


class RootfsError(RundError):
    """Base of every rootfs cache error."""


class UnsupportedMount(RootfsError, InvalidArgument):
    """A snapshot mount of a type (or shape) the cache cannot turn into an image."""


class InvalidCacheConfig(RootfsError, InvalidArgument):
    """A slot size or bound the cache cannot work with."""


class InvalidOwner(RootfsError, InvalidArgument):
    """An owner name that cannot be a file name (pins are files named after their owner)."""


class LayerNotFound(RootfsError, NotFound):
    """A lowerdir, upperdir or bind source that does not exist or is not a directory."""


class ImageTooLarge(RootfsError, ResourceExhausted):
    """The erofs image of a layer chain does not fit in one pmem slot."""

    def __init__(self, image_bytes: int, slot_bytes: int) -> None:
        super().__init__(f"erofs image is {image_bytes} bytes, larger than the {slot_bytes}-byte slot "
                         f"({image_bytes - slot_bytes} bytes over)")
        self.image_bytes = image_bytes
        self.slot_bytes = slot_bytes


class DiskFull(RootfsError, ResourceExhausted):
    """The cache's file system ran out of space (or inodes) while building an image."""


class BuildFailed(RootfsError):
    """mkfs.erofs (or the mount of the layers it reads) failed for a reason other than a full disk."""
