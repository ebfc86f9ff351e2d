"""All containers of the sandbox: the operations the agent API exposes, on domain values."""
import asyncio
import logging
import os
import re
import shutil
import signal

from ..errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, SetupFailed
from ..linux import namespaces as ns
from ..linux.seccomp import SeccompFilter
from ..oci.spec import ContainerSpec, parse_process_document, parse_resources_document, parse_spec
from .. import spans
from . import files as files_mod
from . import pod_shm
from . import block_devices
from . import volumes
from . import rootfs as rootfs_mod
from .seccomp import compile_profile
from .holder import HOLD, HolderPlan, run_holder, run_spare_holder
from .child_main import ChildStdio, ExecPlan, InitPlan, encode_plan, run_exec, run_init, run_spare_init, spare_fits
from .container import Container
from .launcher import Launcher, PidNamespace, StatusChannel
from .process import Process
from .state import ContainerState
from .rootfs import PreparedRootfs
from .stdio import PipeSet
from .types import ContainerStats, ExitInfo, Rootfs, StdioConfig

log = logging.getLogger(__name__)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
REMOVE_TIMEOUT = 10.0
# What a CRI pod's sandbox container asks for (pid, ipc and uts of its own; its network and mount are dropped):
# the namespaces of the spare holder.
SPARE_HOLDER_NAMESPACES = ns.CLONE_NEWIPC | ns.CLONE_NEWUTS


async def _nothing() -> None:
    return None


def _nothing_now() -> None:
    return None


def check_id(value: str, field: str) -> str:
    if not _ID.match(value):
        raise InvalidArgument(field, f"must match {_ID.pattern}, got {value!r}")
    return value


