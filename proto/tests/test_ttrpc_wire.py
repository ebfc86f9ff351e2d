"""Hand-crafted frames on raw sockets, checked byte for byte at the envelope level.

The expected bytes are built with the generated protobuf classes and struct, not with our encoder.
"""
from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
import textwrap

import pytest

from proto import ttrpc
from proto.gen.google.rpc import status_pb2
from proto.gen.rund.agent.v1 import agent_pb2
from proto.gen.ttrpc import request_pb2
from proto.tests.conftest import AGENT

MAX = 4 << 20


def frame(stream_id: int, mtype: int, data: bytes, flags: int = 0, length: int | None = None) -> bytes:
    return struct.pack(">IIBB", len(data) if length is None else length, stream_id, mtype, flags) + data


def request(stream_id: int, method: str, msg=agent_pb2.HealthRequest(), service: str = AGENT.full_name,
            timeout_nano: int = 0) -> bytes:
    req = request_pb2.Request(service=service, method=method, payload=msg.SerializeToString(),
                              timeout_nano=timeout_nano)
    return frame(stream_id, 1, req.SerializeToString())


def status_response(stream_id: int, code: int, message: str) -> bytes:
    resp = request_pb2.Response(status=status_pb2.Status(code=code, message=message))
    return frame(stream_id, 2, resp.SerializeToString())


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    header = await asyncio.wait_for(reader.readexactly(10), 5)
    (length,) = struct.unpack(">I", header[:4])
    return header + await reader.readexactly(length)


@pytest.fixture
def raw_server(sock_dir, probe):
    """``async with raw_server() as (reader, writer):`` -- our server, and a raw socket connected to it."""
    import contextlib

    @contextlib.asynccontextmanager
    async def start():
        server = ttrpc.Server()
        server.register_service(AGENT, probe)
        path = os.path.join(sock_dir, "s.sock")
        await server.serve_unix(path)
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            yield reader, writer
        finally:
            writer.close()
            await writer.wait_closed()
            await server.shutdown(grace=1)

    return start


# -- our server, raw client ----------------------------------------------------------------------


async def test_ok_response_bytes(raw_server):
    async with raw_server() as (reader, writer):
        writer.write(request(1, "ReadStdout", agent_pb2.ReadStreamRequest(max_length=3)))
        payload = agent_pb2.ReadStreamResponse(data=b"rrr").SerializeToString()
        assert await read_frame(reader) == frame(1, 2, request_pb2.Response(payload=payload).SerializeToString())
        writer.write(request(3, "Health"))  # an empty response: no status, payload of the serialized message
        expected = request_pb2.Response(payload=agent_pb2.HealthResponse(
            agent_version="{}", kernel_release="rund.agent.v1.Agent/Health").SerializeToString())
        assert await read_frame(reader) == frame(3, 2, expected.SerializeToString())


async def test_even_stream_id_is_invalid_argument(raw_server):
    async with raw_server() as (reader, writer):
        writer.write(request(2, "Health"))
        assert await read_frame(reader) == status_response(2, 3, "StreamID must be odd for client initiated streams")
        writer.write(request(1, "Health"))  # the connection carries on, and 1 is still available
        assert (await read_frame(reader))[4:9] == b"\x00\x00\x00\x01\x02"


async def test_reused_or_decreasing_stream_id_is_invalid_argument(raw_server):
    async with raw_server() as (reader, writer):
        writer.write(request(5, "Health"))
        await read_frame(reader)
        for sid in (5, 3):
            writer.write(request(sid, "Health"))
            assert await read_frame(reader) == status_response(sid, 3, "StreamID cannot be re-used and must increment")


async def test_unknown_service_and_method_bytes(raw_server):
    async with raw_server() as (reader, writer):
        writer.write(request(1, "Health", service="x.Y") + request(3, "Nope"))
        answers = {await read_frame(reader), await read_frame(reader)}
        assert answers == {status_response(1, 12, "service x.Y"), status_response(3, 12, "method Nope")}


async def test_envelope_that_does_not_parse_is_invalid_argument(raw_server):
    async with raw_server() as (reader, writer):
        writer.write(frame(1, 1, b"\x0a\x7fshort"))
        answer = await read_frame(reader)
        assert answer[:10] == struct.pack(">IIBB", len(answer) - 10, 1, 2, 0)
        resp = request_pb2.Response.FromString(answer[10:])
        assert resp.status.code == 3 and resp.status.message.startswith("unmarshal request error")
        assert resp.payload == b""


