"""rund.agent.AgentClient: protobuf translation and error mapping (pure), and calls against the real agent
run as a subprocess (root; rund never imports agent, it only starts it)."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timezone

import pytest

from proto import ttrpc
from proto.gen.rund.agent.v1 import agent_pb2 as pb
from rund import errors
from rund.agent import (
    AgentClient, AgentFailed, AgentTimeout, Interface, IPAddress, LayeredRootfs, NetworkConfig, PathRootfs, Route, StdioConfig,
)
from rund.agent import convert
from rund.agent.errors import translate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_network_rootfs_stdio_translate_to_protobuf():
    msg = convert.network(NetworkConfig(
        interfaces=(Interface("eth0", "02:00:00:00:00:01", 1500, (IPAddress("10.0.0.2", 24),)),),
        routes=(Route("default", "10.0.0.1", "eth0"),), dns_servers=("10.0.0.53",), dns_searches=("local",)))
    assert msg.interfaces[0].addresses[0].prefix_length == 24 and msg.routes[0].gateway == "10.0.0.1"
    assert list(msg.dns_servers) == ["10.0.0.53"] and list(msg.dns_searches) == ["local"]
    path = convert.rootfs(PathRootfs("/r", readonly=True))
    assert path.WhichOneof("source") == "path" and path.readonly
    layered = convert.rootfs(LayeredRootfs("/dev/pmem1", dax=True, upper_size_bytes=1 << 20))
    assert layered.WhichOneof("source") == "layered" and layered.layered.dax
    assert layered.layered.upper_size_bytes == 1 << 20
    assert convert.stdio(StdioConfig(terminal=True, stdout=True)) == pb.StdioConfig(terminal=True, stdout=True)
    assert convert.json_bytes({"a": 1}) == b'{"a": 1}' and convert.json_bytes(b"{}") == b"{}"


def test_exit_status_and_stats_come_back_as_dataclasses():
    response = pb.WaitProcessResponse(exit_status=137)
    response.exited_at.FromNanoseconds(1_700_000_000_500_000_000)
    status = convert.exit_status(response)
    assert status.code == 137 and status.exited_at.tzinfo is timezone.utc
    assert status.exited_at.timestamp() == pytest.approx(1_700_000_000.5)
    stats = convert.stats(pb.StatsContainerResponse(cpu=pb.CpuStats(usage_total_ns=5),
                                                    memory=pb.MemoryStats(oom_events=2), pids=pb.PidsStats(limit=9)))
    assert (stats.cpu.usage_total_ns, stats.memory.oom_events, stats.pids.limit) == (5, 2, 9)


@pytest.mark.parametrize("ttrpc_error, rund_error", [
    (ttrpc.InvalidArgument("x"), errors.InvalidArgument), (ttrpc.NotFound("x"), errors.NotFound),
    (ttrpc.AlreadyExists("x"), errors.AlreadyExists), (ttrpc.FailedPrecondition("x"), errors.FailedPrecondition),
    (ttrpc.ConnectionClosed("x"), errors.Unavailable), (ttrpc.DeadlineExceeded("x"), AgentTimeout),
    (ttrpc.Unimplemented("x"), errors.Unimplemented), (ttrpc.Unknown("x"), AgentFailed),
    (ttrpc.Internal("x"), AgentFailed),
])
def test_ttrpc_statuses_become_rund_errors(ttrpc_error, rund_error):
    translated = translate(ttrpc_error)
    assert type(translated) is rund_error and "x" in str(translated)
    assert not isinstance(ttrpc_error, ttrpc.DeadlineExceeded) or isinstance(translated, errors.Unavailable)


@pytest.fixture
def agent_socket():
    if os.geteuid() != 0:
        pytest.skip("the agent needs root (namespaces)")
    workdir = tempfile.mkdtemp(prefix="agent-client-", dir="/tmp")
    path = os.path.join(workdir, "agent.sock")
    proc = subprocess.Popen(
        ["unshare", "--mount", "--uts", "--net", "--propagation", "private", "--", sys.executable, "-m",
         "agent.main", "--listen", f"unix:{path}", "--state-dir", os.path.join(workdir, "state")],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not os.path.exists(path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield path
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        subprocess.run(["rm", "-rf", workdir], check=False)


@pytest.mark.root
def test_calls_against_the_real_agent(agent_socket):
    async def scenario():
        async with await AgentClient.connect_unix(agent_socket, timeout=5.0) as client:
            health = await client.health()
            assert health.agent_version and health.kernel_release == os.uname().release
            with pytest.raises(errors.NotFound):
                await client.start_container("missing")
            with pytest.raises(errors.InvalidArgument):
                await client.create_container("bad", json.dumps({"process": {}}).encode(), PathRootfs("/"))
            with pytest.raises(errors.Unavailable):  # a long poll bounded by the caller
                await client.get_oom_event(timeout=0.2)
            assert (await client.health()).uptime_ns > health.uptime_ns  # the connection survived
        assert client.closed
    asyncio.run(scenario())
