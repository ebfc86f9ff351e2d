"""Run a function inside a network namespace: in a thread of its own that setns(2)s into it (a network namespace is
per thread), so the shim's other threads, and the event loop, stay where they are. Sockets and tap fds opened there
keep their namespace after the thread ends."""
from __future__ import annotations

import ctypes
import os
import threading
from typing import Callable, TypeVar

from .errors import NetworkError

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def run_in(path: str, fn: Callable[[], T]) -> T:
    outcome: dict[str, object] = {}

    def body() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            outcome["error"] = NetworkError(f"network namespace {path}: {e.strerror}")
            return
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                outcome["error"] = NetworkError(f"joining network namespace {path}: {os.strerror(err)}")
                return
            outcome["value"] = fn()
        except BaseException as e:    # handed to the caller's thread
            outcome["error"] = e
        finally:
            os.close(fd)

    thread = threading.Thread(target=body, name="netns")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]       # type: ignore[misc]
    return outcome["value"]          # type: ignore[return-value]
