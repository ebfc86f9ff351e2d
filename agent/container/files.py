"""Host files copied into the guest with a container (CRI's /etc/hosts, resolv.conf, hostname): written under the
agent's state, then bind-mounted where the spec's mount source says "rund-file:<n>"."""
import os
import shutil

from ..errors import InvalidArgument
from ..oci.mounts import COPIED_FILE_PREFIX as PREFIX
from ..oci.spec import ContainerSpec

MAX_BYTES = 1 << 20


def place(spec: ContainerSpec, files: list[tuple[bytes, int]], directory: str) -> ContainerSpec:
    """Write the files the spec's mounts name and point those mounts at them; the spec as is when none."""
    wanted = [m for m in spec.mounts if m.source.startswith(PREFIX)]
    if not wanted:
        return spec
    os.makedirs(directory, mode=0o700, exist_ok=True)
    mounts = []
    try:
        for mount in spec.mounts:
            if mount.source.startswith(PREFIX):
                index = _index(mount.source, len(files), mount.field)
                data, mode = files[index]
                if len(data) > MAX_BYTES:
                    raise InvalidArgument(f"files[{index}]", f"is {len(data)} bytes, at most {MAX_BYTES}")
                path = os.path.join(directory, str(index))
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode & 0o7777 or 0o644)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                mount = mount._replace(source=path)
            mounts.append(mount)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return spec._replace(mounts=tuple(mounts))


def _index(source: str, count: int, field: str) -> int:
    text = source[len(PREFIX):]
    if not text.isdigit() or int(text) >= count:
        raise InvalidArgument(f"{field}.source", f"{source!r} names no file of the request ({count} given)")
    return int(text)
