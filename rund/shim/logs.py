"""Shim logging: to the bundle's `log` FIFO, which containerd opened before `start` and copies into its own log
(where containerd users look for shim logs). Never to stdout/stderr: containerd reads those as `start`'s answer."""
from __future__ import annotations

import logging
import os

FORMAT = "time=%(asctime)s level=%(levelname)s msg=%(message)s logger=%(name)s runtime=io.containerd.rund.v2"


class _FifoHandler(logging.StreamHandler):
    def handleError(self, record):  # containerd restarting closes the FIFO's reader: drop, never crash the shim
        pass


def setup(bundle: str, debug: bool, level_name: str = "info") -> None:
    level = logging.DEBUG if debug else getattr(logging, level_name.upper(), logging.INFO)
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    path = os.path.join(bundle, "log") if bundle else ""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        stream = os.fdopen(fd, "w", buffering=1)
    except OSError:
        stream = open(os.devnull, "w")
    handler = _FifoHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    logging.getLogger("qemu.qmp").setLevel(logging.WARNING)   # every QMP message at debug drowns the shim's own
