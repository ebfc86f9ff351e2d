"""The Task service's protobuf edge over real ttrpc (a socketpair): error codes containerd relies on, Go zero
times, Connect/Shutdown semantics, and the event translation. The runtime behind it is an in-memory double of
our own domain interface, not of any external part."""
import asyncio
import socket
from datetime import datetime, timezone

import pytest

from proto import ttrpc
from proto.gen.containerd.cgroups.v1 import metrics_pb2
from proto.gen.containerd.cgroups.v2 import metrics_pb2 as v2_metrics_pb2
from proto.gen.containerd.task.v2 import shim_pb2
from proto.gen.containerd.types.task import task_pb2 as types_pb2
from rund import errors
from rund.runtime.process import Exit, Status, Stdio
from rund.agent.types import CpuStats, MemoryStats, PidsStats
from rund.runtime.task_runtime import ContainerStats, ProcessView
from rund.shim import metrics
from rund.shim.task_service import TASK_SERVICE, TaskService
from rund.shim.timestamps import GO_ZERO_TIME

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


class MemoryRuntime:
    def __init__(self):
        self.procs = {}
        self.created = []

    async def create(self, req):
        if req.id in self.procs:
            raise errors.AlreadyExists(f"container {req.id} exists")
        self.created.append(req)
        self.procs[req.id] = ProcessView(req.bundle, 0, Status.CREATED, req.stdio, None)
        return 4242

    def state(self, cid, eid):
        try:
            return self.procs[cid]
        except KeyError:
            raise errors.NotFound(f"container {cid} not created") from None

    async def wait(self, cid, eid):
        self.state(cid, eid)
        return Exit(137, AT)

    async def kill(self, cid, eid, sig, all):
        raise errors.FailedPrecondition("process not created")

    async def stats(self, cid):
        return ContainerStats(cpu=CpuStats(usage_total_ns=10000),
                              memory=MemoryStats(usage_bytes=20, inactive_file_bytes=3), pids=PidsStats(current=2))

    async def pids(self, cid):
        return [(7, ""), (9, "e1")]

    def task_pid(self, cid):
        return 4242

    def has_containers(self):
        return bool(self.procs)


async def _with_service(runtime, body):
    a, b = socket.socketpair()
    shutdowns = []
    server = ttrpc.Server()
    server.register_service(TASK_SERVICE, TaskService(runtime, on_shutdown=lambda: shutdowns.append(1)))
    r, w = await asyncio.open_connection(sock=a)
    serving = asyncio.ensure_future(server.serve_stream(r, w))
    cr, cw = await asyncio.open_connection(sock=b)
    client = ttrpc.Client(cr, cw)
    try:
        return await body(ttrpc.Stub(client, TASK_SERVICE), shutdowns)
    finally:
        await client.close()
        await server.shutdown(grace=1)
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


def run(runtime, body):
    return asyncio.run(_with_service(runtime, body))


def test_create_reads_config_path_and_state_reports_go_zero_exit_time():
    rt = MemoryRuntime()

    async def body(stub, _):
        from google.protobuf import any_pb2
        from proto.gen.runtimeoptions.v1 import api_pb2
        opts = any_pb2.Any(type_url="runtimeoptions.v1.Options",
                           value=api_pb2.Options(config_path="/etc/rund/fast.toml").SerializeToString())
        resp = await stub.Create(shim_pb2.CreateTaskRequest(id="c1", bundle="/b", stdout="/f/out", options=opts))
        state = await stub.State(shim_pb2.StateRequest(id="c1"))
        return resp, state

    resp, state = run(rt, body)
    assert resp.pid == 4242
    assert rt.created[0].config_path == "/etc/rund/fast.toml" and rt.created[0].stdio == Stdio("", "/f/out", "", False)
    assert state.status == types_pb2.CREATED and state.id == "c1" and state.stdout == "/f/out"
    assert state.exited_at == GO_ZERO_TIME and state.HasField("exited_at")


