"""ttrpc test harness: socket dirs, a probe service, and client/server pairs over several byte pipes.
(Async tests run through the root conftest.)"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

from proto import ttrpc
from proto.gen.rund.agent.v1 import agent_pb2


@pytest.fixture
def sock_dir() -> Iterator[str]:
    """A short directory for unix sockets (pytest's tmp_path can exceed the 108-byte limit)."""
    path = tempfile.mkdtemp(prefix="ttrpc-test-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- a probe service and client/server harness over several byte pipes ---------------------------

AGENT = agent_pb2.DESCRIPTOR.services_by_name["Agent"]
# "inet-listener" (TCP on loopback) stands in for AF_VSOCK, which has no loopback here: both take
# serve_listener's non-unix path.
TRANSPORTS = ["unix", "listener", "inet-listener", "socketpair", "pipes"]


class Probe:
    """Agent methods with test behaviours. WaitProcess blocks until ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.cancelled = 0
        self.finished = 0

    async def Health(self, ctx: ttrpc.Context, req: agent_pb2.HealthRequest) -> agent_pb2.HealthResponse:
        return agent_pb2.HealthResponse(
            agent_version=json.dumps(ctx.metadata, sort_keys=True),
            kernel_release=f"{ctx.service}/{ctx.method}",
            uptime_ns=0 if ctx.timeout is None else int(ctx.timeout * 1e9),
        )

    async def WaitProcess(self, ctx: ttrpc.Context, req: agent_pb2.WaitProcessRequest) -> agent_pb2.WaitProcessResponse:
        self.started.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        return agent_pb2.WaitProcessResponse(exit_status=int(req.exec_id or 0))

    async def SignalProcess(self, ctx: ttrpc.Context, req: agent_pb2.SignalProcessRequest):
        """signal 1..16: raise that status; 100: ValueError; 101: None; 102: wrong type; 103: CancelledError."""
        if 1 <= req.signal <= 16:
            raise ttrpc.error_for(req.signal, f"status {req.signal} for {req.container_id}")
        if req.signal == 100:
            raise ValueError("probe exploded")
        if req.signal == 101:
            return None
        if req.signal == 102:
            return agent_pb2.HealthResponse()
        if req.signal == 103:
            raise asyncio.CancelledError()
        from google.protobuf import empty_pb2

        return empty_pb2.Empty()

    async def ReadStdout(self, ctx: ttrpc.Context, req: agent_pb2.ReadStreamRequest) -> agent_pb2.ReadStreamResponse:
        return agent_pb2.ReadStreamResponse(data=b"r" * req.max_length, eof=req.exec_id == "eof")

    async def WriteStdin(self, ctx: ttrpc.Context, req: agent_pb2.WriteStreamRequest) -> agent_pb2.WriteStreamResponse:
        return agent_pb2.WriteStreamResponse(length=len(req.data))


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


async def _pipe_pair() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter]:
    """Two one-way pipes wrapped as two stream pairs: what a char device (virtio-serial) gives."""
    loop = asyncio.get_running_loop()

    async def ends(read_fd: int, write_fd: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0))
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), os.fdopen(write_fd, "wb", 0)
        )
        return reader, asyncio.StreamWriter(transport, protocol, None, loop)

    a_read, b_write = os.pipe()
    b_read, a_write = os.pipe()
    ra, wa = await ends(a_read, a_write)
    rb, wb = await ends(b_read, b_write)
    return ra, wa, rb, wb


class Harness:
    """A server with our probe, and clients connected to it over one kind of byte pipe."""

    def __init__(self, transport: str, sock_dir: str, impl: object) -> None:
        self.transport = transport
        self.path = os.path.join(sock_dir, "ttrpc.sock")
        self.server = ttrpc.Server()
        self.server.register_service(AGENT, impl)
        self._clients: list[ttrpc.Client] = []
        self._serving: list[asyncio.Task[None]] = []  # serve_stream calls, owned here

    async def start(self) -> None:
        if self.transport == "unix":
            await self.server.serve_unix(self.path)
        elif self.transport == "listener":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(self.path)
            sock.listen()
            await self.server.serve_listener(sock)
        elif self.transport == "inet-listener":
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            self.address = sock.getsockname()
            await self.server.serve_listener(sock)

    async def connect(self) -> ttrpc.Client:
        if self.transport == "unix":
            client = await ttrpc.Client.connect_unix(self.path)
        elif self.transport == "listener":
            client = ttrpc.Client(*await asyncio.open_unix_connection(self.path))
        elif self.transport == "inet-listener":
            client = ttrpc.Client(*await asyncio.open_connection(*self.address))
        else:
            if self.transport == "socketpair":
                a, b = socket.socketpair()
                sr, sw = await asyncio.open_connection(sock=a)
                cr, cw = await asyncio.open_connection(sock=b)
            else:
                sr, sw, cr, cw = await _pipe_pair()
            self._serving.append(asyncio.get_running_loop().create_task(self.server.serve_stream(sr, sw)))
            client = ttrpc.Client(cr, cw)
        self._clients.append(client)
        return client

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        await self.server.shutdown(grace=1)
        for task in self._serving:
            await task


@pytest.fixture
def serving(transport: str, sock_dir: str, probe: Probe):
    """``async with serving() as (harness, client):`` -- a started server and one connected client."""

    @contextlib.asynccontextmanager
    async def start(impl: object | None = None) -> AsyncIterator[tuple[Harness, ttrpc.Client]]:
        harness = Harness(transport, sock_dir, probe if impl is None else impl)
        await harness.start()
        try:
            yield harness, await harness.connect()
        finally:
            await harness.close()

    return start
