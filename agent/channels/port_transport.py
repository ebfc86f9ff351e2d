"""An asyncio write transport over a non-blocking fd shared with a reader (a virtio-serial port)."""
import asyncio
import os

from .. import spans

HIGH_WATER = 256 << 10
LOW_WATER = 64 << 10


class PortWriteTransport(asyncio.WriteTransport):
    def __init__(self, fd: int, protocol: asyncio.BaseProtocol, loop: asyncio.AbstractEventLoop):
        super().__init__()
        self._fd = fd  # not ours to close: the channel owns it
        self._protocol = protocol
        self._loop = loop
        self._buffer = bytearray()
        self._closing = False
        self._lost = False
        self._paused = False
        self._writer_added = False

    def write(self, data) -> None:
        if self._closing or not data:
            return
        if not self._buffer:
            try:
                written = os.write(self._fd, data)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._fail(exc)
                return
            spans.io("write", written)
            data = memoryview(data)[written:]
            if not data:
                return
        self._buffer += data
        if not self._writer_added:
            self._loop.add_writer(self._fd, self._on_writable)
            self._writer_added = True
        self._maybe_pause()

    def _on_writable(self) -> None:
        try:
            written = os.write(self._fd, self._buffer)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(exc)
            return
        del self._buffer[:written]
        if self._paused and len(self._buffer) <= LOW_WATER:
            self._paused = False
            self._protocol.resume_writing()
        if not self._buffer:
            self._remove_writer()
            if self._closing:
                self._connection_lost(None)

    def _maybe_pause(self) -> None:
        if not self._paused and len(self._buffer) > HIGH_WATER:
            self._paused = True
            self._protocol.pause_writing()

    def _remove_writer(self) -> None:
        if self._writer_added:
            self._loop.remove_writer(self._fd)
            self._writer_added = False

    def _fail(self, exc: BaseException) -> None:
        self._buffer.clear()
        self._remove_writer()
        self._closing = True
        self._connection_lost(exc)

    def _connection_lost(self, exc: BaseException | None) -> None:
        if not self._lost:
            self._lost = True
            self._loop.call_soon(self._protocol.connection_lost, exc)

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def is_closing(self) -> bool:
        return self._closing

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        """Flush what is buffered, then report the connection lost."""
        if self._closing:
            return
        self._closing = True
        if not self._buffer:
            self._connection_lost(None)

    def abort(self) -> None:
        """Drop what is buffered (its host is gone) and report the connection lost."""
        self._buffer.clear()
        self._remove_writer()
        self._closing = True
        self._connection_lost(None)
