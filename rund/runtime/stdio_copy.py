"""One process's stdio between containerd's FIFOs on the host and the agent's streams in the guest.

Output: long-poll reads from the agent until it says EOF, written to the FIFO; every FIFO given is opened, and
closed only once its copy ended, so containerd's readers (ctr, CRI's exec) see all output and then EOF.
Input: FIFO reads forwarded to the agent; EOF on the FIFO (or CloseIO) closes the process's stdin.
"""
from __future__ import annotations

import asyncio
import logging

from rund import errors
from rund.agent import AgentClient, StdioConfig
from rund.runtime.fifo import FifoReader, FifoWriter
from rund.runtime.process import Stdio

log = logging.getLogger("rund.runtime.stdio")
STDIN_DRAIN_TIMEOUT = 2.0


def agent_stdio(stdio: Stdio) -> StdioConfig:
    """Which streams the agent should capture: a terminal is one stream (stdout), as with runc."""
    if stdio.terminal:
        return StdioConfig(terminal=True, stdin=bool(stdio.stdin), stdout=True)
    return StdioConfig(stdin=bool(stdio.stdin), stdout=bool(stdio.stdout), stderr=bool(stdio.stderr))


class StdioCopy:
    def __init__(self, container_id: str, exec_id: str, stdio: Stdio):
        self._agent: AgentClient | None = None       # given by start(): the VM may not run yet when we open
        self._cid, self._eid = container_id, exec_id
        self._stdio = stdio
        self._writers: list[FifoWriter] = []
        self._stdin: FifoReader | None = None
        self._outputs: list[asyncio.Task] = []
        self._input: asyncio.Task | None = None
        self._stdin_closed = False

    def open(self) -> None:
        """Open the FIFOs (before the process starts, so nothing it writes waits on us). Raises OSError."""
        try:
            if self._stdio.stdout:
                self._writers.append(FifoWriter(self._stdio.stdout))
            if self._stdio.stderr and not self._stdio.terminal:
                self._writers.append(FifoWriter(self._stdio.stderr))
            if self._stdio.stdin:
                self._stdin = FifoReader(self._stdio.stdin)
        except OSError:
            self.close()
            raise

    def start(self, agent: AgentClient) -> None:
        """Start copying once the agent has the process (its streams exist)."""
        self._agent = agent
        name = f"{self._cid}/{self._eid}" if self._eid else self._cid
        readers = [agent.read_stdout, agent.read_stderr]
        for writer, read in zip(self._writers, readers):
            self._outputs.append(asyncio.create_task(self._copy_out(read, writer), name=f"stdout-{name}"))
        if self._stdin is not None:
            self._input = asyncio.create_task(self._copy_in(), name=f"stdin-{name}")

    async def _copy_out(self, read, writer: FifoWriter) -> None:
        try:
            while True:
                chunk = await read(self._cid, self._eid)
                if chunk.data:
                    await writer.write(chunk.data)
                if chunk.eof:
                    return
        except (errors.RundError, OSError) as e:   # the VM or agent is gone, or the reader broke the pipe
            log.debug("output copy of %s/%s ended: %s", self._cid, self._eid, e)

    async def _copy_in(self) -> None:
        assert self._stdin is not None
        try:
            while data := await self._stdin.read():
                assert self._agent is not None
                await self._agent.write_stdin(self._cid, self._eid, data)
        except (errors.RundError, OSError) as e:
            log.debug("input copy of %s/%s ended: %s", self._cid, self._eid, e)
            return
        await self.close_stdin()

    async def close_stdin(self) -> None:
        """CloseIO, or EOF on the stdin FIFO: the process reads EOF once what was written reached it."""
        if self._stdin_closed:
            return
        self._stdin_closed = True
        if self._input is not None and asyncio.current_task() is not self._input:
            # CloseIO follows the client's close of the FIFO: let the copy reach that EOF (data still in the FIFO).
            try:
                await asyncio.wait_for(asyncio.shield(self._input), STDIN_DRAIN_TIMEOUT)
            except asyncio.TimeoutError:
                self._input.cancel()
            await asyncio.gather(self._input, return_exceptions=True)
        if self._agent is None:       # never started: the process never had a stdin to close
            return
        try:
            await self._agent.close_stdin(self._cid, self._eid)
        except errors.RundError as e:   # the process already exited
            log.debug("closing stdin of %s/%s: %s", self._cid, self._eid, e)

    async def drained(self) -> None:
        """All output copied (the agent reported EOF on every stream, or is gone)."""
        await asyncio.gather(*self._outputs, return_exceptions=True)

    async def stop(self) -> None:
        tasks = [*self._outputs, *([self._input] if self._input else [])]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.close()

    def close(self) -> None:
        for w in self._writers:
            w.close()
        self._writers = []
        if self._stdin is not None:
            self._stdin.close()
            self._stdin = None