class ContainerManager:
    def __init__(self, launcher: Launcher, cgroups, oom, state_dir: str):
        self._launcher = launcher
        self._cgroups = cgroups
        self._oom = oom
        self._state_dir = state_dir
        self._containers: dict[str, Container] = {}
        self._creating: set[str] = set()
        self._spare: tuple[int, asyncio.Future, StatusChannel] | None = None   # a holder forked ahead of time
        self._spare_init: tuple[int, asyncio.Future, StatusChannel] | None = None  # an init forked ahead of time
        # Fork a new spare init after a removal: set while this agent may still be saved as a template (cleared by
        # PostRestore and SetupSandbox), so a template's warm-up container leaves one behind for its clones.
        self.keep_spares = True
        self.before_container = _nothing     # awaited before a container (not a pod holder) or an exec is made
        self.pod_started = _nothing_now      # called once a pod holder started: the pod's first container is next

    def get(self, container_id: str) -> Container:
        try:
            return self._containers[container_id]
        except KeyError:
            raise NotFound(f"container {container_id!r} not found") from None

    def ids(self) -> list[str]:
        return list(self._containers)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def create(self, container_id: str, spec_json: bytes, rootfs: Rootfs, stdio: StdioConfig,
                     files: list[tuple[bytes, int]] = ()) -> int:
        spans.reset("request")
        check_id(container_id, "container_id")
        if container_id in self._containers or container_id in self._creating:
            raise AlreadyExists(f"container {container_id!r} already exists")
        spec = parse_spec(spec_json)
        spans.mark("spec")
        if not spec.pod_holder:
            await self.before_container()
            spans.mark("network")
        # A pod holder never execs: a profile would filter nothing, and compiling one costs ~0.3 s in the guest.
        seccomp_filter = compile_profile(spec.seccomp) if spec.seccomp and not spec.pod_holder else None
        spans.mark("parsed")
        self._creating.add(container_id)
        try:
            spec = pod_shm.place(spec, os.path.join(self._state_dir, "pod-shm"))
            if not spec.pod_holder:     # a holder mounts nothing: its copied files and volumes would go unused
                spec = files_mod.place(spec, list(files), self._files_dir(container_id))
                spec = volumes.place(spec, container_id, os.path.join(self._state_dir, "volumes"))
                spec = await block_devices.place(spec, spec_json)
            spans.mark("placed")
            container = await self._create(container_id, spec, rootfs, stdio, seccomp_filter)
        except BaseException:
            shutil.rmtree(self._files_dir(container_id), ignore_errors=True)
            raise
        finally:
            self._creating.discard(container_id)
        self._containers[container_id] = container
        if container.cgroup is not None:
            self._oom.watch(container_id, container.cgroup.memory_events_path)
        spans.mark("done")
        spans.dump(f"create {container_id}")
        return container.init.pid

    async def _create(self, container_id: str, spec: ContainerSpec, rootfs: Rootfs, stdio: StdioConfig,
                      seccomp_filter: SeccompFilter | None) -> Container:
        if spec.pod_holder:
            return await self._create_holder(container_id, spec, stdio)
        await rootfs_mod.wait_for_devices(rootfs)
        spans.mark("device")
        prepared = rootfs_mod.prepare(rootfs, os.path.join(self._state_dir, "containers", container_id))
        spans.mark("rootfs")
        cgroup = None
        opened: list[int] = []
        pipes = None
        try:
            spec = spec._replace(readonly_root=spec.readonly_root or prepared.readonly)
            cgroup = self._cgroups.create(container_id)
            if cgroup is not None:
                cgroup.apply(spec.resources)
                cgroup.restrict_devices(spec.resources.devices)  # always: no rules means runc's defaults only
            elif not spec.resources.is_empty():
                log.warning("container %s: no cgroups here, its resource limits are not applied", container_id)
            spans.mark("cgroup")
            joins, new_flags, pid_ns = _namespace_plan(spec.namespaces, opened)
            pipes = PipeSet(stdio)
            plan = InitPlan(spec=spec, rootfs=prepared.path,
                            cgroup_procs=cgroup.procs_path if cgroup is not None else None,
                            joins=tuple(joins), new_namespaces=new_flags,
                            stdio=ChildStdio(tuple(pipes.child_fds), stdio.terminal, spec.process.console_size),
                            seccomp=seccomp_filter)
            spare = self._take_spare_init(pid_ns, spec)
            if spare is not None and self._hand_plan(spare, plan):
                pid, exit_future, channel = spare
                log.debug("container %s: set up by the spare init (pid %d)", container_id, pid)
            else:
                pid, exit_future, channel = self._launcher.fork(lambda sock: run_init(sock, plan), pid_ns)
            spans.mark("forked")
            pipes.close_child_ends()
            try:
                master = await channel.expect_ready()
                spans.mark("child_ready")
            except BaseException:
                channel.close()
                _kill(pid)
                await asyncio.shield(exit_future)
                raise
            init = Process(container_id, "", pid, exit_future, pipes.process_io(master))
            ns_names = tuple(ns.BY_OCI_TYPE[n.type][1] for n in spec.namespaces)
            return Container(container_id, spec, prepared, cgroup, init, channel, ns_names, seccomp_filter)
        except BaseException:
            if pipes is not None:
                pipes.close()
            if cgroup is not None:
                await cgroup.remove()
            prepared.cleanup()
            raise
        finally:
            for fd in opened:
                os.close(fd)

    def prepare_spares(self) -> None:
        """Fork a spare pod holder and a spare init, so that a pod's sandbox container costs a message instead of a
        fork (~0.2 s in a TCG guest), and its first container a message instead of a fork and a signal reset.
        Called at the agent's start: a template's clones each find them there (and the pod's /dev/shm mounted)."""
        pod_shm.prepare(os.path.join(self._state_dir, "pod-shm"))
        self._cgroups.prepare_spare()
        if self._spare is None:
            plan = HolderPlan("", (), SPARE_HOLDER_NAMESPACES, ())
            try:
                self._spare = self._launcher.fork(lambda sock: run_spare_holder(sock, plan), PidNamespace(new=True))
            except SetupFailed as exc:
                log.warning("no spare pod holder: %s", exc)
        self._prepare_init()

    def _prepare_init(self) -> None:
        if self._spare_init is not None:
            return
        try:
            self._spare_init = self._launcher.fork(run_spare_init, PidNamespace(new=True))
        except SetupFailed as exc:
            log.warning("no spare init: %s", exc)

    def _take_spare_init(self, pid_ns: PidNamespace, spec: ContainerSpec
                         ) -> tuple[int, asyncio.Future, StatusChannel] | None:
        """The spare init, for a container in a new pid namespace (the spare is pid 1 of one) whose capabilities it
        still has (child_main.spare_fits)."""
        spare = self._spare_init
        if spare is not None and spare[1].done():
            spare[2].close()                # it died: forget it
            spare = self._spare_init = None
        if spare is None or not pid_ns.new or not spare_fits(spec.process):
            return None
        self._spare_init = None
        return spare

    def _hand_plan(self, spare: tuple[int, asyncio.Future, StatusChannel], plan: InitPlan) -> bool:
        """Send the spare init its plan; False (fork instead) if the plan is too big for a message (the spare is
        kept) or the spare is gone."""
        message, fds = encode_plan(plan)
        try:
            spare[2].send(message, "container setup", fds)
            return True
        except OSError as exc:      # EMSGSIZE
            log.info("a plan of %d bytes does not fit the spare init's socket (%s): forking", len(message), exc)
            self._spare_init = spare
        except SetupFailed:
            spare[2].close()
        return False

    def _take_spare(self, joins: list, new_flags: int, pid_ns: PidNamespace
                    ) -> tuple[int, asyncio.Future, StatusChannel] | None:
        """The spare holder when it holds exactly the namespaces asked for (and still lives)."""
        spare = self._spare
        if spare is not None and spare[1].done():
            spare[2].close()                # it died: forget it
            spare = self._spare = None
        if spare is None or joins or new_flags != SPARE_HOLDER_NAMESPACES or not pid_ns.new:
            return None
        self._spare = None
        return spare

    async def _create_holder(self, container_id: str, spec: ContainerSpec, stdio: StdioConfig) -> Container:
        """A CRI pod's sandbox container: the pod's namespaces held by a waiting child, nothing else (holder.py)."""
        # The holder mounts nothing and has no cgroup of its own.
        held = tuple(n for n in spec.namespaces if n.type not in ("mount", "cgroup"))
        opened: list[int] = []
        try:
            joins, new_flags, pid_ns = _namespace_plan(held, opened)
            pipes = PipeSet(stdio)
            spare = self._take_spare(joins, new_flags, pid_ns)
            if spare is not None:
                pid, exit_future, channel = spare
                log.debug("container %s: the spare holder (pid %d) holds the pod", container_id, pid)
                # A new UTS namespace starts with a copy of the hostname of the moment: the spare's is the template's
                # (unset), the pod's holder must start with the VM's, as a forked one does.
                hostname = spec.hostname or os.uname().nodename
                try:
                    channel.send(HOLD + hostname.encode(), "pod holder")
                except BaseException:
                    pipes.close()
                    channel.close()
                    _kill(pid)
                    raise
            else:
                plan = HolderPlan(spec.hostname, tuple(joins), new_flags, tuple(pipes.child_fds))
                pid, exit_future, channel = self._launcher.fork(lambda sock: run_holder(sock, plan), pid_ns)
            pipes.close_child_ends()
            try:
                await channel.expect_ready()
            except BaseException:
                channel.close()
                _kill(pid)
                await asyncio.shield(exit_future)
                pipes.close()
                raise
        finally:
            for fd in opened:
                os.close(fd)
        init = Process(container_id, "", pid, exit_future, pipes.process_io(None))
        ns_names = tuple(ns.BY_OCI_TYPE[n.type][1] for n in held)
        return Container(container_id, spec, PreparedRootfs("/", True, [], None), None, init, channel, ns_names)

    async def start(self, container_id: str) -> int:
        container = self.get(container_id)
        if container.state is not ContainerState.CREATED or container.channel is None:
            raise FailedPrecondition(f"container {container_id} is {container.state}, not created")
        channel, container.channel = container.channel, None
        container.started = True
        spans.reset("request")
        try:
            channel.send_start()
            await channel.expect_exec()
        finally:
            channel.close()
        spans.mark("exec")
        spans.dump(f"start {container_id}")
        if container.spec.pod_holder:
            self.pod_started()
        return container.init.pid

    async def exec(self, container_id: str, exec_id: str, process_json: bytes, stdio: StdioConfig) -> int:
        container = self.get(container_id)
        if not exec_id:
            raise InvalidArgument("exec_id", "must not be empty (it names the exec)")
        await self.before_container()
        check_id(exec_id, "exec_id")
        process = parse_process_document(process_json)
        container.reserve_exec(exec_id)
        try:
            proc = await self._exec(container, exec_id, process, stdio)
        finally:
            container.reserved_exec_ids.discard(exec_id)
        container.execs[exec_id] = proc
        return proc.pid

    async def _exec(self, container: Container, exec_id: str, process, stdio: StdioConfig) -> Process:
        init_pid = container.init.pid
        opened: list[int] = []
        pipes = None
        try:
            joins, pid_ns = [], PidNamespace()
            # Mount last: the other namespace files are found through the agent's /proc.
            for name in sorted(container.ns_names, key=lambda n: n == "mnt"):
                fd = _open_namespace(f"/proc/{init_pid}/ns/{name}", "container_id", missing_is_stopped=True)
                opened.append(fd)
                flag = next(f for f, n in ns.BY_OCI_TYPE.values() if n == name)
                if name == "pid":
                    pid_ns = PidNamespace(join_fd=fd)
                else:
                    joins.append((flag, fd))
            root_fd = os.open(f"/proc/{init_pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            opened.append(root_fd)
            pipes = PipeSet(stdio)
            cgroup = container.cgroup
            plan = ExecPlan(process=process, cgroup_procs=cgroup.procs_path if cgroup is not None else None,
                            joins=tuple(joins), root_fd=root_fd,
                            stdio=ChildStdio(tuple(pipes.child_fds), stdio.terminal, process.console_size),
                            seccomp=container.seccomp_filter)
            pid, exit_future, channel = self._launcher.fork(lambda sock: run_exec(sock, plan), pid_ns)
            pipes.close_child_ends()
            try:
                master = await channel.expect_ready()
                await channel.expect_exec()
            except BaseException:
                _kill(pid)
                await asyncio.shield(exit_future)
                raise
            finally:
                channel.close()
            return Process(container.id, exec_id, pid, exit_future, pipes.process_io(master))
        except BaseException:
            if pipes is not None:
                pipes.close()
            raise
        finally:
            for fd in opened:
                os.close(fd)

    async def remove(self, container_id: str, force: bool) -> None:
        container = self.get(container_id)
        if container.state is ContainerState.RUNNING and not force:
            raise FailedPrecondition(f"container {container_id} is running; kill it first or remove with force")
        container.kill_all(signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(container.init.exit), REMOVE_TIMEOUT)
        except asyncio.TimeoutError:
            raise SetupFailed("remove", f"init of {container_id} did not exit after SIGKILL") from None
        del self._containers[container_id]
        if container.channel is not None:
            container.channel.close()
        for process in (container.init, *container.execs.values()):
            process.io.close()
        self._oom.unwatch(container_id)
        if container.cgroup is not None:
            await container.cgroup.remove()
        container.rootfs.cleanup()
        shutil.rmtree(self._files_dir(container_id), ignore_errors=True)
        if self.keep_spares or container.spec.warm_up:     # a spare VM's warm-up took them: the pod's turn next
            self._cgroups.prepare_spare()
            self._prepare_init()

    def _files_dir(self, container_id: str) -> str:
        return os.path.join(self._state_dir, "files", container_id)

    async def remove_all(self) -> None:
        for container_id in list(self._containers):
            await self.remove(container_id, force=True)

    async def close_spares(self) -> None:
        """The agent is going away: its spare holder and init with it."""
        for spare in (self._spare, self._spare_init):
            if spare is not None:
                spare[2].close()
                _kill(spare[0])
                await asyncio.shield(spare[1])
        self._spare = self._spare_init = None

    # ---- processes ---------------------------------------------------------------------------

    def signal(self, container_id: str, exec_id: str, signum: int, all_processes: bool) -> None:
        if not 1 <= signum <= 64:
            raise InvalidArgument("signal", f"not a signal number: {signum}")
        container = self.get(container_id)
        if all_processes:
            if container.init.exited:
                raise FailedPrecondition(f"container {container_id} has stopped")
            container.kill_all(signum)
            return
        container.process(exec_id).signal(signum)

    def remove_process(self, container_id: str, exec_id: str) -> None:
        container = self.get(container_id)
        if not exec_id:
            raise InvalidArgument("exec_id", "must name an exec (the init goes with RemoveContainer)")
        process = container.process(exec_id)
        if not process.exited:
            raise FailedPrecondition(f"exec {exec_id} of {container_id} is running")
        process.io.close()
        del container.execs[exec_id]

    async def wait(self, container_id: str, exec_id: str) -> ExitInfo:
        return await self.get(container_id).process(exec_id).wait()

    def process(self, container_id: str, exec_id: str) -> Process:
        return self.get(container_id).process(exec_id)

    # ---- resources ---------------------------------------------------------------------------

    def update(self, container_id: str, resources_json: bytes) -> None:
        container = self.get(container_id)
        resources = parse_resources_document(resources_json)
        if container.cgroup is None:
            raise FailedPrecondition(f"this agent runs without cgroups ({self._cgroups.describe()})")
        container.cgroup.apply(resources, field="resources_json")
        if resources.devices:
            container.cgroup.restrict_devices(resources.devices, field="resources_json.devices")

    def stats(self, container_id: str) -> ContainerStats:
        container = self.get(container_id)
        return container.cgroup.stats() if container.cgroup is not None else ContainerStats()

    def pids(self, container_id: str) -> list[int]:
        return self.get(container_id).pids()


def _namespace_plan(namespaces, opened: list[int]) -> tuple[list[tuple[int, int]], int, PidNamespace]:
    """(namespaces to join as (flag, fd), CLONE_NEW* flags to unshare, where the pid lives) for a child; the fds
    it opens are appended to `opened` for the caller to close once the child forked."""
    joins, new_flags, pid_ns = [], 0, PidNamespace()
    for namespace in namespaces:
        flag, _ = ns.BY_OCI_TYPE[namespace.type]
        if namespace.path is None:
            if namespace.type == "pid":
                pid_ns = PidNamespace(new=True)
            else:
                new_flags |= flag
            continue
        fd = _open_namespace(namespace.path, f"{namespace.field}.path")
        opened.append(fd)
        if namespace.type == "pid":
            pid_ns = PidNamespace(join_fd=fd)
        else:
            joins.append((flag, fd))
    return joins, new_flags, pid_ns


def _open_namespace(path: str, field: str, missing_is_stopped: bool = False) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if missing_is_stopped:
            raise FailedPrecondition("the container's init has exited") from None
        raise InvalidArgument(field, f"{path}: {exc.strerror}") from None


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
