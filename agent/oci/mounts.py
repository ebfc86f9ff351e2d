"""OCI mount entries: options split into mount(2) flags, propagation and filesystem data."""
from typing import NamedTuple

from ..errors import InvalidArgument
from ..linux import mounts as m
from .fields import Fields, check_absolute

# option -> (flags to clear, flags to set)
_FLAGS = {
    "defaults": (0, 0), "ro": (0, m.MS_RDONLY), "rro": (0, m.MS_RDONLY), "rw": (m.MS_RDONLY, 0),
    "suid": (m.MS_NOSUID, 0), "nosuid": (0, m.MS_NOSUID), "dev": (m.MS_NODEV, 0), "nodev": (0, m.MS_NODEV),
    "exec": (m.MS_NOEXEC, 0), "noexec": (0, m.MS_NOEXEC), "sync": (0, m.MS_SYNCHRONOUS),
    "async": (m.MS_SYNCHRONOUS, 0), "dirsync": (0, m.MS_DIRSYNC), "remount": (0, m.MS_REMOUNT),
    "mand": (0, m.MS_MANDLOCK), "nomand": (m.MS_MANDLOCK, 0), "atime": (m.MS_NOATIME, 0),
    "noatime": (0, m.MS_NOATIME), "diratime": (m.MS_NODIRATIME, 0), "nodiratime": (0, m.MS_NODIRATIME),
    "relatime": (0, m.MS_RELATIME), "norelatime": (m.MS_RELATIME, 0), "strictatime": (0, m.MS_STRICTATIME),
    "nostrictatime": (m.MS_STRICTATIME, 0), "lazytime": (0, m.MS_LAZYTIME), "nolazytime": (m.MS_LAZYTIME, 0),
    "nosymfollow": (0, m.MS_NOSYMFOLLOW), "silent": (0, m.MS_SILENT), "loud": (m.MS_SILENT, 0),
    "bind": (0, m.MS_BIND), "rbind": (0, m.MS_BIND | m.MS_REC),
}
PROPAGATION = {
    "private": m.MS_PRIVATE, "rprivate": m.MS_PRIVATE | m.MS_REC, "shared": m.MS_SHARED,
    "rshared": m.MS_SHARED | m.MS_REC, "slave": m.MS_SLAVE, "rslave": m.MS_SLAVE | m.MS_REC,
    "unbindable": m.MS_UNBINDABLE, "runbindable": m.MS_UNBINDABLE | m.MS_REC,
}
# runc extensions that mean nothing here.
_IGNORED = {"tmpcopyup", "nofail"}


class Mount(NamedTuple):
    destination: str
    type: str
    source: str
    flags: int = 0
    propagation: int = 0
    data: str = ""
    field: str = ""  # where it came from ("mounts[3]"), for error messages

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & m.MS_BIND) or self.type == "bind"


# A bind source naming a file the host sent with the request (agent/container/files.py places it).
COPIED_FILE_PREFIX = "rund-file:"
# A bind source naming the pod's shared /dev/shm, "rund-pod-shm:<size in bytes>" (agent/container/pod_shm.py).
POD_SHM_PREFIX = "rund-pod-shm:"
# A bind source naming the container's volume <n> in the pod's share, "rund-volume:<n>" (agent/container/volumes.py).
VOLUME_PREFIX = "rund-volume:"


def parse_mount(f: Fields) -> Mount:
    destination = check_absolute(f.str("destination", required=True), f.name("destination"))
    kind = f.str("type")
    source = f.str("source")
    flags, propagation, data = parse_options(f.str_list("options"), f.name("options"))
    if kind == "bind":
        flags |= m.MS_BIND
    if flags & m.MS_BIND and not source.startswith((COPIED_FILE_PREFIX, POD_SHM_PREFIX, VOLUME_PREFIX)):
        check_absolute(source, f.name("source"))
    elif not kind:
        raise InvalidArgument(f.name("type"), "is required for a mount that is not a bind mount")
    return Mount(destination, kind, source or kind, flags, propagation, ",".join(data), f.path)


def parse_options(options: tuple[str, ...], name: str) -> tuple[int, int, list[str]]:
    flags, propagation, data = 0, 0, []
    for i, option in enumerate(options):
        if option in _FLAGS:
            clear, set_ = _FLAGS[option]
            flags = (flags & ~clear) | set_
        elif option in PROPAGATION:
            propagation = PROPAGATION[option]
        elif option in _IGNORED:
            continue
        elif not option or "," in option:
            raise InvalidArgument(f"{name}[{i}]", f"not a mount option: {option!r}")
        else:
            data.append(option)
    return flags, propagation, data


_NOSUID_NOEXEC_NODEV = ("nosuid", "noexec", "nodev")
# What every container gets at these places unless its spec mounts something there (runc's default spec).
ESSENTIAL = (
    ("/proc", "proc", "proc", _NOSUID_NOEXEC_NODEV),
    ("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
    ("/dev/pts", "devpts", "devpts", ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")),
    ("/dev/shm", "tmpfs", "shm", _NOSUID_NOEXEC_NODEV + ("mode=1777", "size=65536k")),
    ("/sys", "sysfs", "sysfs", _NOSUID_NOEXEC_NODEV + ("ro",)),
)


def with_essentials(mounts: tuple[Mount, ...]) -> tuple[Mount, ...]:
    """Prepend /proc, /dev (+pts, shm) and /sys where the spec mounts nothing; /dev's children only with /dev."""
    present = {mount.destination.rstrip("/") or "/" for mount in mounts}
    added = []
    for destination, kind, source, options in ESSENTIAL:
        parent_added = destination.startswith("/dev/") and "/dev" not in present
        if destination in present or (destination.startswith("/dev/") and not parent_added):
            continue
        flags, propagation, data = parse_options(options, "defaults")
        added.append(Mount(destination, kind, source, flags, propagation, ",".join(data), f"default {destination}"))
    return tuple(added) + mounts
