"""Serve ttrpc on a virtio-serial port, one session per connected host.

While no host is connected the port reads 0 and polls POLLHUP, so the agent does not read then:
it waits for the SIGIO the port sends (O_ASYNC) when a host connects, with a slow poll as a backstop.
A host that goes away ends its session; the next one gets a fresh ttrpc connection.
"""
import asyncio
import fcntl
import glob
import logging
import os
import select
import signal
from typing import Callable

from .. import spans
from .port_transport import PortWriteTransport
from .session_split import SessionSplitter

log = logging.getLogger(__name__)
PORT_NAME = "agent"
MAX_POLL_INTERVAL = 1.0
READ_SIZE = 256 << 10


def find_port(name: str = PORT_NAME) -> str | None:
    """/dev/virtio-ports/<name> is a udev symlink; without udev, look the name up in sysfs."""
    link = f"/dev/virtio-ports/{name}"
    if os.path.exists(link):
        return link
    for name_file in glob.glob("/sys/class/virtio-ports/*/name"):
        try:
            with open(name_file) as f:
                if f.read().strip() == name:
                    return "/dev/" + os.path.basename(os.path.dirname(name_file))
        except OSError:
            continue
    return None


async def wait_for_port(name: str = PORT_NAME, timeout: float = 30.0) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.005
    while (path := find_port(name)) is None:
        if loop.time() > deadline:
            raise FileNotFoundError(f"no virtio-serial port named {name!r}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
    return path


class _Session:
    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop):
        self.reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(self.reader)
        self.transport = PortWriteTransport(fd, protocol, loop)
        self.writer = asyncio.StreamWriter(self.transport, protocol, self.reader, loop)

    def end(self) -> None:
        """The host is gone: no more input; whatever is still unwritten belongs to nobody."""
        self.reader.feed_eof()
        self.transport.abort()


class VirtioSerialChannel:
    def __init__(self, server, path: str, on_data: Callable[[], None] | None = None):
        self._server = server
        self._path = path
        self._on_data = on_data     # told of every read: the host is talking (agent/idle.py)
        self._fd = -1
        self._splitter = SessionSplitter()
        self._session: _Session | None = None
        self._tasks: set[asyncio.Task] = set()
        self._kick = asyncio.Event()
        self._host_gone: asyncio.Future | None = None

    async def run(self) -> None:
        """Serve hosts one after another, forever."""
        loop = asyncio.get_running_loop()
        self._fd = os.open(self._path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        loop.add_signal_handler(signal.SIGIO, self._kick.set)
        fcntl.fcntl(self._fd, fcntl.F_SETOWN, os.getpid())
        try:
            while True:
                await self._wait_for_host()
                log.info("host connected on %s", self._path)
                await self._serve_host()
                log.info("host disconnected from %s", self._path)
        finally:
            loop.remove_signal_handler(signal.SIGIO)
            self._end_session()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks))
            os.close(self._fd)

    def host_connected(self) -> bool:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return not any(events & select.POLLHUP for _, events in poller.poll(0))

    async def _wait_for_host(self) -> None:
        self._set_async(True)
        delay = 0.005
        try:
            while True:
                self._kick.clear()
                if self.host_connected():
                    return
                try:
                    await asyncio.wait_for(self._kick.wait(), delay)
                except asyncio.TimeoutError:
                    delay = min(delay * 2, MAX_POLL_INTERVAL)
        finally:
            self._set_async(False)  # in a session every arriving byte would raise SIGIO

    def _set_async(self, on: bool) -> None:
        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | os.O_ASYNC if on else flags & ~os.O_ASYNC)

    async def _serve_host(self) -> None:
        loop = asyncio.get_running_loop()
        self._host_gone = loop.create_future()
        self._splitter.reset()
        self._start_session()
        loop.add_reader(self._fd, self._on_readable)
        try:
            await self._host_gone
        finally:
            loop.remove_reader(self._fd)
            self._end_session()

    def _start_session(self) -> None:
        self._end_session()
        session = _Session(self._fd, asyncio.get_running_loop())
        self._session = session
        task = asyncio.get_running_loop().create_task(self._server.serve_stream(session.reader, session.writer))
        self._tasks.add(task)
        task.add_done_callback(self._session_done)

    def _session_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ttrpc session failed", exc_info=task.exception())

    def _end_session(self) -> None:
        if self._session is not None:
            self._session.end()
            self._session = None

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("reading %s: %s", self._path, exc)
            data = b""
        if self._on_data is not None:
            self._on_data()
        spans.io("read", len(data))
        if not data:
            if self._host_gone is not None and not self._host_gone.done():
                self._host_gone.set_result(None)
            return
        for new_session, chunk in self._splitter.feed(data):
            if new_session:
                log.info("a new host started talking on %s", self._path)
                self._start_session()
            if chunk and self._session is not None:
                self._session.reader.feed_data(chunk)
