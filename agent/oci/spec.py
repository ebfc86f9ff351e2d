"""The OCI runtime spec (config.json) of a container, validated."""
import re
from typing import NamedTuple

from ..errors import InvalidArgument
from ..linux import mounts as m
from .fields import Fields, check_absolute, decode_document
from .mounts import PROPAGATION, Mount, parse_mount, with_essentials
from .process import ProcessSpec, parse_process
from .resources import Resources, parse_resources
from .seccomp import SeccompProfile, parse_seccomp

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "cgroup")
# Set by the host on a CRI pod's sandbox container: the agent holds the pod's namespaces without a container.
POD_HOLDER = "io.rund.pod-holder"
# Set by the host on the container that warms a template or a spare VM (rund/templates/build.py, warm_agent): once it
# is removed, the agent forks its spare init and cgroup again (manager.remove), so the pod after it still finds them.
WARM_UP = "io.rund.warm-up"
# Always private to the container, whatever the spec says, so no container shares the agent's. The guest runs
# cgroup v2 even under a v1 host's spec: a cgroup namespace of its own makes /sys/fs/cgroup show the container's own
# cgroup (its memory.max, cpu.max), as containerd asks on v2 hosts.
ISOLATED_NAMESPACES = ("mount", "pid", "ipc", "uts", "cgroup")
_SYSCTL_KEY = re.compile(r"^[A-Za-z0-9_\-]+([./][A-Za-z0-9_\-]+)*$")
_DEVICE_TYPES = ("c", "b", "u", "p")


class Namespace(NamedTuple):
    type: str
    path: str | None = None  # None: a new namespace
    field: str = ""          # "linux.namespaces[2]", for error messages


class Device(NamedTuple):
    path: str
    type: str  # c, b, u (unbuffered char) or p (fifo)
    major: int
    minor: int
    mode: int = 0o666
    uid: int = 0
    gid: int = 0


