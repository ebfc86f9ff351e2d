"""The OCI `linux.resources` object (LinuxResources), limited to what a cgroup v2 guest applies."""
from typing import NamedTuple

from ..errors import InvalidArgument
from .fields import Fields, check_int

MAX = -1  # "no limit" as the OCI spec writes it
_DEVICE_RULE_TYPES = ("a", "b", "c")


class DeviceRule(NamedTuple):
    """One `linux.resources.devices` entry (cgroup v1 devices.allow/deny semantics)."""
    allow: bool
    type: str = "a"          # a (all), b (block) or c (char)
    major: int | None = None  # None: any
    minor: int | None = None  # None: any
    access: str = "rwm"       # a subset of "rwm", in that order


class Resources(NamedTuple):
    memory_limit: int | None = None        # bytes, or MAX
    memory_reservation: int | None = None  # bytes, or MAX
    memory_swap: int | None = None         # memory+swap bytes (v1 meaning), or MAX
    cpu_shares: int | None = None
    cpu_quota: int | None = None           # microseconds per period, or MAX
    cpu_period: int | None = None          # microseconds
    cpu_idle: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    pids_limit: int | None = None          # or MAX (0 also means no limit)
    blkio_weight: int | None = None        # 10..1000
    hugepage_limits: tuple[tuple[str, int], ...] = ()  # (page size "2MB", bytes)
    unified: tuple[tuple[str, str], ...] = ()          # raw cgroup v2 files
    devices: tuple[DeviceRule, ...] = ()               # in order; runc's defaults are appended when applied

    def is_empty(self) -> bool:
        return self == Resources()


def parse_resources(f: Fields | None) -> Resources:
    if f is None:
        return Resources()
    values = {}
    memory = f.obj("memory")
    if memory is not None:
        values["memory_limit"] = _limit(memory, "limit")
        values["memory_reservation"] = _limit(memory, "reservation")
        values["memory_swap"] = _limit(memory, "swap")
    cpu = f.obj("cpu")
    if cpu is not None:
        values["cpu_shares"] = cpu.int("shares", minimum=0, maximum=262144)
        values["cpu_quota"] = _limit(cpu, "quota")
        values["cpu_period"] = cpu.int("period", minimum=0, maximum=1_000_000)
        values["cpu_idle"] = cpu.int("idle", minimum=0, maximum=1)
        values["cpuset_cpus"] = cpu.str("cpus") or None
        values["cpuset_mems"] = cpu.str("mems") or None
    pids = f.obj("pids")
    if pids is not None:
        values["pids_limit"] = _limit(pids, "limit")
    blkio = f.obj("blockIO")
    if blkio is not None:
        weight = blkio.int("weight", minimum=0, maximum=1000)
        if weight is not None and weight != 0 and weight < 10:
            raise InvalidArgument(blkio.name("weight"), f"must be 10..1000, got {weight}")
        values["blkio_weight"] = weight or None
    hugepages = []
    for item in f.obj_list("hugepageLimits"):
        size = item.str("pageSize", required=True)
        if not size.isalnum():
            raise InvalidArgument(item.name("pageSize"), f"not a page size: {size!r}")
        hugepages.append((size, item.int("limit", required=True, minimum=0)))
    values["hugepage_limits"] = tuple(hugepages)
    unified = f.str_map("unified")
    for key in unified:
        if "/" in key or key.startswith(".") or not key:
            raise InvalidArgument(f"{f.name('unified')}.{key}", "must name a file of the cgroup itself")
    values["unified"] = tuple(sorted(unified.items()))
    values["devices"] = tuple(_parse_device_rule(d) for d in f.obj_list("devices"))
    resources = Resources(**values)
    _check_swap(resources, f)
    return resources


def _limit(f: Fields, key: str) -> int | None:
    """An int64 limit where any negative value means unlimited."""
    value = f.int(key, minimum=-(2**63), maximum=2**63 - 1)
    if value is None:
        return None
    return MAX if value < 0 else check_int(value, f.name(key), minimum=0)


def _check_swap(r: Resources, f: Fields) -> None:
    if r.memory_swap in (None, MAX, 0):
        return
    swap_field = f"{f.name('memory')}.swap"
    if r.memory_limit in (None, 0):
        raise InvalidArgument(swap_field, "needs memory.limit (it is memory+swap)")
    if r.memory_limit != MAX and r.memory_swap < r.memory_limit:
        raise InvalidArgument(swap_field, f"{r.memory_swap} is below memory.limit {r.memory_limit}")


def _parse_device_rule(f: Fields) -> DeviceRule:
    kind = f.str("type") or "a"
    if kind not in _DEVICE_RULE_TYPES:
        raise InvalidArgument(f.name("type"), f"invalid cgroup device type {kind!r} (a, b or c)")
    access = f.str("access")
    if not access:
        raise InvalidArgument(f.name("access"), "cannot be empty")  # runc refuses it too
    if set(access) - set("rwm"):
        raise InvalidArgument(f.name("access"), f"must be made of r, w and m; got {access!r}")
    major = f.int("major", minimum=-(2**63), maximum=2**32 - 1)
    minor = f.int("minor", minimum=-(2**63), maximum=2**32 - 1)
    if f.data.get("allow") is None:
        raise InvalidArgument(f.name("allow"), "is required")
    return DeviceRule(
        allow=f.bool("allow"),
        type=kind,
        major=None if major is None or major < 0 else major,  # runc: a negative number is a wildcard
        minor=None if minor is None or minor < 0 else minor,
        access="".join(c for c in "rwm" if c in access),
    )
