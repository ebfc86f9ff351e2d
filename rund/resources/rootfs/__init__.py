"""Container rootfs images: containerd's snapshot mounts in, an erofs image padded to a pmem slot out.

    cache = RootfsCache("/var/lib/rund/rootfs-cache", slot_bytes=512 << 20, max_bytes=8 << 30)
    image = cache.acquire(task.rootfs_mounts, owner=sandbox_id)   # blocks while building; a hit is ~µs
    PmemSlot(image.path, image.slot_bytes, memaddr)                 # or BlockDevice(image.path) on microvm
    ...
    cache.release(image, sandbox_id)      # or cache.release_owner(sandbox_id) from `delete` after a crash

Which mounts become which image (source.py):
- overlay, upperdir empty or absent (ctr run; view snapshots): one cached image of the lowerdir chain, shared.
- overlay with a non-empty upperdir (CRI copied volume content up): a per-owner image of the merged view
  upper+lowers, deleted at release. The guest writes to its own upper on top of it; as with any VM runtime,
  those writes do not flow back into the host's upperdir.
- bind (the native snapshotter's full directory): a per-owner image of that directory.
- anything else: UnsupportedMount (an InvalidArgument).
"""

from .cache import DEFAULT_DIRECTORY, CacheStatistics, RootfsCache, RootfsImage
from .errors import (
    BuildFailed,
    DiskFull,
    ImageTooLarge,
    InvalidCacheConfig,
    InvalidOwner,
    LayerNotFound,
    RootfsError,
    UnsupportedMount,
)
from .source import ImageSource, SnapshotMount, plan_source

__all__ = [
    "BuildFailed", "CacheStatistics", "DEFAULT_DIRECTORY", "DiskFull", "ImageSource", "ImageTooLarge", "InvalidCacheConfig", "InvalidOwner",
    "LayerNotFound", "RootfsCache", "RootfsError", "RootfsImage", "SnapshotMount", "UnsupportedMount", "plan_source",
]