async def test_oversized_frame_gets_resource_exhausted_then_the_connection_closes(raw_server):
    async with raw_server() as (reader, writer):
        writer.write(request(1, "Health"))
        await read_frame(reader)
        writer.write(frame(3, 1, b"\0" * (MAX + 1)))
        assert await read_frame(reader) == status_response(
            3, 8, f"message length {MAX + 1} exceed maximum message size of {MAX}")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed cleanly, nothing more


async def test_data_frame_is_invalid_argument_and_unknown_types_are_ignored(raw_server):
    async with raw_server() as (reader, writer):
        writer.write(frame(1, 3, b"x", flags=0x1))
        assert await read_frame(reader) == status_response(1, 3, "StreamID is no longer active")
        writer.write(frame(3, 0x2A, b"future") + frame(5, 2, b"") + request(7, "ReadStdout"))
        assert await read_frame(reader) == frame(7, 2, b"")  # only the request is answered


async def test_server_deadline_answers_deadline_exceeded(raw_server, probe):
    async with raw_server() as (reader, writer):
        writer.write(request(1, "WaitProcess", agent_pb2.WaitProcessRequest(), timeout_nano=50_000_000))
        assert await read_frame(reader) == status_response(1, 4, "context deadline exceeded")
        assert probe.cancelled == 1


async def test_responses_go_back_in_completion_order(raw_server, probe):
    async with raw_server() as (reader, writer):
        writer.write(request(1, "WaitProcess", agent_pb2.WaitProcessRequest(exec_id="9")) + request(3, "ReadStdout"))
        assert await read_frame(reader) == frame(3, 2, b"")
        probe.gate.set()
        payload = agent_pb2.WaitProcessResponse(exit_status=9).SerializeToString()
        assert await read_frame(reader) == frame(1, 2, request_pb2.Response(payload=payload).SerializeToString())


async def test_request_split_into_single_bytes(raw_server):
    async with raw_server() as (reader, writer):
        data = request(1, "ReadStdout", agent_pb2.ReadStreamRequest(max_length=1))
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)
        payload = agent_pb2.ReadStreamResponse(data=b"r").SerializeToString()
        assert await read_frame(reader) == frame(1, 2, request_pb2.Response(payload=payload).SerializeToString())


# -- our client, raw server ----------------------------------------------------------------------


@pytest.fixture
def raw_peer(sock_dir):
    """``async with raw_peer(script) as client``: ``script(reader, writer)`` plays the server for one connection."""
    import contextlib

    @contextlib.asynccontextmanager
    async def start(script):
        done = asyncio.get_running_loop().create_future()

        async def on_connect(reader, writer):
            try:
                await script(reader, writer)
                done.set_result(None)
            except BaseException as e:  # noqa: BLE001 -- reported to the test below
                done.set_exception(e)
            finally:
                writer.close()

        path = os.path.join(sock_dir, "peer.sock")
        listener = await asyncio.start_unix_server(on_connect, path)
        client = await ttrpc.Client.connect_unix(path)
        try:
            yield client
        finally:
            await client.close()
            await asyncio.wait_for(done, 5)  # the script ran to its end without error
            listener.close()
            await listener.wait_closed()

    return start


async def test_client_request_bytes_and_stream_ids(raw_peer):
    seen = []

    async def script(reader, writer):
        for _ in range(3):
            got = await read_frame(reader)
            seen.append(got)
            writer.write(frame(struct.unpack(">I", got[4:8])[0], 2, b""))

    async with raw_peer(script) as client:
        stub = ttrpc.Stub(client, AGENT)
        await stub.ReadStdout(agent_pb2.ReadStreamRequest(max_length=1))
        await stub.ReadStdout(agent_pb2.ReadStreamRequest(), timeout=2.5, metadata={"k": "v"})
        await stub.Health(agent_pb2.HealthRequest())
    second = request_pb2.Request(service=AGENT.full_name, method="ReadStdout", timeout_nano=2_500_000_000)
    second.metadata.add(key="k", value="v")
    assert seen == [
        request(1, "ReadStdout", agent_pb2.ReadStreamRequest(max_length=1)),
        frame(3, 1, second.SerializeToString()),
        request(5, "Health"),
    ]