@pytest.mark.parametrize("call, code", [
    (lambda s: s.State(shim_pb2.StateRequest(id="nope")), ttrpc.Code.NOT_FOUND),
    (lambda s: s.Kill(shim_pb2.KillRequest(id="c1", signal=9)), ttrpc.Code.FAILED_PRECONDITION),
    (lambda s: s.Checkpoint(shim_pb2.CheckpointTaskRequest(id="c1")), ttrpc.Code.UNIMPLEMENTED),
    (lambda s: s.Exec(shim_pb2.ExecProcessRequest(id="c1", exec_id="e")), ttrpc.Code.INVALID_ARGUMENT),
])
def test_runtime_errors_reach_containerd_as_its_codes(call, code):
    async def body(stub, _):
        with pytest.raises(ttrpc.TtrpcError) as e:
            await call(stub)
        return e.value

    rt = MemoryRuntime()
    rt.procs["c1"] = ProcessView("/b", 1, Status.RUNNING, Stdio(), None)
    assert run(rt, body).code == code


def test_duplicate_create_is_already_exists_and_wait_returns_exit():
    async def body(stub, _):
        await stub.Create(shim_pb2.CreateTaskRequest(id="c1", bundle="/b"))
        with pytest.raises(ttrpc.AlreadyExists):
            await stub.Create(shim_pb2.CreateTaskRequest(id="c1", bundle="/b"))
        return await stub.Wait(shim_pb2.WaitRequest(id="c1"))

    w = run(MemoryRuntime(), body)
    assert w.exit_status == 137 and w.exited_at.ToDatetime(tzinfo=timezone.utc) == AT


def test_stats_are_cgroup_metrics_of_the_hosts_mode_and_pids_name_execs():
    async def body(stub, _):
        return (await stub.Stats(shim_pb2.StatsRequest(id="c1")), await stub.Pids(shim_pb2.PidsRequest(id="c1")))

    stats, pids = run(MemoryRuntime(), body)
    if metrics.host_is_unified():
        assert stats.stats.type_url == "io.containerd.cgroups.v2.Metrics"
        m2 = v2_metrics_pb2.Metrics.FromString(stats.stats.value)
        assert (m2.cpu.usage_usec * 1000, m2.memory.usage, m2.memory.inactive_file, m2.pids.current) == (
            10000, 20, 3, 2)
    else:
        assert stats.stats.type_url == "io.containerd.cgroups.v1.Metrics"
        m = metrics_pb2.Metrics.FromString(stats.stats.value)
        assert (m.cpu.usage.total, m.memory.usage.usage, m.memory.total_inactive_file, m.pids.current) == (
            10000, 20, 3, 2)
    assert [p.pid for p in pids.processes] == [7, 9]
    assert not pids.processes[0].HasField("info")
    assert pids.processes[1].info.type_url == "containerd.runc.v1.ProcessDetails"


def test_shutdown_is_a_noop_while_containers_remain():
    rt = MemoryRuntime()

    async def body(stub, shutdowns):
        await stub.Create(shim_pb2.CreateTaskRequest(id="c1", bundle="/b"))
        await stub.Shutdown(shim_pb2.ShutdownRequest(id="c1"))
        before = len(shutdowns)
        rt.procs.clear()
        await stub.Shutdown(shim_pb2.ShutdownRequest(id="c1"))
        connect = await stub.Connect(shim_pb2.ConnectRequest(id="c1"))
        return before, len(shutdowns), connect

    before, after, connect = run(rt, body)
    assert (before, after) == (0, 1)
    assert connect.task_pid == 4242 and connect.shim_pid > 0


HOSTILE_IDS = ["..", ".", "../x", "a/b", "x\x00y", "x" * 4096, "", " a"]


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_an_id_that_could_become_a_path_is_invalid_argument_before_the_runtime_sees_it(bad):
    rt = MemoryRuntime()

    async def body(stub, _):
        codes = []
        for call in (lambda: stub.Create(shim_pb2.CreateTaskRequest(id=bad, bundle="/b")),
                     lambda: stub.State(shim_pb2.StateRequest(id=bad)),
                     lambda: stub.Delete(shim_pb2.DeleteRequest(id=bad)),
                     lambda: stub.Start(shim_pb2.StartRequest(id="c1", exec_id=bad or ".")),
                     lambda: stub.Kill(shim_pb2.KillRequest(id="c1", exec_id=bad or "..", signal=9))):
            with pytest.raises(ttrpc.TtrpcError) as e:
                await call()
            codes.append(e.value.code)
        return codes

    assert run(rt, body) == [ttrpc.Code.INVALID_ARGUMENT] * 5
    assert rt.created == []
