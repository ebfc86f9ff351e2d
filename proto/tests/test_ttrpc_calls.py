"""Our client against our server over real byte pipes: unix sockets (ours and a given listener),
socketpair streams and a pair of pipes. Every test runs on each of them."""
from __future__ import annotations

import asyncio
import json

import pytest
from google.protobuf import empty_pb2

from proto import ttrpc
from proto.gen.rund.agent.v1 import agent_pb2
from proto.tests.conftest import AGENT

HEALTH = agent_pb2.HealthRequest()
ERRORS = [
    ttrpc.Canceled, ttrpc.Unknown, ttrpc.InvalidArgument, ttrpc.DeadlineExceeded, ttrpc.NotFound,
    ttrpc.AlreadyExists, ttrpc.PermissionDenied, ttrpc.ResourceExhausted, ttrpc.FailedPrecondition, ttrpc.Aborted,
    ttrpc.OutOfRange, ttrpc.Unimplemented, ttrpc.Internal, ttrpc.Unavailable, ttrpc.DataLoss, ttrpc.Unauthenticated,
]


class Raw:
    """A 'request' whose serialized bytes we choose."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data


async def test_round_trip_with_stub_and_call(serving):
    async with serving() as (_, client):
        stub = ttrpc.Stub(client, AGENT)
        resp = await stub.Health(HEALTH)
        assert resp.kernel_release == "rund.agent.v1.Agent/Health"
        assert resp.uptime_ns == 0  # no deadline
        direct = await client.call(AGENT.full_name, "ReadStdout", agent_pb2.ReadStreamRequest(max_length=5),
                                   agent_pb2.ReadStreamResponse)
        assert direct == agent_pb2.ReadStreamResponse(data=b"rrrrr")
        assert await stub.ReadStdout(agent_pb2.ReadStreamRequest()) == agent_pb2.ReadStreamResponse()  # empty payload


async def test_metadata_reaches_the_handler(serving):
    async with serving() as (_, client):
        stub = ttrpc.Stub(client, AGENT)
        resp = await stub.Health(HEALTH, metadata={"containerd-namespace-ttrpc": "k8s.io", "multi": ["a", "b"]})
        assert json.loads(resp.agent_version) == {"containerd-namespace-ttrpc": ["k8s.io"], "multi": ["a", "b"]}
        assert json.loads((await stub.Health(HEALTH)).agent_version) == {}


async def test_slow_call_does_not_block_a_fast_one(serving, probe):
    async with serving() as (_, client):
        stub = ttrpc.Stub(client, AGENT)
        slow = asyncio.create_task(stub.WaitProcess(agent_pb2.WaitProcessRequest(exec_id="7")))
        await probe.started.wait()
        for _ in range(3):
            assert (await stub.Health(HEALTH)).kernel_release.endswith("/Health")
        assert not slow.done()
        probe.gate.set()
        assert (await slow).exit_status == 7


async def test_many_concurrent_calls_get_their_own_answers(serving):
    async with serving() as (_, client):
        stub = ttrpc.Stub(client, AGENT)
        sizes = list(range(0, 3000, 7))
        answers = await asyncio.gather(*(stub.ReadStdout(agent_pb2.ReadStreamRequest(max_length=n)) for n in sizes))
        assert [len(a.data) for a in answers] == sizes


async def test_deadline_cancels_the_handler_and_raises_deadline_exceeded(serving, probe):
    async with serving() as (_, client):
        stub = ttrpc.Stub(client, AGENT)
        with pytest.raises(ttrpc.DeadlineExceeded):
            await stub.WaitProcess(agent_pb2.WaitProcessRequest(), timeout=0.2)
        for _ in range(100):  # the server's own deadline fires at about the same time
            if probe.cancelled:
                break
            await asyncio.sleep(0.01)
        assert probe.cancelled == 1 and probe.finished == 0
        assert (await stub.Health(HEALTH)).kernel_release  # the connection is still fine


async def test_handler_sees_the_remaining_timeout(serving):
    async with serving() as (_, client):
        resp = await ttrpc.Stub(client, AGENT).Health(HEALTH, timeout=10)
        assert 9e9 < resp.uptime_ns <= 10e9


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.__name__)
async def test_every_status_comes_back_as_its_exception(serving, error):
    async with serving() as (_, client):
        with pytest.raises(error) as raised:
            await ttrpc.Stub(client, AGENT).SignalProcess(agent_pb2.SignalProcessRequest(container_id="c1",
                                                                                       signal=error.code))
        assert type(raised.value) is error
        assert str(raised.value) == f"status {error.code.value} for c1"


@pytest.mark.parametrize(
    ("signal", "error", "message"),
    [
        (100, ttrpc.Unknown, "probe exploded"),
        (101, ttrpc.Unknown, "ttrpc: marshal called with nil"),
        (102, ttrpc.Internal, "ttrpc: rund.agent.v1.Agent/SignalProcess returned HealthResponse, not Empty"),
        (103, ttrpc.Canceled, "context canceled"),
    ],
)
async def test_handler_failures_map_to_statuses(serving, signal, error, message, caplog):
    async with serving() as (_, client):
        stub = ttrpc.Stub(client, AGENT)
        with pytest.raises(error) as raised:
            await stub.SignalProcess(agent_pb2.SignalProcessRequest(signal=signal))
        assert type(raised.value) is error and str(raised.value) == message
        assert await stub.SignalProcess(agent_pb2.SignalProcessRequest(signal=0)) == empty_pb2.Empty()
    if signal == 100:
        assert any(r.name == "proto.ttrpc.server_connection" and r.exc_info for r in caplog.records)


async def test_unknown_service_and_method_are_unimplemented(serving):
    async with serving() as (_, client):
        with pytest.raises(ttrpc.Unimplemented, match="^service nope.Svc$"):
            await client.call("nope.Svc", "Health", HEALTH, agent_pb2.HealthResponse)
        with pytest.raises(ttrpc.Unimplemented, match="^method Nope$"):
            await client.call(AGENT.full_name, "Nope", HEALTH, agent_pb2.HealthResponse)
        with pytest.raises(ttrpc.Unimplemented, match="^method DestroySandbox$"):  # in the service, not in the probe
            await ttrpc.Stub(client, AGENT).DestroySandbox(agent_pb2.DestroySandboxRequest())


async def test_request_that_does_not_parse_is_invalid_argument(serving):
    async with serving() as (_, client):
        with pytest.raises(ttrpc.InvalidArgument, match="unmarshal ReadStreamRequest error"):
            await client.call(AGENT.full_name, "ReadStdout", Raw(b"\x0a\x7f"), agent_pb2.ReadStreamResponse)
        assert await client.call(AGENT.full_name, "Health", HEALTH, agent_pb2.HealthResponse)


async def test_large_messages_both_ways(serving):
    async with serving() as (_, client):
        stub = ttrpc.Stub(client, AGENT)
        big = 4 * 1024 * 1024 - 64
        sent, got = await asyncio.gather(
            stub.WriteStdin(agent_pb2.WriteStreamRequest(data=b"w" * big)),
            stub.ReadStdout(agent_pb2.ReadStreamRequest(max_length=big)),
        )
        assert sent.length == big and len(got.data) == big


async def test_oversized_request_is_refused_before_sending(serving):
    async with serving() as (_, client):
        stub = ttrpc.Stub(client, AGENT)
        with pytest.raises(ttrpc.ResourceExhausted, match="exceed maximum message size of 4194304"):
            await stub.WriteStdin(agent_pb2.WriteStreamRequest(data=b"w" * (4 << 20)))
        assert (await stub.WriteStdin(agent_pb2.WriteStreamRequest(data=b"ok"))).length == 2


async def test_oversized_response_becomes_resource_exhausted(serving):
    async with serving() as (_, client):
        stub = ttrpc.Stub(client, AGENT)
        with pytest.raises(ttrpc.ResourceExhausted, match="exceeds maximum message size"):
            await stub.ReadStdout(agent_pb2.ReadStreamRequest(max_length=5 << 20))
        assert (await stub.ReadStdout(agent_pb2.ReadStreamRequest(max_length=3))).data == b"rrr"


async def test_graceful_shutdown_finishes_the_call_in_flight(serving, probe):
    async with serving() as (harness, client):
        stub = ttrpc.Stub(client, AGENT)
        in_flight = asyncio.create_task(stub.WaitProcess(agent_pb2.WaitProcessRequest(exec_id="3")))
        await probe.started.wait()
        shutdown = asyncio.create_task(harness.server.shutdown(grace=10))
        await asyncio.sleep(0.05)
        assert not shutdown.done()
        with pytest.raises(ttrpc.Unavailable, match="shutting down"):
            await stub.Health(HEALTH)
        probe.gate.set()
        assert (await in_flight).exit_status == 3
        await shutdown
        with pytest.raises(ttrpc.ConnectionClosed):
            await stub.Health(HEALTH)
        assert client.closed


async def test_shutdown_grace_runs_out_then_calls_fail_with_connection_closed(serving, probe):
    async with serving() as (harness, client):
        in_flight = asyncio.create_task(ttrpc.Stub(client, AGENT).WaitProcess(agent_pb2.WaitProcessRequest()))
        await probe.started.wait()
        await harness.server.shutdown(grace=0.1)
        with pytest.raises(ttrpc.ConnectionClosed):
            await in_flight
        assert probe.cancelled == 1


async def test_closing_the_client_fails_pending_calls_and_cancels_their_handlers(serving, probe):
    async with serving() as (_, client):
        stub = ttrpc.Stub(client, AGENT)
        pending = asyncio.create_task(stub.WaitProcess(agent_pb2.WaitProcessRequest()))
        await probe.started.wait()
        await client.close()
        with pytest.raises(ttrpc.ConnectionClosed):
            await pending
        with pytest.raises(ttrpc.ConnectionClosed):
            await stub.Health(HEALTH)
        for _ in range(200):  # the server notices the connection is gone
            if probe.cancelled:
                break
            await asyncio.sleep(0.01)
        assert probe.cancelled == 1


async def test_a_cancelled_call_leaves_the_connection_usable(serving, probe):
    async with serving() as (_, client):
        stub = ttrpc.Stub(client, AGENT)
        waiting = asyncio.create_task(stub.WaitProcess(agent_pb2.WaitProcessRequest()))
        await probe.started.wait()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        probe.gate.set()  # its response now arrives for a stream nobody waits on
        assert (await stub.WaitProcess(agent_pb2.WaitProcessRequest(exec_id="1"))).exit_status == 1
        assert (await stub.Health(HEALTH)).kernel_release


async def test_two_clients_share_a_server(serving):
    async with serving() as (harness, first):
        second = await harness.connect()
        a, b = await asyncio.gather(ttrpc.Stub(first, AGENT).Health(HEALTH), ttrpc.Stub(second, AGENT).Health(HEALTH))
        assert a == b
