"""containerd's stdio FIFOs on the host, opened the way the runc shim opens them, with asyncio readiness.

stdout/stderr: we also hold a read end so our open never blocks and our writes never see EPIPE when the client
goes away. stdin: opened O_RDONLY|O_NONBLOCK; a Linux FIFO reports readable only on data or when a writer that
connected has gone, so a zero-byte read after readiness is a real EOF.
"""
from __future__ import annotations

import asyncio
import os


async def _ready(fd: int, writable: bool) -> None:
    """Wait until fd is readable (or writable) in the running loop."""
    loop = asyncio.get_running_loop()
    add, remove = (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
    ready = loop.create_future()
    add(fd, ready.set_result, None)
    try:
        await ready
    finally:
        remove(fd)


class FifoWriter:
    def __init__(self, path: str):
        self.path = path
        self._keepalive = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            os.close(self._keepalive)
            raise

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
                view = view[n:]
            except BlockingIOError:
                await _ready(self._fd, writable=True)

    def close(self) -> None:
        for fd in (self._fd, self._keepalive):
            if fd >= 0:
                os.close(fd)
        self._fd = self._keepalive = -1


class FifoReader:
    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    async def read(self, size: int = 65536) -> bytes:
        """Next chunk, or b"" at EOF (the writer closed)."""
        # Wait for readiness before every read: before any writer connected, read() returns 0 too.
        while True:
            await _ready(self._fd, writable=False)
            try:
                return os.read(self._fd, size)
            except BlockingIOError:
                continue

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
