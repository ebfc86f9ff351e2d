"""The Agent ttrpc service: protobuf in, domain calls, protobuf out; agent errors become ttrpc codes here."""
import asyncio
import functools
import logging

from google.protobuf import empty_pb2

from proto import ttrpc
from proto.gen.rund.agent.v1 import agent_pb2 as pb

from . import api_convert as convert
from .container.manager import ContainerManager
from .errors import AgentError, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, SetupFailed
from . import spans
from .sandbox import Sandbox

log = logging.getLogger(__name__)
DESCRIPTOR = pb.DESCRIPTOR.services_by_name["Agent"]
_EMPTY = empty_pb2.Empty
_TTRPC_ERROR = {
    InvalidArgument: ttrpc.InvalidArgument,
    NotFound: ttrpc.NotFound,
    AlreadyExists: ttrpc.AlreadyExists,
    FailedPrecondition: ttrpc.FailedPrecondition,
    SetupFailed: ttrpc.Unknown,
    AgentError: ttrpc.Unknown,
}


def ttrpc_error_for(exc: AgentError) -> type[ttrpc.TtrpcError]:
    """The status of the nearest mapped class in the error's MRO, so a subclass answers as its base does."""
    for cls in type(exc).__mro__:
        if cls in _TTRPC_ERROR:
            return _TTRPC_ERROR[cls]
    return ttrpc.Unknown


# Calls that wait on the guest (a process's exit or output, room in a pipe, an OOM kill): not the host waiting on
# the agent, so they do not keep it from its idle work (idle.py).
LONG_POLLS = frozenset({"WaitProcess", "ReadStdout", "ReadStderr", "WriteStdin", "GetOOMEvent"})


def edge(handler):
    """Typed agent errors -> their ttrpc status; anything else is a bug: logged, answered Internal."""
    busy = handler.__name__ not in LONG_POLLS

    @functools.wraps(handler)
    async def wrapper(self, ctx, request):
        idle = getattr(self, "_idle", None) if busy else None
        if idle is not None:
            idle.enter()
        try:
            return await handler(self, ctx, request)
        except (ttrpc.TtrpcError, asyncio.CancelledError):
            raise
        except tuple(_TTRPC_ERROR) as exc:
            raise ttrpc_error_for(exc)(str(exc)) from None
        except Exception as exc:
            log.exception("%s crashed", handler.__name__)
            raise ttrpc.Internal(f"{handler.__name__}: {type(exc).__name__}: {exc}") from None
        finally:
            if idle is not None:
                idle.leave()
    return wrapper


class AgentService:
    def __init__(self, sandbox: Sandbox, oom):
        self._sandbox = sandbox
        self._containers: ContainerManager = sandbox.containers
        self._oom = oom
        self._idle = sandbox.idle

    @edge
    async def Health(self, ctx, req):
        version, release, uptime_ns = self._sandbox.health()
        return pb.HealthResponse(agent_version=version, kernel_release=release, uptime_ns=uptime_ns)

    @edge
    async def SetupSandbox(self, ctx, req):
        await self._sandbox.setup(req.sandbox_id, req.hostname, convert.network(req.network),
                                  tuple(req.kernel_modules))
        return _EMPTY()

    @edge
    async def DestroySandbox(self, ctx, req):
        await self._sandbox.destroy(req.sandbox_id)
        return _EMPTY()

    @edge
    async def PostRestore(self, ctx, req):
        host_time = req.host_time.ToNanoseconds() if req.HasField("host_time") else None
        spans.reset("request")
        await self._sandbox.post_restore(host_time, req.entropy, convert.network(req.network), req.hostname)
        spans.mark("done")
        spans.dump("post_restore")
        return _EMPTY()

    @edge
    async def CreateContainer(self, ctx, req):
        pid = await self._containers.create(req.container_id, req.oci_spec_json, convert.rootfs(req.rootfs),
                                            convert.stdio(req.stdio), [(f.data, f.mode) for f in req.files])
        return pb.CreateContainerResponse(pid=pid)

    @edge
    async def StartContainer(self, ctx, req):
        return pb.StartContainerResponse(pid=await self._containers.start(req.container_id))

    @edge
    async def RemoveContainer(self, ctx, req):
        await self._containers.remove(req.container_id, req.force)
        return _EMPTY()

    @edge
    async def RemoveProcess(self, ctx, req):
        self._containers.remove_process(req.container_id, req.exec_id)
        return _EMPTY()

    @edge
    async def UpdateContainer(self, ctx, req):
        self._containers.update(req.container_id, req.resources_json)
        return _EMPTY()

    @edge
    async def StatsContainer(self, ctx, req):
        return convert.stats_response(self._containers.stats(req.container_id))

    @edge
    async def ListProcesses(self, ctx, req):
        return pb.ListProcessesResponse(pids=self._containers.pids(req.container_id))

    @edge
    async def ExecProcess(self, ctx, req):
        pid = await self._containers.exec(req.container_id, req.exec_id, req.process_json, convert.stdio(req.stdio))
        return pb.ExecProcessResponse(pid=pid)

    @edge
    async def SignalProcess(self, ctx, req):
        self._containers.signal(req.container_id, req.exec_id, req.signal, req.all)
        return _EMPTY()

    @edge
    async def WaitProcess(self, ctx, req):
        return convert.wait_response(await self._containers.wait(req.container_id, req.exec_id))

    @edge
    async def WriteStdin(self, ctx, req):
        process = self._containers.process(req.container_id, req.exec_id)
        return pb.WriteStreamResponse(length=await process.io.stdin.write(req.data))

    @edge
    async def CloseStdin(self, ctx, req):
        self._containers.process(req.container_id, req.exec_id).io.stdin.close()
        return _EMPTY()

    @edge
    async def ReadStdout(self, ctx, req):
        process = self._containers.process(req.container_id, req.exec_id)
        data, eof = await process.io.stdout.read(req.max_length)
        return pb.ReadStreamResponse(data=data, eof=eof)

    @edge
    async def ReadStderr(self, ctx, req):
        process = self._containers.process(req.container_id, req.exec_id)
        data, eof = await process.io.stderr.read(req.max_length)
        return pb.ReadStreamResponse(data=data, eof=eof)

    @edge
    async def TtyWinResize(self, ctx, req):
        if req.rows > 0xFFFF or req.columns > 0xFFFF:
            raise InvalidArgument("rows" if req.rows > 0xFFFF else "columns", "must fit in 16 bits")
        self._containers.process(req.container_id, req.exec_id).io.resize(req.rows, req.columns)
        return _EMPTY()

    @edge
    async def GetOOMEvent(self, ctx, req):
        return pb.OOMEvent(container_id=await self._oom.next())
