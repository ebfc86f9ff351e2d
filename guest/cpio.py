"""A deterministic newc cpio writer (the initramfs format). Builds bytes in memory; no I/O.

Device nodes can be written without root, which is why the initramfs is not built with the host's cpio.
"""

from __future__ import annotations

import stat


class CpioWriter:
    def __init__(self, mtime: int = 0) -> None:
        self._parts: list[bytes] = []
        self._ino = 0
        self._mtime = mtime
        self._names: set[str] = set()

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, b"", nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, b"", rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"", count=False)
        return b"".join(self._parts)

    def _entry(self, name: str, mode: int, data: bytes, nlink: int = 1, rdev=(0, 0), count: bool = True) -> None:
        name = name.strip("/") or "."
        if count:
            if name in self._names:
                raise ValueError(f"duplicate cpio entry {name!r}")
            self._names.add(name)
            self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino if count else 0, mode, 0, 0, nlink, self._mtime if count else 0, len(data),
                  0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._parts.append(_pad4(header + encoded))
        self._parts.append(_pad4(data))


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)
