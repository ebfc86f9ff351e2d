"""Host-wide calls: hostname, realtime clock, power off, kernel modules."""
import ctypes

from .libc import check, fsencode, libc, syscall

CLOCK_REALTIME = 0
RB_POWER_OFF = 0x4321FEDC
MODULE_INIT_COMPRESSED_FILE = 4


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def sethostname(name: str) -> None:
    raw = name.encode()
    check(libc.sethostname(raw, len(raw)), "sethostname")


def timespec_from_ns(total_ns: int) -> Timespec:
    seconds, nanos = divmod(total_ns, 1_000_000_000)
    return Timespec(seconds, nanos)


def clock_settime_realtime(total_ns: int) -> None:
    ts = timespec_from_ns(total_ns)
    check(libc.clock_settime(CLOCK_REALTIME, ctypes.byref(ts)), "clock_settime")


def power_off() -> None:
    libc.sync()
    check(libc.reboot(RB_POWER_OFF), "reboot")


def finit_module(fd: int, params: str = "", compressed: bool = False) -> None:
    flags = MODULE_INIT_COMPRESSED_FILE if compressed else 0
    syscall("finit_module", ctypes.c_int(fd), ctypes.c_char_p(fsencode(params)), ctypes.c_int(flags))
