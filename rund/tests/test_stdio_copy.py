"""StdioCopy's side that needs no VM: which streams the agent is asked for, and the host FIFOs it opens and closes
(real FIFOs; the copying itself runs against a real agent in integration/test_ctr_run.py). No root.

open()/close() never touch the agent, so no agent client is given.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from rund.agent import StdioConfig
from rund.runtime.process import Stdio
from rund.runtime.stdio_copy import StdioCopy, agent_stdio


def open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:       # the fd of the listdir itself
            pass
    return fds


@pytest.fixture
def fifos(tmp_path) -> dict[str, str]:
    paths = {name: str(tmp_path / name) for name in ("stdin", "stdout", "stderr")}
    for path in paths.values():
        os.mkfifo(path)
    return paths


def copier(stdio: Stdio) -> StdioCopy:
    return StdioCopy("c1", "", stdio)


def fifo_fds(paths) -> list[str]:
    """The FIFOs this process holds open, one entry per fd."""
    return sorted(target for target in open_fds().values() if target in set(paths))


# ---- agent_stdio ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stdio, expected", [
    (Stdio(), StdioConfig()),
    (Stdio(stdout="/o"), StdioConfig(stdout=True)),
    (Stdio(stderr="/e"), StdioConfig(stderr=True)),
    (Stdio(stdin="/i"), StdioConfig(stdin=True)),
    (Stdio("/i", "/o", "/e"), StdioConfig(stdin=True, stdout=True, stderr=True)),
    # A terminal is one stream: stdout, whatever FIFOs were given; stdin only if given.
    (Stdio(terminal=True), StdioConfig(terminal=True, stdout=True)),
    (Stdio("/i", "/o", "/e", terminal=True), StdioConfig(terminal=True, stdin=True, stdout=True)),
    (Stdio(stdout="/o", stderr="/e", terminal=True), StdioConfig(terminal=True, stdout=True)),
], ids=["none", "stdout", "stderr", "stdin", "all", "tty-bare", "tty-all", "tty-no-stdin"])
def test_agent_stdio(stdio, expected):
    assert agent_stdio(stdio) == expected


# ---- open / close --------------------------------------------------------------------------------------------------


def test_every_fifo_given_is_opened_and_closed_after(fifos):
    before = open_fds()
    copy = copier(Stdio(fifos["stdin"], fifos["stdout"], fifos["stderr"]))
    copy.open()
    # stdout/stderr: a write end and a keep-alive read end each; stdin: a read end.
    assert fifo_fds(fifos.values()) == sorted([fifos["stdin"], fifos["stdout"], fifos["stdout"],
                                               fifos["stderr"], fifos["stderr"]])
    copy.close()
    assert open_fds() == before
    copy.close()                # idempotent
    assert open_fds() == before


def test_a_client_sees_a_writer_while_open_and_eof_after_close(fifos):
    # What ctr does: it opens the output FIFOs for reading and the stdin FIFO for writing.
    client_out = os.open(fifos["stdout"], os.O_RDONLY | os.O_NONBLOCK)
    try:
        copy = copier(Stdio(fifos["stdin"], fifos["stdout"]))
        copy.open()
        with pytest.raises(BlockingIOError):     # a writer is connected: no data yet, but no EOF either
            os.read(client_out, 1)
        client_in = os.open(fifos["stdin"], os.O_WRONLY | os.O_NONBLOCK)   # ENXIO if nobody reads
        os.close(client_in)
        copy.close()
        assert os.read(client_out, 1) == b""       # the writer went: EOF
        with pytest.raises(OSError) as exc:
            os.open(fifos["stdin"], os.O_WRONLY | os.O_NONBLOCK)
        assert exc.value.errno == errno.ENXIO       # no reader left on stdin
    finally:
        os.close(client_out)


def test_a_terminal_does_not_open_stderr(fifos):
    copy = copier(Stdio(stdout=fifos["stdout"], stderr=fifos["stderr"], terminal=True))
    copy.open()
    try:
        assert fifo_fds(fifos.values()) == [fifos["stdout"], fifos["stdout"]]
    finally:
        copy.close()


def test_no_fifos_opens_nothing(fifos):
    before = open_fds()
    copy = copier(Stdio())
    copy.open()
    assert open_fds() == before
    copy.close()


@pytest.mark.parametrize("missing", ["stdin", "stdout", "stderr"])
def test_a_missing_fifo_raises_and_leaves_nothing_open(fifos, tmp_path, missing):
    paths = {**fifos, missing: str(tmp_path / "gone" / missing)}
    before = open_fds()
    copy = copier(Stdio(paths["stdin"], paths["stdout"], paths["stderr"]))
    with pytest.raises(OSError) as exc:
        copy.open()
    assert exc.value.errno == errno.ENOENT
    assert open_fds() == before
    copy.close()                # still safe after the failed open
    assert open_fds() == before


def test_a_fifo_that_is_a_directory_raises_and_leaves_nothing_open(fifos, tmp_path):
    # The write end's open fails after its keep-alive read end succeeded: that one must be closed too.
    Path(tmp_path / "dir").mkdir()
    before = open_fds()
    copy = copier(Stdio(fifos["stdin"], fifos["stdout"], str(tmp_path / "dir")))
    with pytest.raises(OSError):
        copy.open()
    assert open_fds() == before


async def test_stop_without_start_closes_the_fifos(fifos):
    before = open_fds()
    copy = copier(Stdio(fifos["stdin"], fifos["stdout"], fifos["stderr"]))
    copy.open()
    assert open_fds() != before
    await copy.stop()
    assert open_fds() == before
    await copy.drained()        # nothing to drain: returns at once
