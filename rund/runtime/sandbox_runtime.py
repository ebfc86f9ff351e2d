"""SandboxRuntime: the TaskRuntime of one shim: containerd's bookkeeping for one pod (its containers, their
processes, exits and events). The pod's VM and what it holds belong to the Sandbox (rund/runtime/sandbox.py).

Exit path, one per process, in containerd's order: the agent's WaitProcess returns once the guest process exited and
its output was read to EOF; then our copies to the FIFOs finish and the FIFOs close; an init's exit waits for the
exits of its execs; only then is the exit recorded (Wait/State see it) and TaskExit published. A VM that dies makes
every agent call fail: each process still running exits with 255. A process whose start fails has exited too.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import time
from pathlib import Path

from rund import config, errors
from rund.runtime import events
from rund.runtime.admission import Admission, slot_count
from rund.runtime.container import Container, Running
from rund.runtime.events import EventSink
from rund.runtime.guest_spec import guest_spec
from rund.runtime.pod_memory import is_pod_sandbox
from rund.runtime.pod_namespaces import PodNamespaces, has_private_uts
from rund.runtime.pod_network import netns_path
from rund.runtime.process import UNKNOWN_EXIT_STATUS, Exit, Process, Status, Stdio, Verb
from rund.runtime.sandbox import ContainerSetup, Sandbox
from rund.runtime.stdio_copy import StdioCopy, agent_stdio
from rund.runtime.task_runtime import ContainerStats, CreateRequest, ProcessView
from rund.runtime.trace import StepTrace

log = logging.getLogger("rund.runtime")


class SandboxRuntime:
    def __init__(self, namespace: str, sandbox_id: str, emit: EventSink):
        self.namespace = namespace
        self.sandbox_id = sandbox_id
        self._emit = emit
        self._containers: dict[str, Container] = {}
        self._sandbox: Sandbox | None = None
        self._lock = asyncio.Lock()          # create/delete of containers and the sandbox, one at a time
        self._tasks: set[asyncio.Task] = set()
        self._pod_end: asyncio.Task | None = None     # started when the sandbox container exits

    # ---- containers --------------------------------------------------------------------------------------------

    async def create(self, req: CreateRequest) -> int:
        async with self._lock:
            if req.id in self._containers:
                raise errors.AlreadyExists(f"container {req.id} already exists")
            host_spec = _read_spec(req.bundle)
            holder = req.id == self.sandbox_id and is_pod_sandbox(host_spec.get("annotations"))
            spec = guest_spec(host_spec, self._pod_namespaces(req.id), pod_holder=holder)
            if spec.dropped_mounts:
                log.warning("container %s: host mounts other than binds cannot be made in a VM, left out: %s", req.id,
                            ", ".join(spec.dropped_mounts))
            sandbox = self._sandbox or self._claim_sandbox(req)
            if sandbox.paused:
                raise errors.FailedPrecondition(f"sandbox {self.sandbox_id} is paused")
            trace = StepTrace(f"create {req.id}")
            init = Running(Process(req.id, "", req.stdio), StdioCopy(req.id, "", req.stdio))
            try:
                init.stdio.open()
                waited = time.monotonic()
                async with _admission(sandbox.cfg).slot():
                    trace.add("admission", time.monotonic() - waited)
                    init.guest_pid = await sandbox.create_container(ContainerSetup(
                        id=req.id, bundle=req.bundle, rootfs=req.rootfs, spec=spec.spec, files=spec.files,
                        volumes=spec.volumes, block_devices=spec.block_devices,
                        stdio=agent_stdio(req.stdio), resources=(host_spec.get("linux") or {}).get("resources"),
                        hostname=_hostname(host_spec, self.sandbox_id), netns=netns_path(host_spec),
                        holder=holder, cgroups_path=_pod_cgroups_path(host_spec) if holder else ""), trace)
            except BaseException:
                init.stdio.close()
                if not self._containers:
                    await self._stop_sandbox()
                raise
            init.stdio.start(sandbox.agent)
            trace.done()
            sandbox.refill_pool()
            self._containers[req.id] = Container(req.id, req.bundle, init)
            self._emit(events.TaskCreated(req.id, req.bundle, req.stdio, sandbox.vmm_pid, req.rootfs))
            return sandbox.vmm_pid

    def _pod_namespaces(self, container_id: str) -> PodNamespaces:
        """Where a pod member finds the pod's namespaces in the guest: in its sandbox container's init."""
        sandbox = self._containers.get(self.sandbox_id)
        if container_id == self.sandbox_id or sandbox is None or not sandbox.init.guest_pid:
            return PodNamespaces()
        return PodNamespaces(sandbox_pid=sandbox.init.guest_pid)

    def _claim_sandbox(self, req: CreateRequest) -> Sandbox:
        cfg = config.load(req.config_path or None)
        sandbox = Sandbox(cfg, self.namespace, self.sandbox_id, os.getpid(), on_oom=self._oom)
        sandbox.claim()
        self._sandbox = sandbox
        return sandbox

    async def start(self, container_id: str, exec_id: str) -> int:
        c = self._container(container_id)
        r = c.get(exec_id)
        sandbox = self._live_sandbox()
        r.process.check(Verb.START)
        if exec_id:
            c.init.process.check_running("start an exec")
            r.stdio.open()
            try:
                r.guest_pid = await sandbox.agent.exec_process(container_id, exec_id, r.process.spec,
                                                               agent_stdio(r.process.stdio))
            except BaseException:
                r.stdio.close()
                self._start_failed(c, r)
                raise
            r.stdio.start(sandbox.agent)
            r.process.mark_started(sandbox.vmm_pid)
            self._emit(events.ExecStarted(container_id, exec_id, sandbox.vmm_pid))
        else:
            trace = StepTrace(f"start {container_id}")
            trace.vm_cpu = sandbox.vm_cpu_ns
            try:
                with trace.step("agent_start"):
                    await sandbox.agent.start_container(container_id)
            except BaseException:
                self._start_failed(c, r)
                raise
            trace.done()
            r.process.mark_started(sandbox.vmm_pid)
            self._emit(events.TaskStarted(container_id, sandbox.vmm_pid))
        # The start event is queued before the monitor can queue the exit (a created process signalled before its
        # start has one already).
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
            self._emit(events.ProcessExited(c.id, p.id, self.task_pid(c.id), p.exit))

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
        if c.id == self.sandbox_id and not p.exec_id and self._pod_end is None:
            self._pod_end = self._spawn(self._end_pod(), f"pod-end-{self.sandbox_id}")

    async def _end_pod(self) -> None:
        """The sandbox container exited: the pod is gone. Every other container is killed and its exit reported,
        then the VM stops (its containers' records stay for containerd to delete)."""
        others = [c for cid, c in self._containers.items() if cid != self.sandbox_id]
        for c in others:
            if c.init.process.status is not Status.STOPPED:
                log.info("pod %s ended: killing container %s", self.sandbox_id, c.id)
                try:
                    await self.kill(c.id, "", signal.SIGKILL, True)
                except errors.RundError as e:
                    log.warning("pod %s ended: killing container %s: %s", self.sandbox_id, c.id, e)
        monitors = [r.monitor for c in others for r in [c.init, *c.execs.values()]
                    if r.monitor is not None and not r.monitor.done()]
        if monitors:
            await asyncio.wait(monitors, timeout=self._teardown_timeout())
        async with self._lock:
            await self._stop_sandbox()

    async def delete(self, container_id: str, exec_id: str) -> tuple[int, Exit | None]:
        c = self._container(container_id)
        if exec_id:
            r = c.get(exec_id)
            r.process.check(Verb.DELETE)
            await r.wind_down()
            exit = r.process.exit
            ran = r.process.status is Status.STOPPED
            r.process.mark_deleted()
            del c.execs[exec_id]
            if ran and self._sandbox is not None:
                await self._sandbox.remove_process(container_id, exec_id)
            return r.process.pid, exit
        if container_id == self.sandbox_id and self._pod_end is not None:
            await asyncio.gather(self._pod_end, return_exceptions=True)   # the pod's other exits come first
        async with self._lock:
            p = c.init.process
            p.check(Verb.DELETE)
            for r in [c.init, *c.execs.values()]:
                await r.wind_down()
            exit = p.exit                     # None: created, never started
            trace = StepTrace(f"delete {container_id}")
            sandbox = self._sandbox
            pid = p.pid or self.task_pid(container_id)
            if sandbox is not None:
                # The sandbox container's VM goes away with it: no need to remove it in the guest first.
                with trace.step("remove"):
                    await sandbox.remove_container(container_id, in_guest=container_id != self.sandbox_id)
            p.mark_deleted()
            del self._containers[container_id]
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
        c.init.process.check_running("exec")
        self._live_sandbox()
        c.execs[exec_id] = Running(Process(container_id, exec_id, stdio, process_spec),
                                   StdioCopy(container_id, exec_id, stdio))
        self._emit(events.ExecAdded(container_id, exec_id))

    def state(self, container_id: str, exec_id: str) -> ProcessView:
        c = self._container(container_id)
        p = c.get(exec_id).process
        return ProcessView(c.bundle, p.pid or self.task_pid(container_id), p.status, p.stdio, p.exit)

    async def kill(self, container_id: str, exec_id: str, signal: int, all: bool) -> None:
        c = self._container(container_id)
        r = c.get(exec_id)
        p = r.process
        if p.status is Status.STOPPED:
            raise errors.NotFound(f"process {p.id} already finished")
        sandbox = self._sandbox
        if sandbox is None:
            raise errors.Unavailable(f"sandbox {self.sandbox_id}: its VM is not running")
        was_paused = sandbox.paused
        await sandbox.signal(container_id, exec_id, signal, all)
        if was_paused and not sandbox.paused:
            self._mark_all(Process.mark_resumed)
            self._emit(events.TaskResumed(container_id))
        if p.status is Status.CREATED and r.monitor is None and not sandbox.dead:
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
        """Pauses the pod's VM: every container of the pod is paused with it (one VM, one set of vCPUs)."""
        c = self._container(container_id)
        c.init.process.check(Verb.PAUSE)
        await self._live_sandbox().pause()
        self._mark_all(Process.mark_paused)
        self._emit(events.TaskPaused(container_id))

    async def resume(self, container_id: str) -> None:
        c = self._container(container_id)
        c.init.process.check(Verb.RESUME)
        await self._live_sandbox().resume()
        self._mark_all(Process.mark_resumed)
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
        await self._live_sandbox().update_container(container_id, resources)   # the guest's cgroups, the VM's size

    async def stats(self, container_id: str) -> ContainerStats:
        self._container(container_id)
        return await self._live_sandbox().agent.stats_container(container_id)

    def _teardown_timeout(self) -> float:
        cfg = self._sandbox.cfg if self._sandbox else config.Config()
        return cfg.agent.teardown_timeout_s

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
        await self._stop_sandbox()
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

    def _mark_all(self, mark) -> None:
        for c in self._containers.values():
            for r in [c.init, *c.execs.values()]:
                mark(r.process)

    async def _stop_sandbox(self) -> None:
        if self._sandbox is None:
            return
        sandbox, self._sandbox = self._sandbox, None
        trace = StepTrace(f"teardown {self.sandbox_id}")
        with trace.step("sandbox"):
            await sandbox.stop()
        trace.done()

    def _oom(self, container_id: str) -> None:
        if container_id in self._containers:
            self._emit(events.TaskOOM(container_id))

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _admission(cfg: config.Config) -> Admission:
    return Admission(Path(cfg.state_dir) / "admission", slot_count(cfg.admission.max_starts),
                     cfg.admission.max_wait_s)


def _read_spec(bundle: str) -> dict:
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise errors.InvalidArgument(f"cannot read the bundle's config.json: {e}") from None


def _pod_cgroups_path(host_spec: dict) -> str:
    """A CRI pod's sandbox container's cgroupsPath: where runc would put the pause process, and rund the VMM."""
    path = (host_spec.get("linux") or {}).get("cgroupsPath")
    return path if isinstance(path, str) else ""


def _hostname(spec: dict, sandbox_id: str) -> str:
    """The VM's hostname: the spec's; the node's when the spec keeps the host's UTS namespace (a hostNetwork pod,
    as under runc); else one made from the sandbox id (docker's habit; an unset one would read "(none)"). An id may
    hold '_' and '.', which a hostname label may not: they become '-'."""
    name = spec.get("hostname")
    if name:
        return name if isinstance(name, str) else ""
    if not has_private_uts(spec):
        return socket.gethostname()
    return hostname_from_id(sandbox_id)


def hostname_from_id(sandbox_id: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", sandbox_id.lower())[:63].strip("-")
    return label or "rund"
