"""inotify(7), used to notice memory.events changes (cgroup v2 signals them as IN_MODIFY)."""
import ctypes
import os
import struct

from .libc import check, fsencode, libc

IN_MODIFY = 0x2
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")

libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


def init() -> int:
    return check(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")


def add_watch(fd: int, path: str, events: int) -> int:
    return check(libc.inotify_add_watch(fd, fsencode(path), events), f"inotify_add_watch {path}")


def rm_watch(fd: int, wd: int) -> None:
    libc.inotify_rm_watch(fd, wd)  # the watch is already gone when its cgroup was removed


def parse_events(buf: bytes) -> list[int]:
    """The watch descriptors of the events in one read() of an inotify fd."""
    wds, offset = [], 0
    while offset + _EVENT.size <= len(buf):
        wd, _mask, _cookie, length = _EVENT.unpack_from(buf, offset)
        wds.append(wd)
        offset += _EVENT.size + length
    return wds
