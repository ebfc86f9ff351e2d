"""The `start` action: find or create the pod's shim socket, daemonize the server, print its address.

The socket is bound and listening before the address is printed (containerd dials at once and does not retry),
the server child leaves containerd's output pipes (containerd waits for EOF on them), and the bundle's `address`
file is always written, also when an existing pod shim is reused. Every id is checked before it names a path.

A live socket is adopted only from a shim of this containerd whose bundle still exists (peer.py); a stale one is
asked to exit first. A daemon whose `start` dies before printing the address exits at once (handshake.py), and one
nobody uses exits after a while (idle.py). With `[shim] pods_per_shim` > 1 the new sandbox's socket goes to a group
shim serving several pods instead of a daemon of its own (group_start.py).
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
from collections.abc import Callable, Sequence

from rund import ids
from rund.errors import FailedPrecondition, InvalidArgument, RundError, Unavailable
from rund.shim import address as addr
from rund.shim import handshake, idle, peer
from rund.shim.flags import ShimArgs
from rund.shim.socket_file import SocketFile

BACKLOG = 128
STARTED_BY = "start"        # or "the fork server (pid N)": the daemon's first log line tells which path made it
PRELOADED: frozenset[str] = frozenset()     # forked: the modules the daemon got from the fork server
SOCKET_UMASK = 0o177        # the socket file is 0600, as runc's shim makes it: containerd connects as root


def _annotations(bundle: str) -> dict[str, str]:
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = json.load(f)
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"cannot read the bundle's config.json: {e}") from None
    ann = spec.get("annotations") or {}
    return ann if isinstance(ann, dict) else {}


def _bind(path: str) -> tuple[socket.socket, SocketFile] | None:
    """A listening socket at path, or None when something live already listens there."""
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            _bind_private(sock, path)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            if peer.probe(path) is not None:
                sock.close()
                return None
            os.unlink(path)           # a dead shim's leftover
            _bind_private(sock, path)
        socket_file = SocketFile(path)
    except BaseException:
        sock.close()
        raise
    try:
        sock.listen(BACKLOG)
    except BaseException:
        socket_file.remove()
        sock.close()
        raise
    return sock, socket_file


def _bind_private(sock: socket.socket, path: str) -> None:
    old = os.umask(SOCKET_UMASK)      # so the file is never, even briefly, connectable by others
    try:
        sock.bind(path)
    finally:
        os.umask(old)


def _listen_or_adopt(path: str, args: ShimArgs,
                     own_bundle: tuple[int, int] | None) -> tuple[socket.socket, SocketFile] | None:
    """A new listening socket, or None to adopt the live shim there (see peer.refusal)."""
    for _ in range(2):
        bound = _bind(path)
        if bound is not None:
            return bound
        shim = peer.probe(path)
        if shim is None:
            continue                  # it exited meanwhile: bind again
        why = peer.refusal(shim, args, own_bundle)
        if why is None:
            return None
        if not shim.same_containerd(args):
            raise FailedPrecondition(f"{path} is taken: {why}")
        if not peer.retire(path, shim, args.id):
            raise FailedPrecondition(f"{path} is taken: {why}, and it did not exit (it still has tasks?)")
    raise FailedPrecondition(f"{path} is taken by another shim starting at the same time")


def _join(path: str, args: ShimArgs, group: str) -> None:
    """A pod member: the sandbox's shim must be alive, of this containerd, with its bundle in place."""
    shim = peer.probe(path)
    if shim is None:
        raise FailedPrecondition(f"sandbox {group} of container {args.id} has no running rund shim")
    why = peer.refusal(shim, args, None)
    if why is not None:
        raise FailedPrecondition(f"sandbox {group} of container {args.id}: {why}")


