"""A group shim: one process serving the Task API of up to `[shim] pods_per_shim` sandboxes (pods).

Each sandbox keeps what a shim of its own has, only in this process: its socket (the address containerd has for
its tasks: socket_address(containerd, namespace, sandbox id), so a pod's containers find it as before), its ttrpc
server, its SandboxRuntime, its idle watch. The kernel routes by socket, so a call reaches its sandbox's runtime
with no table to keep; each call runs as its sandbox's (telemetry.serving: metrics records and log lines go to that
sandbox). Shared: the process, its event loop and the event publisher (one containerd, one namespace).

A sandbox leaves the group as a shim of its own would exit: Shutdown with no container left, or no container and no
call for the idle timeout. The group exits once none is left; it closes its control socket in the same step, so a
`start` never hands it a pod after it decided to go (group_registry.py). A `start` adds a sandbox by passing its
listening socket over the control socket; the decision (room, not exiting, not served already) is one step of the
event loop, so concurrent starts never overfill a group.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from proto import ttrpc
from rund import ids
from rund.errors import RundError
from rund.peercred import peer_credentials
from rund.runtime import telemetry
from rund.runtime.events import EventSink
from rund.runtime.task_runtime import TaskRuntime
from rund.shim import forkproto, group_registry, idle, trim
from rund.shim.call_hooks import Hooked
from rund.shim.logs import RoutingHandler
from rund.shim.socket_file import SocketFile
from rund.shim.task_service import TASK_SERVICE, TaskService

log = logging.getLogger("rund.shim.group")

RuntimeFactory = Callable[[str, str, EventSink], TaskRuntime]
REQUEST_TIMEOUT = 5.0       # a start sends its adopt request at once after connecting
SHUTDOWN_GRACE = 2.0


@dataclass
class Member:
    sandbox_id: str
    runtime: TaskRuntime
    server: ttrpc.Server
    socket_file: SocketFile
    watch: idle.IdleWatch
    watching: asyncio.Task | None = None


class Group:
    def __init__(self, namespace: str, capacity: int, make_runtime: RuntimeFactory, emit: EventSink,
                 idle_timeout: float, expected_path: Callable[[str], str], logs: RoutingHandler | None = None,
                 stale: Callable[[], str | None] = lambda: None):
        """`expected_path(sandbox_id)`: the only socket path a sandbox may be served on (its containerd address).
        `stale()`: a file of this process's code changed on disk since it started (an upgrade), or None."""
        self.namespace = namespace
        self.capacity = capacity
        self.members: dict[str, Member] = {}
        self._make_runtime = make_runtime
        self._emit = emit
        self._idle_timeout = idle_timeout
        self._expected_path = expected_path
        self._logs = logs
        self._stale = stale
        self._closing = False
        self._control: socket.socket | None = None
        self._control_file: SocketFile | None = None
        self._pending: set[_ControlConn] = set()
        self._tasks: set[asyncio.Task] = set()
        self._empty = asyncio.Event()

    # ---- membership ----------------------------------------------------------------------------------------------

    def refusal(self, sandbox_id: str) -> str | None:
        """Why a new sandbox may not join, or None."""
        if self._closing:
            return "this group shim is exiting"
        if sandbox_id in self.members:
            return f"it serves sandbox {sandbox_id} already"
        if len(self.members) >= self.capacity:
            return f"it is full ({len(self.members)} of {self.capacity} pods)"
        if (changed := self._stale()) is not None:
            return f"its code changed on disk since it started ({changed}): new pods go to a new group"
        return None

    def admit(self, sandbox_id: str, sock: socket.socket, socket_file: SocketFile, bundle: str | int) -> None:
        """Serve `sandbox_id` on `sock` (bound and listening). Synchronous up to the member's entry: the count
        the next request sees; serving starts on the loop's next turn (the socket's backlog holds connections)."""
        why = self.refusal(sandbox_id)
        if why is not None:
            raise RundError(why)
        if self._logs is not None:
            self._logs.add(sandbox_id, bundle)
        elif isinstance(bundle, int):
            os.close(bundle)
        runtime = self._make_runtime(self.namespace, sandbox_id, self._emit)
        watch = idle.IdleWatch(self._idle_timeout, runtime.has_containers,
                               on_idle=lambda: self.leave(sandbox_id, "no task and no call"),
                               on_quiet=trim.malloc_trim, quiet_after=trim.QUIET_AFTER)
        server = ttrpc.Server()
        service = TaskService(runtime, on_shutdown=lambda: self.leave(sandbox_id, "Shutdown with no task left"))
        # each call runs as this sandbox's (telemetry records, log lines)
        server.register_service(TASK_SERVICE, Hooked(watch.track(service), lambda: telemetry.serving(sandbox_id)))
        member = Member(sandbox_id, runtime, server, socket_file, watch)
        self.members[sandbox_id] = member
        self._mark_room()
        self._spawn(self._serve(member, sock), f"serve-{sandbox_id}")

    async def _serve(self, member: Member, sock: socket.socket) -> None:
        telemetry.serving(member.sandbox_id)
        if self.members.get(member.sandbox_id) is not member:     # left before it was served (a signal)
            sock.close()
            return
        await member.server.serve_listener(sock)
        member.watching = asyncio.create_task(member.watch.run(), name=f"idle-watch-{member.sandbox_id}")
        log.info("serving sandbox %s on %s (pid %d, a group shim: %d of %d pods)", member.sandbox_id,
                 member.socket_file.path, os.getpid(), len(self.members), self.capacity)

    def leave(self, sandbox_id: str, why: str) -> None:
        """Stop serving `sandbox_id` (after the call in flight answered); the group exits with its last sandbox."""
        member = self.members.pop(sandbox_id, None)
        if member is None:
            return
        if not self.members:
            self._close_control()       # decided to exit: no start may hand this group a pod from now on
        self._mark_room()
        self._spawn(self._drop(member, why), f"leave-{sandbox_id}")

    def _mark_room(self) -> None:
        """Full or not on the control socket, the hint a `start` reads before asking (group_registry.mark_full)."""
        if self._control_file is not None and not self._closing:
            group_registry.mark_full(self._control_file.path, len(self.members) >= self.capacity)

    async def _drop(self, member: Member, why: str) -> None:
        telemetry.serving(member.sandbox_id)
        if member.watching is not None:
            member.watching.cancel()
        member.watch.close()
        member.socket_file.remove()     # first: a `start` of the same id may bind the path at once
        await member.server.shutdown(grace=SHUTDOWN_GRACE)
        await member.runtime.close()
        telemetry.forget(member.sandbox_id)
        log.info("sandbox %s left this group shim (%s); %d pods remain", member.sandbox_id, why, len(self.members))
        if self._logs is not None:
            self._logs.remove(member.sandbox_id)
        if self._closing and not self.members:
            self._empty.set()

    def stop_all(self, why: str) -> None:
        for sandbox_id in list(self.members):
            self.leave(sandbox_id, why)
        if not self.members:
            self._close_control()
            if not any(t.get_name().startswith("leave-") for t in self._tasks):
                self._empty.set()

    async def wait_empty(self) -> None:
        """Returns once no sandbox is left and every one of them has been closed."""
        await self._empty.wait()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("group task %s failed", task.get_name(), exc_info=task.exception())

    # ---- control socket ------------------------------------------------------------------------------------------

    def serve_control(self, sock: socket.socket, socket_file: SocketFile) -> None:
        sock.setblocking(False)
        self._control, self._control_file = sock, socket_file
        self._mark_room()
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)

    def _close_control(self) -> None:
        self._closing = True
        if self._control_file is not None:
            self._control_file.remove()
            self._control_file = None
        if self._control is not None:
            asyncio.get_running_loop().remove_reader(self._control.fileno())
            self._control.close()
            self._control = None
        for conn in list(self._pending):
            conn.close()

    def _accept(self) -> None:
        try:
            conn, _ = self._control.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.warning("control socket: accept: %s", e)
            return
        conn.setblocking(False)
        if peer_credentials(conn).uid != os.geteuid():     # root's: only containerd's `start` places pods
            log.warning("control socket: refused a connection from another user")
            conn.close()
            return
        self._pending.add(_ControlConn(self, conn))

    def handle_adopt(self, msg: dict, fds: list[int]) -> bytes:
        """One adopt request, decided now. Takes the fds (closes them unless adopted)."""
        try:
            sandbox_id = ids.validate(msg.get("sandbox") if isinstance(msg.get("sandbox"), str) else "", "sandbox id")
            path = msg.get("path")
            if msg.get("t") != "adopt" or len(fds) != group_registry.ADOPT_FDS:
                raise RundError(f"expected an adopt request with {group_registry.ADOPT_FDS} fds")
            if path != self._expected_path(sandbox_id):
                raise RundError(f"sandbox {sandbox_id} is not served at {path!r}")
            why = self.refusal(sandbox_id)
            if why is not None:             # a group's everyday answer (full, exiting): not worth a log line
                log.debug("refused to serve sandbox %s: %s", sandbox_id, why)
                return group_registry.refused(why)
            sock = socket.socket(fileno=fds[0])
            fds[0] = -1
            try:
                listening = sock.family == socket.AF_UNIX and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            except OSError:
                listening = False
            if not listening:
                sock.close()
                raise RundError("the passed socket is not a listening unix socket")
            path_fd, fds[1] = fds[1], -1
            try:
                socket_file = SocketFile.adopt(path, path_fd)      # closes path_fd when it refuses
            except ValueError as e:
                sock.close()
                raise RundError(str(e)) from None
            self.admit(sandbox_id, sock, socket_file, fds[2])
            fds[2] = -1
            return group_registry.adopted()
        except (RundError, OSError) as e:      # OSError: an fd that is no socket, say
            log.info("refused to serve a pod: %s", e)
            return group_registry.refused(str(e))
        finally:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)


