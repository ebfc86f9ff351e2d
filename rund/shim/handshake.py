"""`start` and its daemon child agree on who goes on: the child serves only once `start` is about to print the
address. A `start` killed or failed before that (containerd kills it when a start is cancelled) leaves a child that
exits at once instead of waiting for a containerd that will never connect.

    parent, child = pair()          # before fork
    child:  ready(child_end)        # after it took over the listening socket
    parent: wait_ready(parent_end)  # then write the address file, go(parent_end), print the address
    child:  got_go(child_end)       # False: `start` died before go; exit and remove the socket
"""
from __future__ import annotations

import socket

from rund.errors import Unavailable

READY, GO = b"R", b"G"
READY_TIMEOUT = 10.0        # the child has only setsid, dup2 and listen to do before it is ready


def pair() -> tuple[socket.socket, socket.socket]:
    """(parent's end, child's end), both close-on-exec."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def ready(chan: socket.socket) -> None:
    chan.sendall(READY)


def wait_ready(chan: socket.socket, timeout: float = READY_TIMEOUT) -> None:
    chan.settimeout(timeout)
    try:
        got = chan.recv(1)
    except OSError as e:            # socket.timeout included
        raise Unavailable(f"the shim daemon did not come up: {e or 'timed out'}") from None
    if got != READY:
        raise Unavailable("the shim daemon exited while starting")


def go(chan: socket.socket) -> None:
    chan.sendall(GO)


def got_go(chan: socket.socket, timeout: float) -> bool:
    """True once `start` said go; False if it died first (EOF) or did not say so within `timeout`."""
    chan.settimeout(timeout)
    try:
        return chan.recv(1) == GO
    except OSError:
        return False
