"""SandboxRuntime: the TaskRuntime of one shim, serving one pod VM and its containers.

Exit path, one per process, in containerd's order: the agent's WaitProcess returns once the guest process exited and
its output was read to EOF; then our copies to the FIFOs finish and the FIFOs close; an init's exit waits for the
exits of its execs; only then is the exit recorded (Wait/State see it) and TaskExit published. A VM that dies makes
every agent call fail: each process still running exits with 255.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from pathlib import Path

from rund import config, errors
from rund.agent import AgentTimeout, LayeredRootfs
from rund.runtime import events
from rund.runtime.container import Container, Running
from rund.runtime.events import EventSink
from rund.runtime.guest_spec import guest_spec
from rund.runtime.process import UNKNOWN_EXIT_STATUS, Exit, Process, Status, Stdio
from rund.runtime.rootfs import RootfsPins, owner_of
from rund.runtime.sandbox import Sandbox
from rund.runtime.state import BUNDLE_POINTER, ContainerRecord, write_json_atomic
from rund.runtime.stdio_copy import StdioCopy, agent_stdio
from rund.runtime.trace import StepTrace
from rund.runtime.task_runtime import ContainerStats, CreateRequest, ProcessView

log = logging.getLogger("rund.runtime")


class SandboxRuntime:
    def __init__(self, namespace: str, sandbox_id: str, emit: EventSink):
        self.namespace = namespace
        self.sandbox_id = sandbox_id
        self._emit = emit
        self._containers: dict[str, Container] = {}
        self._sandbox: Sandbox | None = None
        self._pins: RootfsPins | None = None
        self._lock = asyncio.Lock()          # create/delete of containers and the sandbox, one at a time
        self._tasks: set[asyncio.Task] = set()
        self._paused = False

    # ---- containers --------------------------------------------------------------------------------------------

    async def create(self, req: CreateRequest) -> int:
        async with self._lock:
            if req.id in self._containers:
                raise errors.AlreadyExists(f"container {req.id} already exists")
            host_spec = _read_spec(req.bundle)
            spec = guest_spec(host_spec)
            if spec.dropped_mounts:
                log.warning("container %s: host directories cannot be mounted in the VM yet, left out: %s", req.id,
                            ", ".join(spec.dropped_mounts))
            if self._sandbox is None:
                self._claim_sandbox(req)
            assert self._sandbox is not None and self._pins is not None
            sandbox, pins = self._sandbox, self._pins
            owner = owner_of(self.namespace, req.id)
            init = None
            trace = StepTrace(f"create {req.id}")
            try:
                # Recorded before acquired: `delete` after a crash releases what the records name.
                sandbox.dir.write_container(ContainerRecord(req.id, req.bundle, owner))
                write_json_atomic(Path(req.bundle) / BUNDLE_POINTER, {
                    "sandbox_dir": str(sandbox.dir.path), "sandbox_id": self.sandbox_id, "container_id": req.id,
                    "config_path": sandbox.cfg.source})
                if not sandbox.started:
                    with trace.step("rootfs"):
                        images = await pins.prepare_first(req.id, owner, req.rootfs, req.bundle)
                    await sandbox.start(images, (host_spec.get("linux") or {}).get("resources"),
                                        _hostname(host_spec, self.sandbox_id), trace)
                    self._spawn(self._forward_ooms(), f"oom-{self.sandbox_id}")
                device = await pins.device_for(req.id, owner, req.rootfs, req.bundle)
                rootfs = LayeredRootfs(base_device=device, base_fstype="erofs", dax=sandbox.launched.dax,
                                       upper_size_bytes=sandbox.cfg.rootfs.upper_mib << 20)
                init = Running(Process(req.id, "", req.stdio), StdioCopy(sandbox.agent, req.id, "", req.stdio))
                init.stdio.open()
                with trace.step("agent_create"):
                    init.guest_pid = await sandbox.agent.create_container(req.id, spec.spec, rootfs,
                                                                          agent_stdio(req.stdio), spec.files)
            except BaseException:
                if init is not None:
                    init.stdio.close()
                await pins.release(req.id)
                sandbox.dir.remove_container(req.id)
                if not self._containers:
                    await self._stop_sandbox()
                raise
            init.stdio.start()
            trace.done()
            sandbox.refill_pool()
            self._containers[req.id] = Container(req.id, req.bundle, init)
            pid = sandbox.vmm_pid
            self._emit(events.TaskCreated(req.id, req.bundle, req.stdio, pid, req.rootfs))
            return pid

    def _claim_sandbox(self, req: CreateRequest) -> None:
        cfg = config.load(req.config_path or None)
        sandbox = Sandbox(cfg, self.namespace, self.sandbox_id, os.getpid())
        sandbox.claim()
        self._sandbox, self._pins = sandbox, RootfsPins(cfg, sandbox)

    async def start(self, container_id: str, exec_id: str) -> int:
        c = self._container(container_id)
        r = c.get(exec_id)
        sandbox = self._live_sandbox()
        if r.process.status is not Status.CREATED:
            raise errors.FailedPrecondition(f"process {r.process.id} is {r.process.status.value}, cannot start")
        if exec_id:
            if c.init.process.status is not Status.RUNNING:
                raise errors.FailedPrecondition(f"container {container_id} is not running")
            r.stdio.open()
            try:
                r.guest_pid = await sandbox.agent.exec_process(container_id, exec_id, r.process.spec,
                                                               agent_stdio(r.process.stdio))
            except BaseException:
                r.stdio.close()
                self._start_failed(c, r)
                raise
            r.stdio.start()
            r.process.mark_started(sandbox.vmm_pid)
            self._emit(events.ExecStarted(container_id, exec_id, sandbox.vmm_pid))
        else:
            trace = StepTrace(f"start {container_id}")
            try:
                with trace.step("agent_start"):
                    await sandbox.agent.start_container(container_id)
            except BaseException:
                self._start_failed(c, r)
                raise
            trace.done()
            r.process.mark_started(sandbox.vmm_pid)
            self._emit(events.TaskStarted(container_id, sandbox.vmm_pid))
        # The start event is queued before the monitor can queue the exit (a created process killed before its
        # start already has one).
        if r.monitor is None:
            r.monitor = self._spawn(self._monitor(c, r), f"monitor-{r.process.id}")
        return sandbox.vmm_pid

    def _start_failed(self, c: Container, r: Running) -> None:
        """A process that could not start has exited (as runc's does): Wait returns, Delete may follow. An init
        reports its exit (containerd learns the task stopped); a failed exec reports none, as runc's shim."""
        p = r.process
        if r.monitor is not None or not p.mark_exited(Exit.now(UNKNOWN_EXIT_STATUS)):
            return
        log.info("process %s of %s did not start: reporting exit %d", p.id, c.id, UNKNOWN_EXIT_STATUS)
        if not p.exec_id:
            self._emit(events.ProcessExited(c.id, p.id, p.pid or self.task_pid(c.id), p.exit))

    async def _monitor(self, c: Container, r: Running) -> None:
        p = r.process
        try:
            status = (await self._live_sandbox().agent.wait_process(p.container_id, p.exec_id)).code
        except errors.RundError as e:
            log.warning("process %s of %s: no exit status (%s): reporting %d", p.id, c.id, e, UNKNOWN_EXIT_STATUS)
            status = UNKNOWN_EXIT_STATUS
        await r.stdio.drained()
        r.stdio.close()
        if not p.exec_id:   # the init's exit comes after its execs' (they die with its pid namespace)
            await asyncio.gather(*c.running_exec_monitors(), return_exceptions=True)
        exit = Exit.now(status)
        log.info("process %s of %s exited with %d", p.id, c.id, status)
        if p.mark_exited(exit):
            self._emit(events.ProcessExited(c.id, p.id, p.pid or self.task_pid(c.id), exit))

    async def delete(self, container_id: str, exec_id: str) -> tuple[int, Exit | None]:
        c = self._container(container_id)
        if exec_id:
            r = c.get(exec_id)
            if r.process.status is Status.RUNNING:
                raise errors.FailedPrecondition(f"exec {exec_id} is running; kill it first")
            await r.wind_down()
            del c.execs[exec_id]
            sandbox = self._sandbox
            if r.process.status is Status.STOPPED and sandbox is not None and not sandbox.dead:
                try:
                    await sandbox.agent.remove_process(container_id, exec_id, timeout=self._teardown_timeout())
                except AgentTimeout:
                    await sandbox.declare_dead(f"removing exec {exec_id} of {container_id} got no answer")
                except errors.RundError as e:
                    log.warning("exec %s of %s: removing it in the guest: %s", exec_id, container_id, e)
            return r.process.pid, r.process.exit
        async with self._lock:
            p = c.init.process
            if p.status is Status.RUNNING:
                raise errors.FailedPrecondition(f"container {container_id} is running; kill it first")
            for r in [c.init, *c.execs.values()]:
                await r.wind_down()
            trace = StepTrace(f"delete {container_id}")
            sandbox = self._sandbox
            # The sandbox container's VM goes away with it: no need to remove it in the guest first.
            if sandbox is not None and not sandbox.dead and container_id != self.sandbox_id:
                try:
                    with trace.step("agent_remove"):
                        await sandbox.agent.remove_container(container_id, force=True,
                                                             timeout=self._teardown_timeout())
                except AgentTimeout:
                    await sandbox.declare_dead(f"removing container {container_id} got no answer")
                except errors.RundError as e:
                    log.warning("container %s: removing it in the guest: %s", container_id, e)
            del self._containers[container_id]
            if self._pins is not None:
                await self._pins.release(container_id)
            if sandbox is not None:
                sandbox.dir.remove_container(container_id)
            exit = p.exit                     # None: created, never started
            pid = p.pid or (sandbox.vmm_pid if sandbox else 0)
            if container_id == self.sandbox_id or not self._containers:
                with trace.step("teardown"):
                    await self._stop_sandbox()
            trace.done()
            self._emit(events.TaskDeleted(container_id, pid, exit or Exit.now(0)))
            return pid, exit

    async def exec(self, container_id: str, exec_id: str, stdio: Stdio, process_spec: dict) -> None:
        c = self._container(container_id)
        if not exec_id:
            raise errors.InvalidArgument("exec id is required")
        if exec_id in c.execs:
            raise errors.AlreadyExists(f"exec {exec_id} already exists in container {container_id}")
        if c.init.process.status is not Status.RUNNING:
            raise errors.FailedPrecondition(f"container {container_id} is not running")
        sandbox = self._live_sandbox()
        c.execs[exec_id] = Running(Process(container_id, exec_id, stdio, process_spec),
                                   StdioCopy(sandbox.agent, container_id, exec_id, stdio))
        self._emit(events.ExecAdded(container_id, exec_id))

    def state(self, container_id: str, exec_id: str) -> ProcessView:
        c = self._container(container_id)
        p = c.get(exec_id).process
        status = p.status
        if self._paused and status is Status.RUNNING:
            status = Status.PAUSED
        return ProcessView(c.bundle, p.pid or (self._sandbox.vmm_pid if self._sandbox else 0), status, p.stdio,
                           p.exit)

    async def kill(self, container_id: str, exec_id: str, signal: int, all: bool) -> None:
        c = self._container(container_id)
        r = c.get(exec_id)
        p = r.process
        if p.status is Status.STOPPED:
            raise errors.NotFound(f"process {p.id} already finished")
        sandbox = self._sandbox
        if sandbox is not None and sandbox.dead:
            return       # its VM is gone: the process is exiting (255) already
        sandbox = self._live_sandbox()
        if self._paused:
            # A stopped VM cannot deliver a signal (runc's kill thaws a frozen container the same way).
            log.info("sandbox %s is paused: resuming it to deliver signal %d to %s", self.sandbox_id, signal, p.id)
            try:
                await sandbox.resume()
            except errors.Unavailable as e:
                await sandbox.declare_dead(f"resuming it to deliver a signal failed ({e})")
                return
            self._paused = False
            self._emit(events.TaskResumed(container_id))
        try:
            await sandbox.agent.signal_process(container_id, exec_id, signal, all, timeout=self._teardown_timeout())
        except AgentTimeout:
            await sandbox.declare_dead(f"signal {signal} to {p.id} got no answer")
            return
        if p.status is Status.CREATED and r.monitor is None:
            # Signalled before its start: if it dies, its exit is reported like any other.
            r.monitor = self._spawn(self._monitor(c, r), f"monitor-{p.id}")

    async def wait(self, container_id: str, exec_id: str) -> Exit:
        return await self._container(container_id).get(exec_id).process.wait()

    async def pids(self, container_id: str) -> list[tuple[int, str]]:
        c = self._container(container_id)
        pids = await self._live_sandbox().agent.list_processes(container_id)
        execs = {r.guest_pid: exec_id for exec_id, r in c.execs.items() if r.guest_pid}
        return [(pid, execs.get(pid, "")) for pid in pids]

    async def pause(self, container_id: str) -> None:
        self._container(container_id)
        if self._paused:
            raise errors.FailedPrecondition(f"sandbox {self.sandbox_id} is already paused")
        await self._live_sandbox().pause()
        self._paused = True
        self._emit(events.TaskPaused(container_id))

    async def resume(self, container_id: str) -> None:
        self._container(container_id)
        if not self._paused:
            raise errors.FailedPrecondition(f"sandbox {self.sandbox_id} is not paused")
        await self._live_sandbox().resume()
        self._paused = False
        self._emit(events.TaskResumed(container_id))

    async def resize_pty(self, container_id: str, exec_id: str, width: int, height: int) -> None:
        r = self._container(container_id).get(exec_id)
        if not r.process.stdio.terminal:
            raise errors.FailedPrecondition(f"process {r.process.id} has no terminal")
        await self._live_sandbox().agent.resize_tty(container_id, exec_id, rows=height, columns=width)

    async def close_stdin(self, container_id: str, exec_id: str) -> None:
        await self._container(container_id).get(exec_id).stdio.close_stdin()

    async def update(self, container_id: str, resources: dict) -> None:
        self._container(container_id)
        await self._live_sandbox().agent.update_container(container_id, resources)

    async def stats(self, container_id: str) -> ContainerStats:
        self._container(container_id)
        return await self._live_sandbox().agent.stats_container(container_id)

    def _teardown_timeout(self) -> float:
        return self._sandbox.cfg.agent.teardown_timeout_s if self._sandbox else config.AgentConfig.teardown_timeout_s

    def task_pid(self, container_id: str) -> int:
        return self._sandbox.vmm_pid if self._sandbox else 0

    def has_containers(self) -> bool:
        return bool(self._containers)

    async def close(self) -> None:
        """The shim is exiting: release whatever is left."""
        for c in list(self._containers.values()):
            for r in [c.init, *c.execs.values()]:
                await r.stdio.stop()
        self._containers.clear()
        await self._stop_sandbox()        # releases every rootfs pin too
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- helpers -----------------------------------------------------------------------------------------------

    def _container(self, container_id: str) -> Container:
        try:
            return self._containers[container_id]
        except KeyError:
            raise errors.NotFound(f"container {container_id} not created") from None

    def _live_sandbox(self) -> Sandbox:
        if self._sandbox is None or self._sandbox.dead:
            raise errors.Unavailable(f"sandbox {self.sandbox_id}: its VM is not running")
        return self._sandbox

    async def _stop_sandbox(self) -> None:
        if self._sandbox is None and self._pins is None:
            return
        trace = StepTrace(f"teardown {self.sandbox_id}")
        if self._sandbox is not None:
            sandbox, self._sandbox = self._sandbox, None
            with trace.step("sandbox"):
                await sandbox.stop()
        if self._pins is not None:
            pins, self._pins = self._pins, None
            with trace.step("rootfs"):
                await pins.release_all()
        trace.done()

    async def _forward_ooms(self) -> None:
        sandbox = self._sandbox
        while sandbox is not None and not sandbox.dead:
            try:
                cid = await sandbox.agent.get_oom_event()
            except errors.RundError:
                return
            if cid in self._containers:
                self._emit(events.TaskOOM(cid))

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _read_spec(bundle: str) -> dict:
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise errors.InvalidArgument(f"cannot read the bundle's config.json: {e}") from None


def _hostname(spec: dict, sandbox_id: str) -> str:
    """The VM's hostname: the spec's, else one made from the sandbox id (docker's habit; an unset one would read
    "(none)"). An id may hold '_' and '.', which a hostname label may not: they become '-'."""
    name = spec.get("hostname")
    if name:
        return name if isinstance(name, str) else ""
    return hostname_from_id(sandbox_id)


def hostname_from_id(sandbox_id: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", sandbox_id.lower())[:63].strip("-")
    return label or "rund"

