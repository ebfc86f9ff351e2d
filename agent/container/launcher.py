"""The agent's side of forking a setup child: pid namespace choice, exit registration, status socket."""
import asyncio
import errno
import gc
import os
import socket
from typing import Callable

from ..errors import SetupFailed
from ..linux import capabilities as caps
from ..linux import namespaces as ns
from ..reaper import Reaper
from .. import spans
from . import status
from .child_process import note_oom_score_adj


class StatusChannel:
    """The agent's end of the child's status socket."""

    def __init__(self, sock: socket.socket):
        sock.setblocking(False)
        self._sock = sock

    async def receive(self) -> tuple[bytes, list[int]]:
        """The next message and any fds it carries; b'' once the child exec'd or died."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                message, fds, _flags, _addr = socket.recv_fds(self._sock, 65536, 1, socket.MSG_CMSG_CLOEXEC)
                return message, fds
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_reader(self._sock.fileno(), lambda: ready.done() or ready.set_result(None))
                try:
                    await ready
                finally:
                    loop.remove_reader(self._sock.fileno())

    async def expect_ready(self) -> int | None:
        """Wait for READY; returns the pty master fd if one came with it. Raises the child's error."""
        message, fds = await self.receive()
        if not message:
            raise SetupFailed("container setup", "the child died before it was ready")
        error = status.decode(message)
        if error is not None:
            raise error
        return fds[0] if fds else None

    async def expect_exec(self) -> None:
        """Wait until the child exec'd (its end closed) or raise its error."""
        message, _ = await self.receive()
        if message:
            raise status.decode(message) or SetupFailed("exec", "unexpected READY")

    def send_start(self) -> None:
        self.send(status.START, "start")

    def send(self, message: bytes, what: str, fds: list[int] = ()) -> None:
        """Raises SetupFailed if the child is gone, OSError(EMSGSIZE) for a message too big for the socket."""
        self._sock.setblocking(True)
        try:
            if fds:
                socket.send_fds(self._sock, [message], list(fds))
            else:
                self._sock.send(message)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                raise
        except OSError as exc:
            raise SetupFailed(what, f"the child is gone: {exc}") from None
        finally:
            self._sock.setblocking(False)

    def close(self) -> None:
        self._sock.close()


class PidNamespace:
    """Where a new child's pid lives: the agent's, a new one (it becomes pid 1), or an existing one."""

    def __init__(self, new: bool = False, join_fd: int | None = None):
        self.new = new
        self.join_fd = join_fd


class Launcher:
    def __init__(self, reaper: Reaper):
        self._reaper = reaper
        self._own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        caps.last_cap()  # read once here, so that every child finds it cached
        caps.note_ambient_empty()
        note_oom_score_adj()

    def fork(self, body: Callable[[socket.socket], None], pid_ns: PidNamespace
             ) -> tuple[int, asyncio.Future, StatusChannel]:
        """Fork a child that runs body(status_socket) and never returns; returns (pid, exit future, channel)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # A child only enters a pid namespace at fork, so the agent points its children there for one fork.
            if pid_ns.new:
                ns.unshare(ns.CLONE_NEWPID)
            elif pid_ns.join_fd is not None:
                ns.setns(pid_ns.join_fd, ns.CLONE_NEWPID)
            try:
                pid = os.fork()
                if pid == 0:
                    gc.disable()  # a collection here would write to (and so copy) every page of the agent's heap
                    spans.reset("forked")
                    try:
                        ours.close()
                        body(theirs)
                    finally:
                        os._exit(127)
            finally:
                if pid_ns.new or pid_ns.join_fd is not None:
                    ns.setns(self._own_pidns, ns.CLONE_NEWPID)
        except OSError as exc:
            ours.close()
            raise SetupFailed("fork", str(exc)) from None
        finally:
            theirs.close()
        return pid, self._reaper.watch(pid), StatusChannel(ours)
