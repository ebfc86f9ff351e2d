"""Who serves a live shim socket, and whether `start` may hand it to containerd.

The socket path is sha256(containerd address/namespace/group), so a live socket there was made for this containerd,
this namespace and this group, but maybe for an earlier life of it: a shim whose `start` was cancelled, whose bundle
containerd has since removed. Such a shim must not be adopted (it would serve a new task and log into a deleted
FIFO). The kernel tells who listens (SO_PEERCRED: the daemon listens again after fork for this), /proc tells its
flags and its working directory, which is the bundle `start` ran in.

The thin `start` of a pod member (member.py) imports this: `_socket`, not `socket` (enum, selectors), and no
asyncio, dataclasses or typing (rund.peercred's NamedTuple); retire imports asyncio when it needs it.
"""
from __future__ import annotations

import _socket
import os
import struct
import time

from rund.errors import Unavailable
from rund.shim.flags import ShimArgs
from rund.shim.frozen import Frozen

RETIRE_TIMEOUT = 5.0        # a taskless shim exits within its Shutdown grace (2 s) plus closing up
_UCRED = struct.Struct("3i")    # struct ucred, as rund.peercred reads it: pid, uid, gid


class LiveShim(Frozen):     # not a dataclass: the thin `start` of a pod member imports this (frozen.py)
    __slots__ = ("pid", "address", "namespace", "bundle")

    def __init__(self, pid: int, address: str | None, namespace: str | None, bundle: tuple[int, int] | None):
        """address: its containerd's -address, None: pid gone or unreadable (not identified); bundle: (st_dev,
        st_ino) of its working directory, None: removed, or not identified."""
        self._set(pid, address, namespace, bundle)

    def same_containerd(self, args: ShimArgs) -> bool:
        return (self.address, self.namespace) == (args.address, args.namespace)


def probe(path: str) -> LiveShim | None:
    """The process listening at `path`, or None if nothing listens there. Unavailable if something listens but
    does not accept (its backlog is full): that is not a dead socket to replace."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.setblocking(False)        # a unix connect completes at once, or fails: never wait on a stuck listener
        try:
            s.connect(path)
        except (BlockingIOError, InterruptedError):
            raise Unavailable(f"{path}: its shim does not accept connections") from None
        except OSError:
            return None
        pid = _UCRED.unpack(s.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _UCRED.size))[0]
    finally:
        s.close()
    return identify(pid)


def identify(pid: int, proc: str = "/proc") -> LiveShim:
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
        st = os.stat(f"{proc}/{pid}/cwd")
    except OSError:
        return LiveShim(pid, None, None, None)
    bundle = (st.st_dev, st.st_ino) if st.st_nlink > 0 else None   # a removed directory has no links left
    return LiveShim(pid, _flag(argv, "address"), _flag(argv, "namespace"), bundle)


def _flag(argv: list[str], name: str) -> str | None:
    """The value of Go-style `-name v`, `--name v` or `-name=v` in a shim's argv (None if absent)."""
    for i, arg in enumerate(argv):
        flag, eq, value = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or flag != name:
            continue
        if eq:
            return value
        return argv[i + 1] if i + 1 < len(argv) else None
    return None


def refusal(shim: LiveShim, args: ShimArgs, own_bundle: tuple[int, int] | None) -> str | None:
    """Why `start` must not adopt `shim`, or None. `own_bundle`: the shim would serve this very id, so it must
    have been started in this bundle (dev, inode); None for a pod's shim, started in its sandbox's bundle."""
    if shim.address is None:
        return f"pid {shim.pid} listening there cannot be identified"
    if not shim.same_containerd(args):
        return f"pid {shim.pid} serves containerd {shim.address!r}, namespace {shim.namespace!r}"
    if shim.bundle is None:
        return f"pid {shim.pid} is a stale shim: its bundle was removed"
    if own_bundle is not None and shim.bundle != own_bundle:
        return f"pid {shim.pid} is a stale shim: it was started for an earlier bundle of this id"
    return None


def retire(path: str, shim: LiveShim, container_id: str, timeout: float = RETIRE_TIMEOUT) -> bool:
    """Ask a stale shim of this containerd to exit (Shutdown: it does so only when it has no tasks) and wait until
    it no longer listens at `path`. True once it is gone."""
    import asyncio
    try:
        asyncio.run(asyncio.wait_for(_shutdown(path, container_id), timeout))
    except Exception:       # it may close the connection before or instead of answering: judge by the socket
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = probe(path)
        if now is None or now.pid != shim.pid:
            return True
        time.sleep(0.05)
    return False


async def _shutdown(path: str, container_id: str) -> None:
    from proto import ttrpc
    from proto.gen.containerd.task.v2 import shim_pb2
    async with await ttrpc.Client.connect_unix(path) as client:
        stub = ttrpc.Stub(client, shim_pb2.DESCRIPTOR.services_by_name["Task"])
        await stub.Shutdown(shim_pb2.ShutdownRequest(id=container_id), timeout=2.0)
