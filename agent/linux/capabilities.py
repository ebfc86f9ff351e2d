"""Capability names and the calls that apply a process's capability sets."""
import ctypes

from .libc import syscall
from .prctl import (PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, PR_CAP_AMBIENT_RAISE, PR_CAPBSET_DROP, prctl)

NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN",
    "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
NUMBER = {name: number for number, name in enumerate(NAMES)}
# What containerd gives a container unless told otherwise (oci.defaultUnixCaps): a CRI pod's containers' bounding set.
CONTAINERD_DEFAULT = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_last_cap: int | None = None
_dropped = 0    # bounding-set caps this process dropped already (a spare init drops most ahead of time)


def last_cap() -> int:
    """The highest capability this kernel knows; later ones are skipped like runc does. Read once."""
    global _last_cap
    if _last_cap is None:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            _last_cap = int(f.read())
    return _last_cap


def mask(numbers) -> int:
    bits = 0
    for n in numbers:
        bits |= 1 << n
    return bits


def drop_bounding(keep: int, last: int) -> None:
    """One prctl per cap to drop (each commits new credentials: ~2-3 ms in a TCG guest); none for caps gone."""
    global _dropped
    for cap in range(last + 1):
        bit = 1 << cap
        if not keep & bit and not _dropped & bit:
            prctl(PR_CAPBSET_DROP, cap)
            _dropped |= bit


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    syscall("capset", ctypes.byref(header), ctypes.byref(data))


def ambient_set_is_empty() -> bool:
    """Whether this process's ambient set is empty (/proc/self/status, CapAmb)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapAmb:"):
                    return int(line.split()[1], 16) == 0
    except (OSError, ValueError):
        pass
    return False


def note_ambient_empty() -> None:
    """The caller (the agent, before it forks setup children) has an empty ambient set and never raises one: its
    children need not clear theirs (a credential commit) before raising what their process asks for."""
    global _ambient_empty
    _ambient_empty = ambient_set_is_empty()


_ambient_empty = False


def set_ambient(ambient: int, last: int) -> None:
    if not _ambient_empty:
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(last + 1):
        if ambient & (1 << cap):
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
