"""Run a function inside a network namespace: in a child process forked for it, which setns(2)s into the netns and
exits when the function returned, so the shim's threads, and the event loop, stay where they are. Sockets and tap
fds opened there keep their namespace; the child hands them back over a socket (SCM_RIGHTS).

A child, not a thread of the shim: the netlink work (pyroute2) executes a large part of pyroute2 and the stdlib it
uses, and every object it touches writes a reference count on a page the shim shares copy-on-write with the fork
server (rund/shim/forkserver.py). In a thread those copies stayed in the shim for the pod's life (~1.5 MiB per pod:
pyroute2's pages alone were 1.3 MiB of a shim's 12 MiB of copies); in a child they go when it exits."""
from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
from typing import Callable

from .errors import NetworkError

CLONE_NEWNET = 0x40000000
MAX_FDS = 4
_libc = ctypes.CDLL(None, use_errno=True)

Result = tuple[object, list[int]]   # a JSON value, and the fds that go with it (opened in the netns)


def run_in(path: str, fn: Callable[[], Result]) -> Result:
    """fn() in netns `path`: its value (through JSON) and its fds (new fds of this process, the caller's to close).
    A NetworkError in fn is raised here as one; any other exception as a RuntimeError naming it."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pid = os.fork()
    except BaseException:
        ours.close()
        theirs.close()
        raise
    if pid == 0:                                    # the child: never returns
        code = 1
        try:
            ours.close()
            _quiet_signals()
            code = _child(path, fn, theirs)
        finally:
            os._exit(code)
    theirs.close()
    try:
        data, fds = _receive(ours)
    finally:
        ours.close()
        os.waitpid(pid, 0)
    try:
        reply = json.loads(data) if data else {"error": "the netns child died without an answer", "network": True}
    except ValueError:
        reply = {"error": f"the netns child answered {data[:80]!r}", "network": True}
    if "error" in reply:
        for fd in fds:
            os.close(fd)
        raise (NetworkError if reply.get("network") else RuntimeError)(reply["error"])
    return reply.get("value"), fds


def join(path: str) -> None:
    """setns(2) this thread into netns `path` (in run_in's child: fn may move on to a second netns)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetworkError(f"network namespace {path}: {e.strerror}") from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetworkError(f"joining network namespace {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def unshare() -> None:
    """unshare(2) the calling process into a network namespace of its own (a spare VM keeper's, for its taps)."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetworkError(f"a network namespace of its own: {os.strerror(err)}")


def _child(path: str, fn: Callable[[], Result], sock: socket.socket) -> int:
    try:
        join(path)
        value, fds = fn()
        reply, code = {"value": value}, 0
    except NetworkError as e:
        reply, fds, code = {"error": str(e), "network": True}, [], 0
    except BaseException as e:      # noqa: BLE001 - handed to the caller
        reply, fds, code = {"error": f"in network namespace {path}: {type(e).__name__}: {e}"}, [], 0
    socket.send_fds(sock, [json.dumps(reply).encode()], fds)
    return code


def _receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    chunks, fds = [], []
    while True:
        data, got, _, _ = socket.recv_fds(sock, 65536, MAX_FDS)
        fds.extend(got)
        if not data:
            return b"".join(chunks), fds
        chunks.append(data)


def _quiet_signals() -> None:
    """The child must not wake the shim's event loop (its signal wakeup fd) nor run its handlers."""
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, signal.SIG_DFL)
        except ValueError:
            pass
