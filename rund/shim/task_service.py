"""containerd.task.v2.Task over ttrpc: protobuf in, domain calls on the runtime, protobuf out.

This is the only place Task API messages are touched. Runtime errors map to containerd's codes here:
NotFound 5, AlreadyExists 6, FailedPrecondition 9, InvalidArgument 3, Unimplemented 12, Unavailable 14.
"""
from __future__ import annotations

import json
import logging
import os

from google.protobuf import any_pb2, empty_pb2, timestamp_pb2

from proto import ttrpc
from proto.gen.containerd.runc.v1 import runc_pb2
from proto.gen.containerd.task.v2 import shim_pb2
from proto.gen.containerd.types.task import task_pb2 as types_pb2
from proto.gen.runtimeoptions.v1 import api_pb2 as runtimeoptions_pb2
from rund import __version__, errors, ids
from rund.runtime import telemetry
from rund.runtime.process import Exit, Status, Stdio
from rund.runtime.task_runtime import CreateRequest, Mount, TaskRuntime
from rund.shim import metrics
from rund.shim.timestamps import GO_ZERO_TIME, timestamp

log = logging.getLogger("rund.shim.task")

TASK_SERVICE = shim_pb2.DESCRIPTOR.services_by_name["Task"]
PROCESS_SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RESOURCES_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"

_STATUS = {Status.CREATED: types_pb2.CREATED, Status.RUNNING: types_pb2.RUNNING,
           Status.STOPPED: types_pb2.STOPPED, Status.PAUSED: types_pb2.PAUSED, Status.DELETED: types_pb2.STOPPED}
_ERRORS = {errors.NotFound: ttrpc.NotFound, errors.AlreadyExists: ttrpc.AlreadyExists,
           errors.FailedPrecondition: ttrpc.FailedPrecondition, errors.InvalidArgument: ttrpc.InvalidArgument,
           errors.Unimplemented: ttrpc.Unimplemented, errors.Unavailable: ttrpc.Unavailable,
           errors.ResourceExhausted: ttrpc.ResourceExhausted}


def to_ttrpc_error(e: errors.RundError) -> ttrpc.TtrpcError:
    for cls in type(e).__mro__:
        if cls in _ERRORS:
            return _ERRORS[cls](str(e))
    return ttrpc.Unknown(str(e))


def _exit_fields(exit: Exit | None) -> tuple[int, timestamp_pb2.Timestamp]:
    return (exit.status, timestamp(exit.at)) if exit else (0, GO_ZERO_TIME)


