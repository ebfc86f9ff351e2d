"""The pod's /dev/shm: one tmpfs in the guest that every container of the pod binds, as CRI's pods share one
(runc binds a host tmpfs the CRI plugin made; in a VM that host directory is out of reach, so the guest makes its
own, of the size CRI gave the host's).

The tmpfs is mounted ahead of time (prepare(), at the agent's start: a template carries it to every clone) with
the size CRI gives a pod unless told otherwise (containerd's 64 MiB); the pod's first container that binds it takes
it as it is when it asks for that size, else resizes it with a remount (~25 ms in a TCG guest, a mount more)."""
import os

from ..errors import InvalidArgument, SetupFailed
from ..linux import mounts as m
from ..oci.mounts import POD_SHM_PREFIX as PREFIX
from ..oci.spec import ContainerSpec

MAX_BYTES = 1 << 40
_FLAGS = m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC
DEFAULT_BYTES = 64 << 20        # containerd's defaultShmSize: what a CRI pod's /dev/shm gets unless configured
_unsized: dict[str, int] = {}   # mounted by prepare(), not claimed by a container yet: its size


def prepare(directory: str, size: int = DEFAULT_BYTES) -> None:
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        if not os.path.ismount(directory):
            m.mount("shm", directory, "tmpfs", _FLAGS, f"mode=1777,size={size}")
            _unsized[directory] = size
    except OSError:
        pass            # the first container mounts it, as without a prepared one


def place(spec: ContainerSpec, directory: str) -> ContainerSpec:
    """Point mounts of the pod's /dev/shm at the shared tmpfs in `directory` (mounted by the first that needs it)."""
    if not any(mount.source.startswith(PREFIX) for mount in spec.mounts):
        return spec
    mounts = []
    for mount in spec.mounts:
        if mount.source.startswith(PREFIX):
            _ensure(directory, _size(mount.source, mount.field))
            mount = mount._replace(source=directory)
        mounts.append(mount)
    return spec._replace(mounts=tuple(mounts))


def _size(source: str, field: str) -> int:
    text = source[len(PREFIX):]
    if not text.isdigit() or not 0 < int(text) <= MAX_BYTES:
        raise InvalidArgument(f"{field}.source", f"{source!r}: the pod's /dev/shm needs a size in bytes")
    return int(text)


def _ensure(directory: str, size: int) -> None:
    try:
        if directory in _unsized:
            if _unsized[directory] != size:
                m.mount("shm", directory, "tmpfs", m.MS_REMOUNT | _FLAGS, f"mode=1777,size={size}")
            del _unsized[directory]
            return
        os.makedirs(directory, mode=0o755, exist_ok=True)
        if os.path.ismount(directory):
            return          # the first container of the pod sized it; later ones share it as it is
        m.mount("shm", directory, "tmpfs", _FLAGS, f"mode=1777,size={size}")
    except OSError as exc:
        raise SetupFailed("pod /dev/shm", exc.strerror or str(exc)) from None