def start(args: ShimArgs) -> int:
    """`start` in this process (the exec path; the fork server's worker runs start_shim)."""
    from rund.shim import client
    try:
        address = start_shim(args, os.getcwd(), config_path=client.start_config_path())
    except (RundError, OSError) as e:
        print(f"rund start: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(address)
    sys.stdout.flush()
    return 0


def start_shim(args: ShimArgs, bundle: str, confirm: Callable[[str], bool] | None = None,
               close_in_child: Sequence[socket.socket] = (), config_path: str = "") -> str:
    """The pod's shim address, its daemon started (or a live one adopted). `confirm(address)`: called once a new
    daemon is ready and the address file written; the daemon serves only if it returns True (the fork server's
    client has printed the address). `close_in_child`: sockets the daemon must not keep. `config_path`: the
    runtime class's config file, read for `[shim] pods_per_shim` (a new pod joins a group shim: group_start.py)."""
    ids.validate(args.id, "container id")     # before anything names a path
    ids.validate(args.namespace, "namespace")
    idle_timeout = idle.timeout_from_env()
    ann = _annotations(bundle)
    group = addr.sandbox_id(args.id, ann)
    address = addr.socket_address(args.address, args.namespace, group)
    path = addr.socket_path(address)
    if addr.is_pod_member(args.id, ann):
        _join(path, args, group)
        bound = None
    else:
        st = os.stat(bundle)
        own = (st.st_dev, st.st_ino) if group == args.id else None   # a shim for this very id: in this bundle
        bound = _listen_or_adopt(path, args, own)
    if bound is None:
        addr.write_address_file(bundle, address)
        return address
    from rund.shim import client
    pods, state_dir, merge = client.spawn_settings(config_path)
    if pods > 1 and group == args.id and _group_fits(state_dir):   # a sandbox's own start, not a pod member's
        _start_in_group(args, bound, bundle, group, address, idle_timeout, confirm, close_in_child, config_path,
                        pods, state_dir, merge)
    else:
        _spawn(args, *bound, bundle, group, address, idle_timeout, confirm, close_in_child, merge=merge)
    return address


def _group_fits(state_dir: str) -> bool:
    """A group's control socket under `state_dir` fits a unix socket address (else: a shim per pod)."""
    from rund.shim import group_registry
    return group_registry.fits(state_dir)


def _start_in_group(args: ShimArgs, bound: tuple[socket.socket, SocketFile], bundle: str, group: str,
                    address: str, idle_timeout: float, confirm: Callable[[str], bool] | None,
                    close_in_child: Sequence[socket.socket], config_path: str, pods: int, state_dir: str,
                    merge: bool = False) -> None:
    from rund.shim import group_registry, group_start

    def spawn(sock, socket_file, spawn_group, also_close):
        _spawn(args, sock, socket_file, bundle, group, address, idle_timeout, confirm,
               [*close_in_child, *also_close], spawn_group, merge=merge)
    key = group_registry.group_key(args.address, args.namespace, config_path)
    if group_start.place(group, addr.socket_path(address), bound, bundle, state_dir, key, pods, _bind, spawn):
        addr.write_address_file(bundle, address)


def _spawn(args: ShimArgs, sock: socket.socket, socket_file: SocketFile, bundle: str, group: str, address: str,
           idle_timeout: float, confirm: Callable[[str], bool] | None = None,
           close_in_child: Sequence[socket.socket] = (), group_spawn=None, merge: bool = False) -> None:
    """Fork the daemon serving `sock`; returns in `start` once the daemon is up and told to go on. `group_spawn`
    (group_start.GroupSpawn): the daemon is a group shim, `sock` its first pod's. `merge`: [shim] merge_memory, the
    daemon's private memory offered to KSM (PR_SET_MEMORY_MERGE)."""
    try:
        from rund.runtime.sandbox_runtime import SandboxRuntime   # before fork: the child starts warm
        from rund.shim.serve import serve, serve_group
        if merge:   # here, not in the child: a kernel without it fails this start with its error. The flag is
            # inherited by the daemon; this process (`start`, or the fork server's one-shot worker) exits soon.
            from rund.hypervisor.process import set_memory_merge
            set_memory_merge()
        parent_end, child_end = handshake.pair()
    except BaseException:
        socket_file.remove()
        sock.close()
        raise
    pid = os.fork()
    if pid == 0:  # the server child: never returns
        code = 1
        try:
            parent_end.close()
            for s in close_in_child:
                s.close()
            _become_daemon()
            sock.listen(BACKLOG)      # again: the socket's peer credentials now name this daemon (peer.py)
            if group_spawn is None:
                handshake.ready(child_end)
                code = serve(args, sock, socket_file, bundle, group, SandboxRuntime, child_end, idle_timeout)
            else:
                group_spawn.control.listen(BACKLOG)
                bundle_fd = os.open(bundle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                os.chdir(group_spawn.workdir)   # no pod's bundle: the group outlives the pod that started it
                handshake.ready(child_end)
                code = serve_group(args, sock, socket_file, bundle_fd, group, SandboxRuntime, child_end,
                                   idle_timeout, group_spawn)
        finally:
            os._exit(code)
    child_end.close()
    sock.close()
    socket_file.close()               # the child's now
    if group_spawn is not None:
        group_spawn.control.close()
        group_spawn.control_file.close()
    with parent_end:                  # on any failure before go, the child exits and removes the socket
        handshake.wait_ready(parent_end)
        addr.write_address_file(bundle, address)
        if confirm is not None and not confirm(address):
            raise Unavailable("the start client went away before printing the address")
        handshake.go(parent_end)


def _become_daemon() -> None:
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
