"""The one owner of child exits: SIGCHLD -> waitpid(-1, WNOHANG) -> the future registered for that pid.

As PID 1 the agent also inherits orphans; their exits are reaped and dropped.
"""
import asyncio
import logging
import os
import signal
import time

from .container.types import ExitInfo

log = logging.getLogger(__name__)


def exit_status(wait_status: int) -> int:
    """Exit code, or 128 + signal for a process killed by a signal."""
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


class Reaper:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._waiters: dict[int, asyncio.Future] = {}

    def install(self) -> None:
        self._loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()  # children that exited before the handler existed

    def uninstall(self) -> None:
        self._loop.remove_signal_handler(signal.SIGCHLD)

    def watch(self, pid: int) -> asyncio.Future:
        """Register right after fork (before any await) so the exit cannot be missed."""
        future = self._loop.create_future()
        self._waiters[pid] = future
        return future

    def reap(self) -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            info = ExitInfo(exit_status(wait_status), time.time_ns())
            future = self._waiters.pop(pid, None)
            if future is None:
                log.debug("reaped orphan %d (status %d)", pid, info.status)
            elif not future.done():
                future.set_result(info)
