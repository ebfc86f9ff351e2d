"""mount(2), umount2(2) and pivot_root(2)."""
import ctypes

from .libc import check, fsencode, libc, syscall

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
PROPAGATION_FLAGS = MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE

MNT_FORCE = 1
MNT_DETACH = 2

libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    check(libc.mount(fsencode(source), fsencode(target), fsencode(fstype), flags, fsencode(data)),
          f"mount {fstype or 'bind'} {source} on {target}")


def umount2(target: str, flags: int = 0) -> None:
    check(libc.umount2(fsencode(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    syscall("pivot_root", ctypes.c_char_p(fsencode(new_root)), ctypes.c_char_p(fsencode(put_old)))