class ContainerSpec(NamedTuple):
    process: ProcessSpec
    hostname: str = ""
    mounts: tuple[Mount, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    readonly_root: bool = False
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sysctl: tuple[tuple[str, str], ...] = ()
    devices: tuple[Device, ...] = ()
    resources: Resources = Resources()
    rootfs_propagation: int = m.MS_SLAVE | m.MS_REC
    seccomp: SeccompProfile | None = None  # applied to the init and every exec
    pod_holder: bool = False  # the host's POD_HOLDER annotation: hold the pod's namespaces, run nothing (holder.py)
    warm_up: bool = False     # the host's WARM_UP annotation

    def namespace(self, kind: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == kind:
                return ns
        return None


def parse_spec(raw: bytes) -> ContainerSpec:
    """Validate config.json bytes; InvalidArgument names the first offending field."""
    f = decode_document(raw, "oci_spec_json")
    f.str("ociVersion")
    linux = f.obj("linux") or Fields({}, "linux")
    root = f.obj("root")
    namespaces = _parse_namespaces(linux)
    hostname = f.str("hostname")
    if hostname:
        check_hostname(hostname, "hostname")
        uts = next(ns for ns in namespaces if ns.type == "uts")
        if uts.path is not None:
            raise InvalidArgument("hostname", "unable to set hostname without a private UTS namespace")
    if linux.list("uidMappings") or linux.list("gidMappings"):
        raise InvalidArgument("linux.uidMappings", "user namespaces are not supported")
    propagation = linux.str("rootfsPropagation")
    annotations = f.str_map("annotations")
    if propagation and propagation not in PROPAGATION:
        raise InvalidArgument("linux.rootfsPropagation", f"unknown propagation {propagation!r}")
    return ContainerSpec(
        process=parse_process(f.obj("process", required=True)),
        hostname=hostname,
        mounts=with_essentials(tuple(parse_mount(mf) for mf in f.obj_list("mounts"))),
        namespaces=namespaces,
        readonly_root=root.bool("readonly") if root else False,
        masked_paths=_paths(linux, "maskedPaths"),
        readonly_paths=_paths(linux, "readonlyPaths"),
        sysctl=_parse_sysctl(linux),
        devices=tuple(_parse_device(d) for d in linux.obj_list("devices")),
        resources=parse_resources(linux.obj("resources")),
        rootfs_propagation=PROPAGATION[propagation] if propagation else m.MS_SLAVE | m.MS_REC,
        seccomp=parse_seccomp(linux.obj("seccomp")),
        pod_holder=annotations.get(POD_HOLDER) == "true",
        warm_up=annotations.get(WARM_UP) == "true",
    )


def parse_process_document(raw: bytes) -> ProcessSpec:
    """An exec's OCI Process as JSON bytes."""
    return parse_process(decode_document(raw, "process_json"))


def parse_resources_document(raw: bytes) -> Resources:
    """UpdateContainer's OCI LinuxResources as JSON bytes."""
    return parse_resources(decode_document(raw, "resources_json"))


def _parse_namespaces(linux: Fields) -> tuple[Namespace, ...]:
    seen: dict[str, Namespace] = {}
    for item in linux.obj_list("namespaces"):
        kind = item.str("type", required=True)
        if kind in ("user", "time"):
            raise InvalidArgument(item.name("type"), f"{kind} namespaces are not supported")
        if kind not in NAMESPACE_TYPES:
            raise InvalidArgument(item.name("type"), f"unknown namespace type {kind!r}")
        if kind in seen:
            raise InvalidArgument(item.name("type"), f"namespace {kind!r} is listed twice")
        path = item.str("path") or None
        if path is not None:
            check_absolute(path, item.name("path"))
            if kind == "mount":
                raise InvalidArgument(item.name("path"), "joining a mount namespace is not supported")
        seen[kind] = Namespace(kind, path, item.path)
    for kind in ISOLATED_NAMESPACES:
        seen.setdefault(kind, Namespace(kind, None, "linux.namespaces"))
    return tuple(seen[k] for k in NAMESPACE_TYPES if k in seen)


HOSTNAME_MAX = 64  # the kernel's __NEW_UTS_LEN


def check_hostname(name: str, field: str) -> None:
    """What sethostname(2) accepts, no more: runc sets the spec's hostname as given and fails only where the
    kernel refuses (EINVAL), so this error reads as runc's ("sethostname: invalid argument")."""
    raw = name.encode()
    if len(raw) > HOSTNAME_MAX or b"\0" in raw:
        reason = "contains a NUL byte" if b"\0" in raw else f"{len(raw)} bytes, the kernel takes at most {HOSTNAME_MAX}"
        raise InvalidArgument(field, f"sethostname: invalid argument: {name!r} ({reason})")


def _paths(f: Fields, key: str) -> tuple[str, ...]:
    paths = f.str_list(key)
    for i, path in enumerate(paths):
        check_absolute(path, f"{f.name(key)}[{i}]")
    return paths


def _parse_sysctl(linux: Fields) -> tuple[tuple[str, str], ...]:
    sysctl = linux.str_map("sysctl")
    for key in sysctl:
        if not _SYSCTL_KEY.match(key) or ".." in key:
            raise InvalidArgument(f"linux.sysctl.{key}", "not a sysctl name")
        if not is_namespaced_sysctl(key):
            raise InvalidArgument(f"linux.sysctl.{key}", "is not namespaced; it would change the whole guest")
    return tuple(sorted(sysctl.items()))


def is_namespaced_sysctl(key: str) -> bool:
    """The sysctls runc allows in a container (ipc, uts and net namespaces); the guest is the pod's netns."""
    key = key.replace("/", ".")
    return (key in ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced", "kernel.hostname",
                    "kernel.domainname")
            or key.startswith("fs.mqueue.") or key.startswith("net."))


def _parse_device(f: Fields) -> Device:
    path = check_absolute(f.str("path", required=True), f.name("path"))
    if not path.startswith("/dev/"):
        raise InvalidArgument(f.name("path"), f"must be under /dev, got {path!r}")
    kind = f.str("type", required=True)
    if kind not in _DEVICE_TYPES:
        raise InvalidArgument(f.name("type"), f"must be one of c, b, u, p; got {kind!r}")
    number = 0 if kind == "p" else None
    return Device(
        path=path,
        type=kind,
        major=f.int("major", number, required=number is None, minimum=0, maximum=2**32 - 1),
        minor=f.int("minor", number, required=number is None, minimum=0, maximum=2**32 - 1),
        mode=f.int("fileMode", 0o666, minimum=0, maximum=0o7777),
        uid=f.int("uid", 0, minimum=0, maximum=2**32 - 1),
        gid=f.int("gid", 0, minimum=0, maximum=2**32 - 1),
    )
