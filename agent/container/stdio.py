"""A process's stdio in the agent: output pulled by the host at its own pace, input pushed by it.

Nothing is buffered here: a read takes at most what the host asked for straight from the pipe (or pty),
so a process that floods its output blocks on its own write and the agent stays responsive.
"""
import asyncio
import errno
import fcntl
import os
import struct
import termios

from ..errors import FailedPrecondition
from .types import StdioConfig

MAX_READ = 1 << 20
DEFAULT_READ = 64 << 10


async def _wait_fd(fd: int, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if writable else loop.add_reader)(fd, wake)
    try:
        await ready
    finally:
        (loop.remove_writer if writable else loop.remove_reader)(fd)


class OutputStream:
    """The agent's read end of a stdout/stderr pipe or of a pty master; None means there is no stream."""

    def __init__(self, fd: int | None):
        self._fd = fd
        self._lock = asyncio.Lock()
        self.finished = asyncio.Event()  # EOF handed to the host, or the stream closed
        if fd is None:
            self.finished.set()
        else:
            os.set_blocking(fd, False)

    async def read(self, max_length: int) -> tuple[bytes, bool]:
        """(data, eof): waits until there is data or EOF."""
        size = min(max_length or DEFAULT_READ, MAX_READ)
        async with self._lock:
            while self._fd is not None:
                try:
                    data = os.read(self._fd, size)
                except BlockingIOError:
                    await _wait_fd(self._fd, writable=False)
                    continue
                except OSError as exc:
                    if exc.errno != errno.EIO:  # EIO: a pty whose other side is gone
                        raise
                    data = b""
                if data:
                    return data, False
                self.close()
            return b"", True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.finished.set()


class InputStream:
    """The agent's write end of a stdin pipe (or the pty master); None means the process has no stdin."""

    def __init__(self, fd: int | None, closes_fd: bool = True):
        self._fd = fd
        self._closes_fd = closes_fd
        self._lock = asyncio.Lock()
        if fd is not None:
            os.set_blocking(fd, False)

    async def write(self, data: bytes) -> int:
        """Writes at least one byte of `data` (when there is any) and returns how much went in."""
        async with self._lock:
            while True:
                if self._fd is None:
                    raise FailedPrecondition("stdin is closed or was not requested")
                if not data:
                    return 0
                try:
                    return os.write(self._fd, data)
                except BlockingIOError:
                    await _wait_fd(self._fd, writable=True)
                except (BrokenPipeError, OSError) as exc:
                    if isinstance(exc, BrokenPipeError) or exc.errno == errno.EIO:
                        raise FailedPrecondition("the process closed its stdin") from None
                    raise

    def close(self) -> None:
        if self._fd is not None and self._closes_fd:
            os.close(self._fd)
        self._fd = None


class ProcessIO:
    def __init__(self, stdin: InputStream, stdout: OutputStream, stderr: OutputStream, pty_master: int | None):
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._pty = pty_master

    @classmethod
    def none(cls) -> "ProcessIO":
        return cls(InputStream(None), OutputStream(None), OutputStream(None), None)

    def resize(self, rows: int, columns: int) -> None:
        if self._pty is None:
            raise FailedPrecondition("the process has no terminal")
        fcntl.ioctl(self._pty, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    async def output_finished(self) -> None:
        await self.stdout.finished.wait()
        await self.stderr.finished.wait()

    def close(self) -> None:
        self.stdin.close()
        self.stdout.close()
        self.stderr.close()
        if self._pty is not None:
            os.close(self._pty)
            self._pty = None


class PipeSet:
    """Pipes made before the fork: the child's ends become its fds 0-2, the agent keeps the others."""

    def __init__(self, config: StdioConfig):
        self.config = config
        self.child_fds: list[int] = []
        self._ours: list[int | None] = []
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            for wanted, child_reads in ((config.stdin, True), (config.stdout, False), (config.stderr, False)):
                if config.terminal or not wanted:
                    self.child_fds.append(os.dup(null))
                    self._ours.append(None)
                    continue
                read_end, write_end = os.pipe2(os.O_CLOEXEC)
                self.child_fds.append(read_end if child_reads else write_end)
                self._ours.append(write_end if child_reads else read_end)
        finally:
            os.close(null)

    def close_child_ends(self) -> None:
        for fd in self.child_fds:
            os.close(fd)
        self.child_fds = []

    def process_io(self, pty_master: int | None) -> ProcessIO:
        """The agent's side; with a terminal every stream is the pty master (stderr merged into stdout)."""
        if pty_master is not None:
            return ProcessIO(InputStream(os.dup(pty_master) if self.config.stdin else None),
                             OutputStream(os.dup(pty_master) if self.config.stdout else None),
                             OutputStream(None), pty_master)
        stdin, stdout, stderr = self._ours
        self._ours = [None, None, None]  # handed over
        return ProcessIO(InputStream(stdin), OutputStream(stdout), OutputStream(stderr), None)

    def close(self) -> None:
        self.close_child_ends()
        for fd in self._ours:
            if fd is not None:
                os.close(fd)
        self._ours = [None, None, None]
