"""One container: its init, execs, cgroup, rootfs, and the namespaces execs join."""
import os
import signal

from ..errors import AlreadyExists, FailedPrecondition, NotFound
from ..linux.seccomp import SeccompFilter
from ..oci.spec import ContainerSpec
from .launcher import StatusChannel
from .process import Process
from .rootfs import PreparedRootfs
from .state import ContainerState


class Container:
    def __init__(self, container_id: str, spec: ContainerSpec, rootfs: PreparedRootfs, cgroup, init: Process,
                 channel: StatusChannel, ns_names: tuple[str, ...], seccomp_filter: SeccompFilter | None = None):
        self.id = container_id
        self.spec = spec
        self.rootfs = rootfs
        self.cgroup = cgroup
        self.init = init
        self.channel: StatusChannel | None = channel  # until the init exec'd
        self.ns_names = ns_names  # /proc/<pid>/ns entries an exec joins
        self.seccomp_filter = seccomp_filter  # execs get it too
        self.execs: dict[str, Process] = {}
        self.reserved_exec_ids: set[str] = set()
        self.started = False

    @property
    def state(self) -> ContainerState:
        if self.init.exited:
            return ContainerState.STOPPED
        return ContainerState.RUNNING if self.started else ContainerState.CREATED

    def process(self, exec_id: str) -> Process:
        if not exec_id:
            return self.init
        try:
            return self.execs[exec_id]
        except KeyError:
            raise NotFound(f"exec {exec_id!r} not found in container {self.id}") from None

    def reserve_exec(self, exec_id: str) -> None:
        if exec_id in self.execs or exec_id in self.reserved_exec_ids:
            raise AlreadyExists(f"exec {exec_id!r} already exists in container {self.id}")
        if self.state is not ContainerState.RUNNING:
            raise FailedPrecondition(f"container {self.id} is {self.state}, not running")
        self.reserved_exec_ids.add(exec_id)

    def pids(self) -> list[int]:
        if self.cgroup is not None:
            return self.cgroup.pids()
        return _pids_in_pid_namespace(self.init.pid)

    def kill_all(self, signum: int = signal.SIGKILL) -> None:
        if signum == signal.SIGKILL and self.cgroup is not None:
            self.cgroup.kill()
        for pid in self.pids():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        if not self.init.exited:
            try:
                os.kill(self.init.pid, signum)
            except ProcessLookupError:
                pass


def _pids_in_pid_namespace(init_pid: int) -> list[int]:
    """Without a cgroup: every process whose pid namespace is the init's."""
    try:
        target = os.readlink(f"/proc/{init_pid}/ns/pid")
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") == target:
                pids.append(int(entry))
        except OSError:
            continue
    return sorted(pids)
