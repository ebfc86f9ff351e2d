"""One client connection on the server side: frames in, a task per request, responses out."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from google.protobuf.message import DecodeError, Message

from . import codec
from .codec import HEADER, MAX_DATA_LENGTH, Decoder, Frame, MessageType, OversizedFrame, ServerStreamIds
from .context import Context
from .envelope import decode_request, encode_response, encode_status_response
from .errors import (
    Canceled, DeadlineExceeded, Internal, InvalidArgument, ResourceExhausted, TtrpcError, Unavailable, Unknown,
)
from .service import Method, ServiceTable
from .transport import SocketLink, StreamLink

log = logging.getLogger(__name__)

_REQUEST = int(MessageType.REQUEST)
_RESPONSE = int(MessageType.RESPONSE)
_DATA = int(MessageType.DATA)


class ServerConnection:
    def __init__(
        self,
        services: ServiceTable,
        link: SocketLink | StreamLink,
        on_gone: Callable[[ServerConnection], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._services = services
        self._link = link
        self._on_gone = on_gone
        self._decoder = Decoder()
        self._ids = ServerStreamIds()
        self.tasks: dict[int, asyncio.Task[None]] = {}  # in-flight calls by stream id
        self._draining = False  # shutting down: in-flight calls finish, new ones are refused
        self._closed = False

    # -- receiver side (called by the link) --------------------------------------------------

    def on_data(self, data: bytes) -> None:
        if self._closed:
            return
        decoder = self._decoder
        decoder.feed(data)
        while (event := decoder.next_event()) is not None:
            if type(event) is Frame and event.type == _REQUEST:
                self._on_request(event)
            else:
                self._on_other(event)
            if self._closed:
                return

    def on_closed(self, exc: BaseException | None) -> None:
        if exc is not None:
            log.debug("ttrpc: connection lost: %r", exc)
        self._close()
        self._on_gone(self)

    # -- requests ------------------------------------------------------------------------------

    def _on_request(self, frame: Frame) -> None:
        sid = frame.stream_id
        try:
            self._ids.admit_request(sid)
            req = decode_request(frame.data)
            method = self._services.lookup(req.service, req.method)
            try:
                request = method.request_type.FromString(req.payload)
            except DecodeError as e:
                raise InvalidArgument(f"unmarshal {method.request_type.__name__} error: {e}") from None
            if self._draining:
                raise Unavailable("ttrpc: server shutting down")
        except TtrpcError as e:
            self._respond(sid, encode_status_response(e.code, e.message))
            return
        metadata: dict[str, list[str]] = {}
        for kv in req.metadata:
            metadata.setdefault(kv.key, []).append(kv.value)
        timeout = req.timeout_nano
        deadline = self._loop.time() + timeout / 1e9 if timeout else None  # negative: already expired, as in Go
        ctx = Context(req.service, req.method, metadata, deadline, self._loop)
        self.tasks[sid] = self._loop.create_task(self._serve(sid, method, ctx, request))

    def _on_other(self, event: codec.Event) -> None:
        if type(event) is OversizedFrame:
            self._respond(
                event.stream_id,
                encode_status_response(
                    ResourceExhausted.code,
                    f"message length {event.length} exceed maximum message size of {MAX_DATA_LENGTH}",
                ),
            )
            log.warning("ttrpc: oversized frame (%d bytes) on stream %d; closing", event.length, event.stream_id)
            self._close()
            return
        sid = event.stream_id
        try:
            ServerStreamIds.check_odd(sid)
        except InvalidArgument as e:
            self._respond(sid, encode_status_response(e.code, e.message))
            return
        if type(event) is Frame and event.type == _DATA:
            # We serve unary calls only: no stream is ever open to receive data.
            self._respond(sid, encode_status_response(InvalidArgument.code, "StreamID is no longer active"))
        else:
            log.debug("ttrpc: ignoring frame of type %d on stream %d", event.type, sid)  # future compat, as in Go

    async def _serve(self, sid: int, method: Method, ctx: Context, request: Message) -> None:
        try:
            timer = None
            try:
                if ctx.deadline is None:
                    response = await method.handler(ctx, request)
                else:
                    timer = asyncio.timeout_at(ctx.deadline)
                    async with timer:
                        response = await method.handler(ctx, request)
                body = self._encode_result(method, response)
            except TtrpcError as e:
                body = encode_status_response(e.code, e.message)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # our own cancellation: the connection is going away
                body = encode_status_response(Canceled.code, "context canceled")
            except Exception as e:
                if timer is not None and timer.expired() and isinstance(e, TimeoutError):
                    body = encode_status_response(DeadlineExceeded.code, "context deadline exceeded")
                else:
                    log.error("ttrpc: %s/%s failed", method.service, method.name, exc_info=e)
                    body = encode_status_response(Unknown.code, str(e))
            self._respond(sid, body)
            if self._link.paused:
                await self._link.drain()
        finally:
            self.tasks.pop(sid, None)
            if self._draining and not self.tasks:
                self._close()

    @staticmethod
    def _encode_result(method: Method, response: object) -> bytes:
        if type(response) is not method.response_type:
            if response is None:
                raise Unknown("ttrpc: marshal called with nil")
            raise Internal(
                f"ttrpc: {method.service}/{method.name} returned {type(response).__name__},"
                f" not {method.response_type.__name__}"
            )
        body = encode_response(response.SerializeToString())  # type: ignore[attr-defined]
        if len(body) > MAX_DATA_LENGTH:
            raise ResourceExhausted(f"response of {len(body)} bytes exceeds maximum message size of {MAX_DATA_LENGTH}")
        return body

    def _respond(self, sid: int, body: bytes) -> None:
        if not self._closed:
            self._link.write(HEADER.pack(len(body), sid, _RESPONSE, 0) + body)

    # -- lifecycle -----------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Refuse new calls; close once the in-flight ones have answered."""
        self._draining = True
        if not self.tasks:
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._link.close()  # what was written is still flushed
        for task in self.tasks.values():
            task.cancel()

    def close(self) -> None:
        self._close()

    async def wait_closed(self) -> None:
        await self._link.wait_closed()
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()))
