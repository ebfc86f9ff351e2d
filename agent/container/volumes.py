"""The pod's volumes: host directories the runtime bound into the pod's share, which the VM exports over virtio-9p
(tag "rundvol"). The agent mounts the share once, at <state>/volumes, when the first container names a volume;
"rund-volume:<n>" in a container's spec is that container's volume <n>, at <share>/<container id>/<n> (where the
host bound it, rund/runtime/volumes.py). Read-only and propagation options stay on the container's own bind.

9p options: version 9p2000.L (POSIX semantics), access=client (the guest kernel checks permissions with the owners
and modes QEMU passes through, as the host would), cache=mmap (no page cache for reads and writes, so the host's
updates are seen at once, as kubelet's rewrites of configMaps and tokens must be; mmap works), msize 512000 (the
largest virtio transport message: fewer round trips per read or write).
"""
import os

from ..errors import InvalidArgument, SetupFailed
from ..linux import mounts as m
from ..oci.mounts import VOLUME_PREFIX as PREFIX
from ..oci.spec import ContainerSpec

SHARE_TAG = "rundvol"
OPTIONS = "trans=virtio,version=9p2000.L,access=client,cache=mmap,msize=512000"


def place(spec: ContainerSpec, container_id: str, directory: str) -> ContainerSpec:
    """Point the spec's volume mounts at the share mounted at `directory` (mounted by the first that needs it)."""
    if not any(mount.source.startswith(PREFIX) for mount in spec.mounts):
        return spec
    _ensure(directory)
    mounts = []
    for mount in spec.mounts:
        if mount.source.startswith(PREFIX):
            index = mount.source[len(PREFIX):]
            if not index.isdigit():
                raise InvalidArgument(f"{mount.field}.source", f"{mount.source!r}: a volume is named by its number")
            mount = mount._replace(source=os.path.join(directory, container_id, str(int(index))))
        mounts.append(mount)
    return spec._replace(mounts=tuple(mounts))


def _ensure(directory: str) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.path.ismount(directory):
        return
    try:
        m.mount(SHARE_TAG, directory, "9p", m.MS_NOSUID | m.MS_NODEV, OPTIONS)
    except OSError as exc:
        raise SetupFailed("the pod's volume share", exc.strerror or str(exc)) from None
