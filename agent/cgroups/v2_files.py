"""OCI LinuxResources -> the cgroup v2 files to write (runc's conversions). Pure."""
from ..oci.resources import MAX, Resources

DEFAULT_CPU_PERIOD = 100_000


def _max(value: int) -> str:
    return "max" if value == MAX else str(value)


def cpu_weight_from_shares(shares: int) -> int:
    """cgroup v1 cpu.shares [2..262144] to v2 cpu.weight [1..10000]."""
    return 1 + ((max(shares, 2) - 2) * 9999) // 262142


def io_weight_from_blkio(weight: int) -> int:
    """blkio.weight [10..1000] to io.weight [1..10000]."""
    return 1 + ((weight - 10) * 9999) // 990


def files_for(r: Resources) -> list[tuple[str, str]]:
    """(file name, value) pairs in the order they must be written."""
    files: list[tuple[str, str]] = []
    if r.memory_reservation is not None:
        files.append(("memory.low", _max(r.memory_reservation)))
    if r.memory_limit not in (None, 0):
        files.append(("memory.max", _max(r.memory_limit)))
    if r.memory_swap is not None and r.memory_swap != 0:
        if r.memory_swap == MAX or r.memory_limit == MAX:
            files.append(("memory.swap.max", "max"))
        else:
            files.append(("memory.swap.max", str(r.memory_swap - r.memory_limit)))
    if r.cpu_shares:
        files.append(("cpu.weight", str(cpu_weight_from_shares(r.cpu_shares))))
    if r.cpu_quota is not None or r.cpu_period:
        quota = "max" if r.cpu_quota in (None, MAX, 0) else str(r.cpu_quota)
        files.append(("cpu.max", f"{quota} {r.cpu_period or DEFAULT_CPU_PERIOD}"))
    if r.cpu_idle is not None:
        files.append(("cpu.idle", str(r.cpu_idle)))
    if r.cpuset_cpus:
        files.append(("cpuset.cpus", r.cpuset_cpus))
    if r.cpuset_mems:
        files.append(("cpuset.mems", r.cpuset_mems))
    if r.pids_limit is not None:
        files.append(("pids.max", "max" if r.pids_limit in (MAX, 0) else str(r.pids_limit)))
    if r.blkio_weight:
        files.append(("io.weight", f"default {io_weight_from_blkio(r.blkio_weight)}"))
    for size, limit in r.hugepage_limits:
        files.append((f"hugetlb.{size}.max", str(limit)))
    files.extend(r.unified)
    return files
