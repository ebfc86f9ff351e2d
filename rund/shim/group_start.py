"""`start` with `[shim] pods_per_shim` = N > 1: the new pod's socket (bound and listening at its usual address, as
for a shim of its own) goes to a live group shim of its key serving fewer than N pods, else to a new group shim.

Under the key's flock (group_registry.py), so concurrent starts of one key place pods one at a time: each live
group not marked full is asked in turn over its control socket (it decides by itself: room, not exiting); the
first that adopts the socket serves the pod. A control socket nobody listens on is a dead group's and is removed.
When the answer is lost after the socket was sent (the group may hold it), the socket file is replaced by a fresh
socket before anything else is tried, so a pod's address is never served by two processes. No group with room: a
new one is forked here with a control socket of its own, registered before the lock is released.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from rund.errors import Unavailable
from rund.peercred import peer_credentials
from rund.shim import forkproto, group_registry
from rund.shim.socket_file import SocketFile

log = logging.getLogger("rund.shim")

ANSWER_TIMEOUT = 5.0        # a group answers within one turn of its event loop
BACKLOG = 128


@dataclass
class GroupSpawn:
    """What a new group shim is started with (start._spawn's child serves it with serve.serve_group)."""
    control: socket.socket
    control_file: SocketFile
    capacity: int
    workdir: str            # the key's directory: the group's working directory (no pod's bundle: they go first)


class _Fd:
    """An fd the forked daemon must not keep (the key's lock)."""

    def __init__(self, fd: int):
        self.fd = fd

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


ADOPTED, REFUSED, LOST = "adopted", "refused", "lost"


def place(sandbox_id: str, path: str, bound: tuple[socket.socket, SocketFile], bundle: str, state_dir: str,
          key: str, capacity: int, rebind: Callable[[str], tuple[socket.socket, SocketFile] | None],
          spawn: Callable[[socket.socket, SocketFile, GroupSpawn, list], None]) -> bool:
    """True if a live group adopted the pod's socket; else `spawn(sock, socket_file, group, close_in_child)` ran
    (a new group serves it). `rebind(path)`: a fresh listening socket at path (start._bind)."""
    directory = group_registry.key_dir(state_dir, key)
    with group_registry.locked(state_dir, key) as lock_fd:
        for control in group_registry.control_sockets(directory):
            if group_registry.marked_full(control):
                continue
            outcome = hand_over(control, sandbox_id, path, *bound, bundle)
            if outcome == ADOPTED:
                bound[0].close()
                bound[1].close()        # the group's now
                return True
            if outcome == LOST:
                bound[1].remove()
                bound[0].close()
                fresh = rebind(path)
                if fresh is None:
                    raise Unavailable(f"{path} was taken while handing it to a group shim")
                bound = fresh
        sock, socket_file = bound
        control, control_file = listen_control(directory)
        try:
            spawn(sock, socket_file, GroupSpawn(control, control_file, capacity, directory), [_Fd(lock_fd)])
        except BaseException:
            control_file.remove()
            control.close()
            raise
        return False


def listen_control(directory: str) -> tuple[socket.socket, SocketFile]:
    path = group_registry.new_control_path(directory)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    socket_file = SocketFile(path)
    sock.listen(BACKLOG)
    return sock, socket_file


def hand_over(control: str, sandbox_id: str, path: str, sock: socket.socket, socket_file: SocketFile,
              bundle: str) -> str:
    """Ask the group on `control` to serve `sandbox_id` on `sock`: ADOPTED, REFUSED (it did not take the socket),
    or LOST (no answer after the socket was sent: it may hold it)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(ANSWER_TIMEOUT)
    with conn:
        try:
            conn.connect(control)
        except ConnectionRefusedError:
            _remove_dead(control)
            return REFUSED
        except OSError:
            return REFUSED
        if peer_credentials(conn).uid != os.geteuid():
            return REFUSED
        frame = group_registry.adopt_request(sandbox_id, path)
        bundle_fd = os.open(bundle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if socket.send_fds(conn, [frame[:1]], [sock.fileno(), socket_file.fileno(), bundle_fd]) != 1:
                return LOST
        except OSError:
            return REFUSED              # not sent: nothing of ours is there
        finally:
            os.close(bundle_fd)
        try:
            conn.sendall(frame[1:])
            msg = forkproto.recv_message(conn)
        except (OSError, forkproto.ProtocolError):
            return LOST
        if msg is None:
            return LOST
        if msg.get("t") == "adopted":
            return ADOPTED
        log.debug("group %s: %s", control, msg.get("reason"))
        return REFUSED


def _remove_dead(control: str) -> None:
    """A control socket nobody listens on (its group was killed); the key's lock is held, so no group is starting
    there."""
    try:
        os.unlink(control)
    except OSError:
        pass