class _ControlConn:
    """One `start` on the control socket: its request read as it arrives, answered once, closed."""

    def __init__(self, group: Group, conn: socket.socket):
        self._group, self._conn = group, conn
        self._dec = forkproto.Decoder()
        self._fds: list[int] = []
        loop = asyncio.get_running_loop()
        loop.add_reader(conn.fileno(), self._readable)
        self._timer = loop.call_later(REQUEST_TIMEOUT, self.close)

    def _readable(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self._conn, 65536, group_registry.ADOPT_FDS + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self._fds.extend(fds)
        if not data:
            self.close()
            return
        try:
            msgs = self._dec.feed(data)
        except forkproto.ProtocolError:
            self.close()
            return
        if not msgs:
            return
        fds, self._fds = self._fds, []
        answer = self._group.handle_adopt(msgs[0], fds)
        sandbox_id = msgs[0].get("sandbox")
        try:
            self._conn.send(answer)     # a few bytes into an empty socket buffer: never blocks
        except OSError as e:
            if answer == group_registry.adopted():
                log.warning("the start of sandbox %s went away before it was answered: not serving it", sandbox_id)
                self._group.leave(sandbox_id, "its start went away")
            else:
                log.debug("control socket: answering: %s", e)
        self.close()

    def close(self) -> None:
        if self._conn is None:
            return
        self._timer.cancel()
        asyncio.get_running_loop().remove_reader(self._conn.fileno())
        self._conn.close()
        self._conn = None
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        self._group._pending.discard(self)