def _json_any(value: any_pb2.Any, expected_url: str, what: str) -> dict:
    if not value.type_url:
        raise errors.InvalidArgument(f"{what}: missing")
    if value.type_url != expected_url:
        raise errors.InvalidArgument(f"{what}: unsupported type {value.type_url!r}, want {expected_url}")
    try:
        doc = json.loads(value.value)
    except ValueError as e:
        raise errors.InvalidArgument(f"{what}: invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise errors.InvalidArgument(f"{what}: must be a JSON object")
    return doc


def _check_ids(req) -> None:
    """Every Task request names a container (and maybe an exec): both may reach paths, so both are checked here,
    once, before the runtime sees them (containerd checks its own, but anyone can write to the shim's socket)."""
    ids.validate(req.id, "container id")
    ids.validate_optional(getattr(req, "exec_id", ""), "exec id")


def _translating_errors(method):
    async def wrapper(self, ctx, req):
        try:
            _check_ids(req)
            return await method(self, ctx, req)
        except errors.RundError as e:
            log.info("%s failed: %s: %s", method.__name__, type(e).__name__, e)
            telemetry.record_error(method.__name__, to_ttrpc_error(e).code.name)   # `rund metrics`: never raises
            raise to_ttrpc_error(e) from None
    wrapper.__name__ = method.__name__
    return wrapper


class TaskService:
    """One method per Task RPC; registered with ttrpc.Server.register_service(TASK_SERVICE, service)."""

    def __init__(self, runtime: TaskRuntime, on_shutdown):
        self._runtime = runtime
        self._on_shutdown = on_shutdown

    @_translating_errors
    async def Create(self, ctx, req: shim_pb2.CreateTaskRequest):
        if req.checkpoint or req.parent_checkpoint:
            raise errors.Unimplemented("rund cannot restore checkpoints")
        config_path = ""
        if req.options.type_url.endswith(runtimeoptions_pb2.Options.DESCRIPTOR.full_name):
            config_path = runtimeoptions_pb2.Options.FromString(req.options.value).config_path
        pid = await self._runtime.create(CreateRequest(
            id=req.id, bundle=req.bundle, stdio=Stdio(req.stdin, req.stdout, req.stderr, req.terminal),
            rootfs=tuple(Mount(m.type, m.source, m.target, tuple(m.options)) for m in req.rootfs),
            config_path=config_path))
        return shim_pb2.CreateTaskResponse(pid=pid)

    @_translating_errors
    async def Start(self, ctx, req: shim_pb2.StartRequest):
        return shim_pb2.StartResponse(pid=await self._runtime.start(req.id, req.exec_id))

    @_translating_errors
    async def Delete(self, ctx, req: shim_pb2.DeleteRequest):
        pid, exit = await self._runtime.delete(req.id, req.exec_id)
        status, at = _exit_fields(exit)
        return shim_pb2.DeleteResponse(pid=pid, exit_status=status, exited_at=at)

    @_translating_errors
    async def Exec(self, ctx, req: shim_pb2.ExecProcessRequest):
        spec = _json_any(req.spec, PROCESS_SPEC_URL, "exec spec")
        await self._runtime.exec(req.id, req.exec_id, Stdio(req.stdin, req.stdout, req.stderr, req.terminal), spec)
        return empty_pb2.Empty()

    @_translating_errors
    async def State(self, ctx, req: shim_pb2.StateRequest):
        p = self._runtime.state(req.id, req.exec_id)
        status, at = _exit_fields(p.exit)
        return shim_pb2.StateResponse(
            id=req.exec_id or req.id, bundle=p.bundle, pid=p.pid, status=_STATUS[p.status],
            stdin=p.stdio.stdin, stdout=p.stdio.stdout, stderr=p.stdio.stderr, terminal=p.stdio.terminal,
            exit_status=status, exited_at=at, exec_id=req.exec_id)

    @_translating_errors
    async def Kill(self, ctx, req: shim_pb2.KillRequest):
        await self._runtime.kill(req.id, req.exec_id, req.signal, req.all)
        return empty_pb2.Empty()

    @_translating_errors
    async def Wait(self, ctx, req: shim_pb2.WaitRequest):
        exit = await self._runtime.wait(req.id, req.exec_id)
        return shim_pb2.WaitResponse(exit_status=exit.status, exited_at=timestamp(exit.at))

    @_translating_errors
    async def Pids(self, ctx, req: shim_pb2.PidsRequest):
        out = []
        for pid, exec_id in await self._runtime.pids(req.id):
            info = types_pb2.ProcessInfo(pid=pid)
            if exec_id:  # as runc does, so `ctr task ps` shows which exec a pid is
                info.info.CopyFrom(any_pb2.Any(type_url=runc_pb2.ProcessDetails.DESCRIPTOR.full_name,
                                               value=runc_pb2.ProcessDetails(exec_id=exec_id).SerializeToString()))
            out.append(info)
        return shim_pb2.PidsResponse(processes=out)

    @_translating_errors
    async def Pause(self, ctx, req: shim_pb2.PauseRequest):
        await self._runtime.pause(req.id)
        return empty_pb2.Empty()

    @_translating_errors
    async def Resume(self, ctx, req: shim_pb2.ResumeRequest):
        await self._runtime.resume(req.id)
        return empty_pb2.Empty()

    @_translating_errors
    async def Checkpoint(self, ctx, req):
        raise errors.Unimplemented("checkpoint is not supported by rund: a VM sandbox cannot be checkpointed by CRIU")

    @_translating_errors
    async def ResizePty(self, ctx, req: shim_pb2.ResizePtyRequest):
        await self._runtime.resize_pty(req.id, req.exec_id, req.width, req.height)
        return empty_pb2.Empty()

    @_translating_errors
    async def CloseIO(self, ctx, req: shim_pb2.CloseIORequest):
        if req.stdin:
            await self._runtime.close_stdin(req.id, req.exec_id)
        return empty_pb2.Empty()

    @_translating_errors
    async def Update(self, ctx, req: shim_pb2.UpdateTaskRequest):
        resources = _json_any(req.resources, RESOURCES_URL, "resources")
        await self._runtime.update(req.id, resources)
        return empty_pb2.Empty()

    @_translating_errors
    async def Stats(self, ctx, req: shim_pb2.StatsRequest):
        s = await self._runtime.stats(req.id)
        telemetry.record_guest_memory(req.id, s.memory.usage_bytes)    # for `rund ps` and metrics; never raises
        return shim_pb2.StatsResponse(stats=metrics.for_this_host(s))

    @_translating_errors
    async def Connect(self, ctx, req: shim_pb2.ConnectRequest):
        return shim_pb2.ConnectResponse(shim_pid=os.getpid(), task_pid=self._runtime.task_pid(req.id),
                                        version=__version__)

    @_translating_errors
    async def Shutdown(self, ctx, req: shim_pb2.ShutdownRequest):
        # A no-op while containers remain (a pod's shim serves them all); otherwise exit after replying.
        if self._runtime.has_containers():
            return empty_pb2.Empty()
        self._on_shutdown()
        return empty_pb2.Empty()
