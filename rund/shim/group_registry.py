"""Where the group shims of a state dir are found, and what `start` and a group shim say to each other.

    <state_dir>/shim-groups/<key>.lock          flock: every `start` that places a pod into group <key> holds it
    <state_dir>/shim-groups/<key>/<name>.sock   one control socket per live group shim (0600, root), which is
                                                also the shim's working directory's entry (`peer.identify`)

<key> names what a group's pods must share: the containerd (its address), the namespace and the runtime class's
config file, and the code (interpreter, checkout, version). A group shim removes its control socket before it
decides to exit; a socket nobody listens on (its shim was killed) is removed by the next `start` of that key.
A full group sets its control socket's owner-execute bit (0700; 0600 with room) and clears it when a pod leaves,
so a `start` passes full groups by a stat instead of a round trip to each: with 1000 pods in groups of 8, a start
asked up to 124 full groups. Only a hint: the group still decides, and a stale bit costs a new group at most.

Control protocol (forkproto's framing: a 4-byte length and a JSON object):
    start -> shim   {"t": "adopt", "sandbox": ID, "path": SOCKET PATH}
                    + SCM_RIGHTS, with the frame's first byte: [the sandbox's listening socket, an O_PATH fd of its
                    socket file, the bundle directory]
    shim -> start   {"t": "adopted"}                serve that sandbox on that socket from now on
                    {"t": "refused", "reason": ...}  full, exiting, or it serves that sandbox already
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator

from rund import __version__
from rund.shim import forkproto

GROUPS_DIR = "shim-groups"
CONTROL_SUFFIX = ".sock"
ADOPT_FDS = 3
ROOM_MODE, FULL_MODE = 0o600, 0o700


def group_key(containerd_address: str, namespace: str, config_path: str) -> str:
    text = json.dumps([containerd_address, namespace, config_path, forkproto.origin(), __version__])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def key_dir(state_dir: str, key: str) -> str:
    return os.path.join(state_dir, GROUPS_DIR, key)


@contextlib.contextmanager
def locked(state_dir: str, key: str) -> Iterator[int]:
    """Hold group <key>'s lock (blocking: a holder only probes sockets or forks a shim); yields the lock's fd, which
    a process forked meanwhile must close."""
    os.makedirs(key_dir(state_dir, key), mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, GROUPS_DIR, f"{key}.lock"),
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def control_sockets(directory: str) -> list[str]:
    """The control sockets of a key's groups, oldest name first."""
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(CONTROL_SUFFIX))
    except FileNotFoundError:
        return []
    return [os.path.join(directory, n) for n in names]


def mark_full(control: str, full: bool) -> None:
    with contextlib.suppress(OSError):      # gone: the group is exiting
        os.chmod(control, FULL_MODE if full else ROOM_MODE)


def marked_full(control: str) -> bool:
    try:
        return os.stat(control).st_mode & 0o777 == FULL_MODE
    except OSError:
        return False


def sweep(state_dir: str) -> int:
    """Remove the control sockets of dead groups (killed: nothing listens), each under its key's lock; returns how
    many. `delete` runs it: containerd runs `delete` for every pod of a group that died."""
    top = os.path.join(state_dir, GROUPS_DIR)
    try:
        keys = [n for n in os.listdir(top) if os.path.isdir(os.path.join(top, n))]
    except OSError:
        return 0
    removed = 0
    for key in keys:
        dead = [p for p in control_sockets(os.path.join(top, key)) if not _listening(p)]
        if not dead:
            continue
        with locked(state_dir, key):
            for path in dead:
                if not _listening(path):
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                        removed += 1
    return removed


def _listening(path: str) -> bool:
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.setblocking(False)
        try:
            s.connect(path)
        except (BlockingIOError, InterruptedError):
            return True             # alive, its backlog full
        except OSError:
            return False
    return True


def new_control_path(directory: str) -> str:
    return os.path.join(directory, f"{os.urandom(6).hex()}{CONTROL_SUFFIX}")


SOCKET_PATH_MAX = 107           # sun_path's 108 bytes with the NUL


def fits(state_dir: str) -> bool:
    """Whether a control socket's path under `state_dir` fits a unix socket address (else: a shim per pod)."""
    return len(new_control_path(key_dir(state_dir, "0" * 16)).encode()) <= SOCKET_PATH_MAX


def adopt_request(sandbox_id: str, path: str) -> bytes:
    return forkproto.encode({"t": "adopt", "sandbox": sandbox_id, "path": path})


def adopted() -> bytes:
    return forkproto.encode({"t": "adopted"})


def refused(reason: str) -> bytes:
    return forkproto.encode({"t": "refused", "reason": reason})
