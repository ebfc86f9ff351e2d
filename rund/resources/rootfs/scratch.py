"""Scratch directories for builds, removed even when the building process was killed.

Each scratch dir tmp/<name>/ has a lock file tmp/<name>.lock that its build holds for its whole life; a lock
anybody can take belongs to a dead build, so its directory is garbage.
"""

from __future__ import annotations

import os
import secrets
import shutil

from .locks import open_locked


class Scratch:
    def __init__(self, tmp: str, label: str) -> None:
        self._tmp = tmp
        self._label = label
        self.path = ""
        self._lock: int | None = None

    def __enter__(self) -> Scratch:
        name = f"{self._label}.{secrets.token_hex(8)}"
        self._lock = open_locked(f"{self._tmp}/{name}.lock", exclusive=True)
        self.path = f"{self._tmp}/{name}"
        os.mkdir(self.path, 0o700)
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        try:
            os.unlink(f"{self.path}.lock")
        except FileNotFoundError:
            pass
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def sweep(tmp: str) -> int:
    """Remove the scratch of builds that are no longer running; returns how many."""
    swept = 0
    try:
        names = os.listdir(tmp)
    except FileNotFoundError:
        return 0
    for name in names:
        if not name.endswith(".lock"):
            continue
        lock_path = f"{tmp}/{name}"
        fd = open_locked(lock_path, exclusive=True, blocking=False, create=False)
        if fd is None:
            continue
        try:
            shutil.rmtree(lock_path[: -len(".lock")], ignore_errors=True)
            os.unlink(lock_path)
            swept += 1
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
    return swept
