"""The path of a shim's listening socket, removed only while it still names that socket.

A new shim may have bound the same path since (a `start` that retired this one), and tmpfs reuses a freed inode's
number at once, so comparing numbers is only sound while the inode is alive: an O_PATH fd holds it from bind on.
"""
from __future__ import annotations

import os


class SocketFile:
    def __init__(self, path: str):
        """Right after bind, before anyone else could replace the path."""
        self.path = path
        self._fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)

    @classmethod
    def adopt(cls, path: str, fd: int) -> "SocketFile":
        """The socket file `fd` (an O_PATH fd of it, from the process that bound it) names at `path`; ValueError
        (and `fd` closed) if `path` names another file now."""
        self = cls.__new__(cls)
        self.path, self._fd = path, fd
        if not self.still_ours():
            self.close()
            raise ValueError(f"{path} is not the socket file passed with it")
        return self

    def fileno(self) -> int:
        return self._fd

    def remove(self) -> None:
        """Unlink the path if it is still this socket. Idempotent."""
        if self._fd < 0:
            return
        try:
            if self.still_ours():
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            self.close()

    def still_ours(self) -> bool:
        """The path still names this socket (not removed with its directory, not replaced)."""
        if self._fd < 0:
            return False
        try:
            held, now = os.fstat(self._fd), os.lstat(self.path)
        except FileNotFoundError:
            return False
        return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)

    def close(self) -> None:
        """Forget the socket without removing it (the other side of a fork keeps it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
