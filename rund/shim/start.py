"""The `start` action: find or create the pod's shim socket, daemonize the server, print its address.

The socket is bound and listening before the address is printed (containerd dials at once and does not retry),
the server child leaves containerd's output pipes (containerd waits for EOF on them), and the bundle's `address`
file is always written, also when an existing pod shim is reused.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sys

from rund.errors import FailedPrecondition, InvalidArgument, RundError
from rund.shim import address as addr
from rund.shim.flags import ShimArgs


def _annotations(bundle: str) -> dict[str, str]:
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = json.load(f)
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"cannot read the bundle's config.json: {e}") from None
    ann = spec.get("annotations") or {}
    return ann if isinstance(ann, dict) else {}


def _can_connect(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def _listen(path: str) -> socket.socket | None:
    """A listening socket at path, or None when a live shim already serves it."""
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            sock.close()
            raise
        if _can_connect(path):
            sock.close()
            return None
        os.unlink(path)           # a dead shim's leftover
        sock.bind(path)
    sock.listen(128)
    return sock


def start(args: ShimArgs) -> int:
    bundle = os.getcwd()
    try:
        ann = _annotations(bundle)
        group = addr.sandbox_id(args.id, ann)
        address = addr.socket_address(args.address, args.namespace, group)
        path = addr.socket_path(address)
        if addr.is_pod_member(args.id, ann):
            if not _can_connect(path):
                raise FailedPrecondition(f"sandbox {group} of container {args.id} has no running rund shim")
            sock = None
        else:
            sock = _listen(path)
    except (RundError, OSError) as e:
        print(f"rund start: {e}", file=sys.stderr)
        return 1
    if sock is not None:
        try:
            from rund.runtime.sandbox_runtime import SandboxRuntime
        except ImportError as e:   # the VM-backed runtime is not in this build yet (see the issue tracker)
            sock.close()
            os.unlink(path)
            print(f"rund start: cannot load the task runtime: {e}", file=sys.stderr)
            return 1
        pid = os.fork()
        if pid == 0:  # the server child: never returns
            _become_daemon()
            code = 1
            try:
                from rund.shim.serve import serve
                code = serve(args, sock, bundle, group, SandboxRuntime)
            finally:
                os._exit(code)
        sock.close()
    addr.write_address_file(bundle, address)
    sys.stdout.write(address)
    sys.stdout.flush()
    return 0


def _become_daemon() -> None:
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
