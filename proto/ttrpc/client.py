"""The asyncio ttrpc client: many concurrent unary calls on one connection.

A call costs one future: the frame is written synchronously, and the connection's read side
(the event loop's protocol callback, or one reader task for stream pairs) resolves the future
whose stream id the response carries.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from .codec import HEADER, MAX_DATA_LENGTH, Frame, MessageType, OversizedFrame, Decoder
from .envelope import decode_response, encode_request, encode_route
from .errors import ConnectionClosed, DeadlineExceeded, Internal, ResourceExhausted, Unavailable, error_for
from .transport import SocketLink, StreamLink

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Message)
Metadata = Mapping[str, str | Sequence[str]]

_REQUEST = int(MessageType.REQUEST)
_RESPONSE = int(MessageType.RESPONSE)
_LAST_STREAM_ID = 0xFFFFFFFF


class Client:
    """A ttrpc client over a connected asyncio stream pair (see :meth:`connect_unix` for sockets).

    Construct it inside a running event loop.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._setup(StreamLink(reader, writer))

    @classmethod
    async def connect_unix(cls, path: str) -> Client:
        """Connect to a ttrpc server on a unix socket; Unavailable if nothing is listening there."""
        loop = asyncio.get_running_loop()
        try:
            _, link = await loop.create_unix_connection(SocketLink, path)
        except OSError as e:
            raise Unavailable(f"ttrpc: connect {path}: {e.strerror or e}") from e
        client = cls.__new__(cls)
        client._setup(link)
        return client

    def _setup(self, link: SocketLink | StreamLink) -> None:
        self._loop = asyncio.get_running_loop()
        self._link = link
        self._decoder = Decoder()
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 1
        self._closed: ConnectionClosed | None = None
        self._routes: dict[tuple[str, str], bytes] = {}
        link.attach(self)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_cls: type[R],
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> R:
        """One unary call. Raises the TtrpcError subclass of a non-OK status; DeadlineExceeded when
        ``timeout`` (seconds, also sent to the server) runs out; ConnectionClosed if the connection goes."""
        if self._closed is not None:
            raise self._closed
        route = self._routes.get((service, method))
        if route is None:
            route = self._routes[(service, method)] = encode_route(service, method)
        timeout_nano = 0
        if timeout is not None:
            timeout_nano = max(1, int(timeout * 1e9))  # 0 would mean "no deadline" to the server
        data = encode_request(route, request.SerializeToString(), timeout_nano, metadata)
        if len(data) > MAX_DATA_LENGTH:
            raise ResourceExhausted(f"message length {len(data)} exceed maximum message size of {MAX_DATA_LENGTH}")
        sid = self._next_id
        if sid > _LAST_STREAM_ID:
            raise ResourceExhausted("ttrpc: stream ids exhausted on this connection")
        self._next_id = sid + 2
        future = self._loop.create_future()
        self._pending[sid] = future
        try:
            self._link.write(HEADER.pack(len(data), sid, _REQUEST, 0) + data)
            if self._link.paused:
                await self._link.drain()
            if timeout is None:
                body = await future
            else:
                timer = self._loop.call_later(timeout, _expire, future)
                try:
                    body = await future
                finally:
                    timer.cancel()
        finally:
            del self._pending[sid]
        code, message, payload = decode_response(body)
        if code:
            raise error_for(code, message)
        try:
            return response_cls.FromString(payload)
        except DecodeError as e:
            raise Internal(f"ttrpc: unmarshal {response_cls.__name__} error: {e}") from None

    # -- receiver side (called by the link) --------------------------------------------------

    def on_data(self, data: bytes) -> None:
        decoder = self._decoder
        decoder.feed(data)
        pending = self._pending
        while (event := decoder.next_event()) is not None:
            if type(event) is Frame and event.type == _RESPONSE:
                future = pending.get(event.stream_id)
                if future is not None:
                    if not future.done():
                        future.set_result(event.data)
                    continue
            self._on_other(event)

    def _on_other(self, event: object) -> None:
        if type(event) is OversizedFrame:
            future = self._pending.get(event.stream_id)
            if future is not None and not future.done():
                future.set_exception(
                    ResourceExhausted(
                        f"message length {event.length} exceed maximum message size of {MAX_DATA_LENGTH}"
                    )
                )
                return
        sid = event.stream_id  # type: ignore[attr-defined]
        if type(event) is Frame and event.type == _RESPONSE and sid < self._next_id and sid & 1:
            log.debug("ttrpc: response for abandoned stream %d dropped", sid)  # timed out or cancelled here
        else:
            log.warning("ttrpc: unexpected %r from server; dropped", event)

    def on_closed(self, exc: BaseException | None) -> None:
        self._fail_all(ConnectionClosed("ttrpc: closed" if exc is None else f"ttrpc: connection lost: {exc}"))

    def _fail_all(self, error: ConnectionClosed) -> None:
        if self._closed is None:
            self._closed = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    # -- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection; pending calls fail with ConnectionClosed."""
        self._fail_all(ConnectionClosed("ttrpc: client closed"))
        self._link.close()
        await self._link.wait_closed()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _expire(future: asyncio.Future[bytes]) -> None:
    # A timer on the future is cheaper than asyncio.timeout(), which cancels and uncancels the task.
    if not future.done():
        future.set_exception(DeadlineExceeded("context deadline exceeded"))
