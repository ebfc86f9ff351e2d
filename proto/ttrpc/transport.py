"""Byte pipes under a ttrpc connection: an asyncio socket protocol, or any StreamReader/StreamWriter pair.

Both present the same small surface to a connection (a *receiver* with ``on_data(bytes)`` and
``on_closed(exc)``): ``write(bytes)`` (synchronous, so whole frames never interleave), ``paused`` and
``drain()`` for back-pressure, ``close()`` and ``wait_closed()``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
HIGH_WATER = 64 * 1024  # matches asyncio's default transport high-water mark


class Receiver(Protocol):
    def on_data(self, data: bytes) -> None: ...
    def on_closed(self, exc: BaseException | None) -> None: ...


class SocketLink(asyncio.Protocol):
    """An asyncio protocol; bytes go straight from the event loop to the receiver."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._receiver: Receiver | None = None
        self._early: list[bytes] = []  # bytes that arrived before attach()
        self._lost: tuple[BaseException | None] | None = None
        self._closed = self._loop.create_future()
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.transport: asyncio.Transport | None = None
        self.paused = False

    def attach(self, receiver: Receiver) -> None:
        self._receiver = receiver
        for data in self._early:
            receiver.on_data(data)
        self._early.clear()
        # Skip a call level on the hot path: the loop calls the receiver directly.
        self.data_received = receiver.on_data  # type: ignore[method-assign]
        if self._lost is not None:
            receiver.on_closed(self._lost[0])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.write = transport.write  # type: ignore[method-assign]

    def data_received(self, data: bytes) -> None:
        self._early.append(data)

    def eof_received(self) -> bool:
        return False  # ttrpc has no half-close: the transport closes, connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if not self._closed.done():
            self._closed.set_result(None)
        if self._receiver is None:
            self._lost = (exc,)
        else:
            self._receiver.on_closed(exc)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    def write(self, data: bytes) -> None:  # replaced by transport.write once connected
        raise RuntimeError("not connected")

    async def drain(self) -> None:
        """Wait until the peer has taken enough of what we wrote (or the connection is gone)."""
        if not self.paused or self._closed.done():
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()  # flushes what is buffered, then connection_lost

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)


class StreamLink:
    """A connected StreamReader/StreamWriter pair (unix or vsock socket, virtio-serial port, pipes).

    Reading happens in one task owned by this link, started by :meth:`attach`.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._transport = writer.transport
        self._pump: asyncio.Task[None] | None = None
        self.write = writer.write

    @property
    def paused(self) -> bool:
        return self._transport.get_write_buffer_size() > HIGH_WATER

    def attach(self, receiver: Receiver) -> None:
        self._pump = asyncio.get_running_loop().create_task(self._run(receiver))

    async def _run(self, receiver: Receiver) -> None:
        error: BaseException | None = None
        read = self._reader.read
        try:
            while data := await read(READ_CHUNK):
                receiver.on_data(data)
        except OSError as e:  # reset, broken pipe, ...
            error = e
        except Exception as e:  # a bug in the receiver: end the connection rather than hang it
            log.exception("ttrpc: receiver failed")
            error = e
        receiver.on_closed(error)

    async def drain(self) -> None:
        with contextlib.suppress(OSError):  # a lost connection is reported through on_closed
            await self._writer.drain()

    def close(self) -> None:
        self._writer.close()
        if self._pump is not None and self._pump is not asyncio.current_task():
            self._pump.cancel()  # a pipe's reader does not end when its writer closes

    async def wait_closed(self) -> None:
        if self._pump is not None:
            await asyncio.wait([self._pump])  # unlike awaiting it, keeps our own cancellation
        # NotImplementedError: a writer built on asyncio.streams.FlowControlMixin (the usual recipe for
        # connect_write_pipe) has no close waiter; the transport is closed all the same.
        with contextlib.suppress(OSError, NotImplementedError):
            await self._writer.wait_closed()
