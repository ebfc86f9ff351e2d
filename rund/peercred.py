"""Who is at the other end of a connected unix socket: the kernel's SO_PEERCRED (the peer's pid, uid and gid as of
its connect or listen). One reading for every local protocol of rund: the shim fork server, shim groups, a shim
adopting a live socket, spare VM keepers."""
from __future__ import annotations

import socket
import struct
from typing import NamedTuple

_UCRED = "3i"     # struct ucred: pid_t, uid_t, gid_t


class PeerCredentials(NamedTuple):
    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(_UCRED))
    return PeerCredentials(*struct.unpack(_UCRED, raw))
