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
NINEP_DEVICES = "/sys/bus/virtio/drivers/9pnet_virtio"
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
    # A VM whose RAM is shared with the host (not a clone) may carry the share as virtio-fs under the same tag.
    fstype, options = ("9p", OPTIONS) if _is_9p(SHARE_TAG) else ("virtiofs", None)
    try:
        m.mount(SHARE_TAG, directory, fstype, m.MS_NOSUID | m.MS_NODEV, options)
    except OSError as exc:
        raise SetupFailed("the pod's volume share", f"{fstype} {SHARE_TAG}: {exc.strerror or exc}") from None


def _is_9p(tag: str) -> bool:
    try:
        devices = os.listdir(NINEP_DEVICES)
    except FileNotFoundError:
        return False
    for device in devices:
        try:
            with open(os.path.join(NINEP_DEVICES, device, "mount_tag"), "rb") as f:
                if f.read().rstrip(b"\0\n").decode(errors="replace") == tag:
                    return True
        except OSError:
            continue
    return False
