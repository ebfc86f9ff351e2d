"""logs.py: the shim logs into its bundle's FIFO, and never into one that was removed."""
from __future__ import annotations

import logging
import os
import shutil

import pytest

from rund.shim import logs


@pytest.fixture
def fifo_bundle(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    os.mkfifo(bundle / "log")
    reader = os.open(bundle / "log", os.O_RDONLY | os.O_NONBLOCK)   # as containerd holds it
    yield bundle, reader
    os.close(reader)
    logging.getLogger().handlers.clear()


def read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


def test_a_removed_bundle_silences_the_shim(fifo_bundle):
    bundle, reader = fifo_bundle
    logs.setup(str(bundle), debug=False)
    logging.getLogger("rund.test").info("first")
    assert b"msg=first" in read(reader)
    shutil.rmtree(bundle)
    bundle.mkdir()                                      # a later run with the same id: a new bundle, a new FIFO
    os.mkfifo(bundle / "log")
    new_reader = os.open(bundle / "log", os.O_RDONLY | os.O_NONBLOCK)
    try:
        logging.getLogger("rund.test").info("second")
        assert read(reader) == b"" and read(new_reader) == b""
        assert logging.getLogger().handlers[0].stream.name == os.devnull
    finally:
        os.close(new_reader)


def test_a_fifo_replaced_in_the_same_bundle_is_reopened(fifo_bundle):
    bundle, reader = fifo_bundle
    logs.setup(str(bundle), debug=False)
    os.unlink(bundle / "log")
    os.mkfifo(bundle / "log")
    new_reader = os.open(bundle / "log", os.O_RDONLY | os.O_NONBLOCK)
    try:
        logging.getLogger("rund.test").warning("after")
        assert b"msg=after" in read(new_reader) and read(reader) == b""
    finally:
        os.close(new_reader)


def test_setup_keeps_levels_it_would_not_change(fifo_bundle):
    """A forked shim's setup must not sweep every logger's cache (setLevel does: it writes each logger, copying its
    page from the fork server) when the fork server preset the same levels (logs.preset)."""
    bundle, _ = fifo_bundle
    root = logging.getLogger()
    old = root.level
    try:
        logs.preset()
        other = logging.getLogger("rund.test.cached")
        other.isEnabledFor(logging.INFO)
        assert other._cache
        logs.setup(str(bundle), debug=False)
        assert other._cache, "setup cleared the caches though no level changed"
        assert root.level == logging.INFO and logging.getLogger("qemu.qmp").level == logging.WARNING
        logs.setup(str(bundle), debug=True)
        assert root.level == logging.DEBUG and not other._cache     # a level that changes: caches cleared
        assert other.isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(old)
