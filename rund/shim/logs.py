"""Shim logging: to the bundle's `log` FIFO, which containerd opened before `start` and copies into its own log
(where containerd users look for shim logs). Never to stdout/stderr: containerd reads those as `start`'s answer.

A FIFO that was removed is never written again: the handler reopens `log` in the bundle directory the shim started
in while that directory exists, and falls silent once containerd removed it (a new bundle at the same path is
another task's)."""
from __future__ import annotations

import contextlib
import logging
import os

FORMAT = "time=%(asctime)s level=%(levelname)s msg=%(message)s logger=%(name)s runtime=io.containerd.rund.v2"


class FifoHandler(logging.StreamHandler):
    def __init__(self, bundle: str | int):
        """`bundle`: its path, or an fd of it (taken over)."""
        self._bundle = bundle if isinstance(bundle, int) else _open_dir(bundle)   # held: its link count tells
        # whether the bundle was removed
        super().__init__(self._open_log())

    def emit(self, record: logging.LogRecord) -> None:
        if _removed(self.stream):
            self._reopen()
        super().emit(record)

    def handleError(self, record):  # containerd restarting closes the FIFO's reader: drop, never crash the shim
        pass

    def _open_log(self):
        if self._bundle is not None and not _removed(self._bundle):
            try:
                fd = os.open("log", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self._bundle)
                return os.fdopen(fd, "w", buffering=1)
            except OSError:
                pass
        return open(os.devnull, "w")

    def close(self) -> None:
        super().close()
        if self._bundle is not None:
            os.close(self._bundle)
            self._bundle = None

    def _reopen(self) -> None:
        old, self.stream = self.stream, self._open_log()
        with contextlib.suppress(OSError, ValueError):     # flushing into a reader-less FIFO: EPIPE
            old.close()


def _open_dir(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if path else None
    except OSError:
        return None


def _removed(f) -> bool:
    """True if the file (an fd or a stream) has no name left."""
    try:
        return os.fstat(f if isinstance(f, int) else f.fileno()).st_nlink == 0
    except (OSError, ValueError):
        return True


class RoutingHandler(logging.Handler):
    """A group shim's log (rund/shim/group.py): a record about a sandbox (logged by its call or one of its tasks:
    `current()`) goes to the `log` FIFO of that sandbox's bundle, which containerd reads while the sandbox's task
    is connected; a record of the group itself to its oldest sandbox's. A group outlives the pod that started it,
    and containerd stops reading a bundle's FIFO once its task is gone, so no one bundle is the group's."""

    def __init__(self, current):
        super().__init__()
        self._current = current
        self._by: dict[str, FifoHandler] = {}
        self._last: FifoHandler | None = None      # the last sandbox's, kept for the group's last lines

    def add(self, sandbox_id: str, bundle: str | int) -> None:
        handler = FifoHandler(bundle)
        handler.setFormatter(self.formatter)
        old = self._by.pop(sandbox_id, None)
        self._by[sandbox_id] = handler
        if old is not None:
            old.close()

    def remove(self, sandbox_id: str) -> None:
        handler = self._by.pop(sandbox_id, None)
        if handler is None:
            return
        if self._by:
            handler.close()
            return
        if self._last is not None:
            self._last.close()
        self._last = handler

    def emit(self, record: logging.LogRecord) -> None:
        handler = self._by.get(self._current() or "") or next(iter(self._by.values()), None) or self._last
        if handler is not None:
            handler.emit(record)

    def close(self) -> None:
        for handler in [*self._by.values(), *([self._last] if self._last else [])]:
            handler.close()
        self._by.clear()
        self._last = None
        super().close()


QUIET = {"qemu.qmp": logging.WARNING}     # every QMP message at debug drowns the shim's own


def setup(bundle: str, debug: bool, level_name: str = "info", handler: logging.Handler | None = None) -> None:
    """`handler`: instead of the bundle's FIFO (a group shim's RoutingHandler)."""
    level = logging.DEBUG if debug else getattr(logging, level_name.upper(), logging.INFO)
    root = logging.getLogger()
    _set_level(root, level)
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = handler or FifoHandler(bundle)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    for name, quiet in QUIET.items():
        _set_level(logging.getLogger(name), quiet)


def preset(level: int = logging.INFO) -> None:
    """In the fork server: the levels setup() sets by default, so that a forked shim's setup changes none."""
    _set_level(logging.getLogger(), level)
    for name, quiet in QUIET.items():
        _set_level(logging.getLogger(name), quiet)


def _set_level(logger: logging.Logger, level: int) -> None:
    """setLevel unless the logger has that level already: setLevel clears the cache of every logger of the process
    (touching each, which copies their pages from the fork server into a forked shim); with the level unchanged,
    what the caches hold is still right."""
    if logger.level != level:
        logger.setLevel(level)