async def test_client_drops_stray_and_foreign_frames(raw_peer):
    async def script(reader, writer):
        await read_frame(reader)
        writer.write(frame(99, 2, b"") + frame(1, 1, b"request?") + frame(1, 0x33, b"??"))
        writer.write(frame(1, 2, request_pb2.Response(
            payload=agent_pb2.ReadStreamResponse(eof=True).SerializeToString()).SerializeToString()))

    async with raw_peer(script) as client:
        resp = await ttrpc.Stub(client, AGENT).ReadStdout(agent_pb2.ReadStreamRequest())
        assert resp.eof and not client.closed


async def test_status_with_unknown_code_and_status_ok(raw_peer):
    async def script(reader, writer):
        await read_frame(reader)
        writer.write(status_response(1, 42, "from the future"))
        await read_frame(reader)
        writer.write(status_response(3, 0, ""))  # a status that says OK is OK

    async with raw_peer(script) as client:
        stub = ttrpc.Stub(client, AGENT)
        with pytest.raises(ttrpc.Unknown, match="from the future"):
            await stub.Health(agent_pb2.HealthRequest())
        assert await stub.Health(agent_pb2.HealthRequest()) == agent_pb2.HealthResponse()


async def test_client_deadline_when_the_server_never_answers(raw_peer):
    async def script(reader, writer):
        await read_frame(reader)
        await reader.read()  # until the client closes

    async with raw_peer(script) as client:
        with pytest.raises(ttrpc.DeadlineExceeded):
            await ttrpc.Stub(client, AGENT).Health(agent_pb2.HealthRequest(), timeout=0.1)


async def test_server_closing_mid_frame_fails_pending_calls(raw_peer):
    async def script(reader, writer):
        await read_frame(reader)
        writer.write(frame(1, 2, b"\x12\x05abc")[:-2])  # half a response, then close

    async with raw_peer(script) as client:
        with pytest.raises(ttrpc.ConnectionClosed):
            await ttrpc.Stub(client, AGENT).Health(agent_pb2.HealthRequest())
        assert client.closed


async def test_malformed_response_is_internal(raw_peer):
    async def script(reader, writer):
        await read_frame(reader)
        writer.write(frame(1, 2, b"\x12\x09ab"))

    async with raw_peer(script) as client:
        with pytest.raises(ttrpc.Internal, match="malformed response"):
            await ttrpc.Stub(client, AGENT).Health(agent_pb2.HealthRequest())


async def test_connect_to_nothing_is_unavailable(sock_dir):
    with pytest.raises(ttrpc.Unavailable, match="connect"):
        await ttrpc.Client.connect_unix(os.path.join(sock_dir, "absent.sock"))


# -- a server process that dies --------------------------------------------------------------------

SERVER_PROCESS = textwrap.dedent("""
    import asyncio, sys
    from proto import ttrpc
    from proto.gen.rund.agent.v1 import agent_pb2

    class Stuck:
        async def WaitProcess(self, ctx, req):
            await asyncio.Event().wait()

    async def main():
        server = ttrpc.Server()
        server.register_service(agent_pb2.DESCRIPTOR.services_by_name["Agent"], Stuck())
        await server.serve_unix(sys.argv[1])
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")


async def test_peer_death_fails_pending_calls_with_connection_closed(sock_dir):
    path = os.path.join(sock_dir, "dying.sock")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER_PROCESS, path, stdout=subprocess.PIPE, cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    try:
        assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"ready"
        async with await ttrpc.Client.connect_unix(path) as client:
            stub = ttrpc.Stub(client, AGENT)
            pending = [asyncio.create_task(stub.WaitProcess(agent_pb2.WaitProcessRequest())) for _ in range(3)]
            await asyncio.sleep(0.1)
            proc.send_signal(signal.SIGKILL)
            for call in pending:
                with pytest.raises(ttrpc.ConnectionClosed):
                    await call
            with pytest.raises(ttrpc.ConnectionClosed):
                await stub.WaitProcess(agent_pb2.WaitProcessRequest())
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
