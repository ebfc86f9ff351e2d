"""The asyncio ttrpc server: listens on unix sockets, any listening socket, or serves given streams."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat

from google.protobuf.descriptor import ServiceDescriptor

from .server_connection import ServerConnection
from .service import ServiceTable
from .transport import SocketLink, StreamLink

log = logging.getLogger(__name__)


class Server:
    def __init__(self) -> None:
        self._services = ServiceTable()
        self._listeners: list[asyncio.AbstractServer] = []
        self._socket_paths: list[str] = []
        self._connections: set[ServerConnection] = set()
        self._shutting_down = False

    def register_service(self, descriptor: ServiceDescriptor, impl: object) -> None:
        """Serve ``descriptor``'s methods with ``impl.<Method>(ctx, request) -> response`` coroutines."""
        self._services.register(descriptor, impl)

    async def serve_unix(self, path: str) -> None:
        """Bind and listen on ``path`` (a stale socket file there is replaced); returns once listening."""
        loop = asyncio.get_running_loop()
        listener = await loop.create_unix_server(self._new_link, path)
        self._listeners.append(listener)
        self._socket_paths.append(path)

    async def serve_listener(self, sock: socket.socket) -> None:
        """Serve an already-bound, listening stream socket (unix, vsock, ...), e.g. one passed as fd 3."""
        loop = asyncio.get_running_loop()
        if sock.family == socket.AF_UNIX:
            listener = await loop.create_unix_server(self._new_link, sock=sock)
        else:
            listener = await loop.create_server(self._new_link, sock=sock)
        self._listeners.append(listener)

    async def serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connected byte stream until it closes (or the server shuts down)."""
        conn = self._open(StreamLink(reader, writer))
        try:
            await conn.wait_closed()
        finally:
            conn.close()  # when cancelled: stop serving, cancel the calls in flight
            await asyncio.shield(conn.wait_closed())

    def _new_link(self) -> SocketLink:
        link = SocketLink()
        self._open(link)
        return link

    def _open(self, link: SocketLink | StreamLink) -> ServerConnection:
        conn = ServerConnection(self._services, link, self._connections.discard)
        self._connections.add(conn)
        link.attach(conn)
        if self._shutting_down:
            conn.begin_shutdown()
        return conn

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop accepting; let calls in flight answer for up to ``grace`` seconds; close everything."""
        self._shutting_down = True
        for listener in self._listeners:
            listener.close()
        conns = list(self._connections)
        for conn in conns:
            conn.begin_shutdown()
        in_flight = [task for conn in conns for task in conn.tasks.values()]
        if in_flight:
            _, late = await asyncio.wait(in_flight, timeout=grace)
            if late:
                log.warning("ttrpc: shutdown: cancelling %d calls still running after %.1fs", len(late), grace)
        while self._connections:
            conns = list(self._connections)
            for conn in conns:
                conn.close()
            await asyncio.gather(*(conn.wait_closed() for conn in conns))
            self._connections.difference_update(conns)
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()
        for path in self._socket_paths:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
        self._socket_paths.clear()
