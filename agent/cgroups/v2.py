"""Per-container cgroup v2 groups under one parent (the guest's /sys/fs/cgroup/rund)."""
import asyncio
import errno
import logging
import os
import signal

from ..container.types import ContainerStats
from ..errors import InvalidArgument, SetupFailed
from ..linux import bpf
from ..oci.resources import DeviceRule, Resources
from . import device_programs
from . import stats as stat_files
from .device_filter import LICENSE
from .device_rules import DevicePolicy, effective_policy
from .v2_files import files_for

log = logging.getLogger(__name__)
CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class CgroupV2:
    """One container's group."""

    def __init__(self, path: str):
        self.path = path
        self.procs_path = os.path.join(path, "cgroup.procs")
        self.memory_events_path = os.path.join(path, "memory.events")
        self._device_program: int | None = None  # fd of the attached device program
        self._device_code = b""                   # its instructions: an update to the same rules changes nothing

    def restrict_devices(self, rules: tuple[DeviceRule, ...], field: str = "linux.resources.devices") -> None:
        """Attach the device allowlist (the rules plus runc's defaults) as a BPF program, replacing ours if any:
        the new one is attached before the old one goes, so no moment is unguarded."""
        code = device_programs.code_for(effective_policy(rules, field))
        if code == self._device_code:
            return                 # already attached (an update that leaves the devices as they are)
        self.attach_device_code(code)

    def attach_device_code(self, code: bytes) -> None:
        try:
            prog = device_programs.program_fd(code, LICENSE)
        except OSError as exc:
            raise SetupFailed("device cgroup program", str(exc)) from None
        try:
            dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                bpf.attach_device_program(dir_fd, prog)
                if self._device_program is not None:
                    bpf.detach_device_program(dir_fd, self._device_program)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            os.close(prog)
            raise SetupFailed("attaching the device cgroup program", f"{self.path}: {exc.strerror}") from None
        if self._device_program is not None:
            os.close(self._device_program)
        self._device_program, self._device_code = prog, code

    def apply(self, resources: Resources, field: str = "linux.resources") -> None:
        unified = dict(resources.unified)
        for name, value in files_for(resources):
            path = os.path.join(self.path, name)
            where = f"{field}.unified.{name}" if name in unified else field
            if not os.path.exists(path):  # cgroupfs answers EACCES, not ENOENT, for a missing file
                if name in unified:
                    raise InvalidArgument(where, "no such cgroup file")
                log.warning("cgroup %s: %s is not available here, limit %r not applied", self.path, name, value)
                continue
            try:
                _write(path, value)
            except OSError as exc:
                raise InvalidArgument(where, f"writing {value!r} to {name}: {exc.strerror}") from None

    def pids(self) -> list[int]:
        try:
            return [int(line) for line in _read(self.procs_path).split()]
        except FileNotFoundError:
            return []

    def stats(self) -> ContainerStats:
        files = {}
        for name in stat_files.STAT_FILES:
            try:
                files[name] = _read(os.path.join(self.path, name))
            except OSError:
                pass
        return stat_files.parse(files)

    def kill(self) -> None:
        try:
            _write(os.path.join(self.path, "cgroup.kill"), "1")
            return
        except FileNotFoundError:
            pass  # kernels before 5.14
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close_program(self) -> None:
        if self._device_program is not None:
            os.close(self._device_program)  # the group holds the program while it lives
            self._device_program = None

    async def remove(self, timeout: float = 5.0) -> None:
        """rmdir once the last process has left; exiting tasks leave the group a moment after death."""
        self.close_program()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or loop.time() > deadline:
                    raise SetupFailed("removing cgroup", f"{self.path}: {exc.strerror}") from None
                self.kill()
                await asyncio.sleep(0.01)


KEEPER = ".devices"     # no container id starts with a dot
SPARE = ".spare-"       # a group made ahead of time for the next container (CgroupV2Driver.prepare_spare)


class CgroupV2Driver:
    """Creates container groups under `root`, enabling every available controller on the way.

    An empty group (KEEPER) holds an allow-all device program for the agent's life: the kernel patches its code
    (a static key, text poking) whenever the count of attached device programs goes from 0 to 1, which a clone's
    first container would otherwise pay (~30 ms in a TCG guest), as would every container of a pod that runs them
    one at a time."""

    def __init__(self, root: str):
        self.root = root
        self._keeper: CgroupV2 | None = None
        self._spare: CgroupV2 | None = None
        self._spares_made = 0

    def describe(self) -> str:
        return f"cgroup v2 at {self.root}"

    def setup(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        for group in (os.path.dirname(self.root), self.root):
            self._enable_controllers(group)
        self._keep_device_programs_on()

    def _keep_device_programs_on(self) -> None:
        self._keeper = self._made_ahead(os.path.join(self.root, KEEPER), DevicePolicy(True, ()),
                                        "device program keeper", needs_program=True)

    def prepare_spare(self) -> None:
        """Make the next container's group ahead of time, with the device program of a spec that adds no device
        rules to runc's defaults (CRI's, and most others') attached: creating a group with every controller and
        attaching its program cost a clone's first container ~15-40 ms of guest time. Called at the agent's start
        (a template carries the group to every clone). The group is named SPARE<n>, not after its container: only
        the agent sees the name (a container's cgroup namespace starts at its group)."""
        if self._spare is None:
            self._spares_made += 1
            self._spare = self._made_ahead(os.path.join(self.root, f"{SPARE}{self._spares_made}"),
                                           effective_policy(()), "spare cgroup", needs_program=False)

    @staticmethod
    def _made_ahead(path: str, policy: DevicePolicy, what: str, needs_program: bool) -> "CgroupV2 | None":
        """A group made now at `path` (one left by an agent that died goes first) with `policy`'s program attached;
        None if either fails (without the program: a group the caller `needs_program` for is removed again)."""
        try:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            os.mkdir(path)
        except OSError as exc:
            log.info("no %s at %s: %s", what, path, exc.strerror)
            return None
        group = CgroupV2(path)
        try:
            group.attach_device_code(device_programs.code_for(policy))
        except SetupFailed as exc:
            log.info("no device program on the %s: %s", what, exc)
            if needs_program:
                os.rmdir(path)
                return None
        return group

    def close(self) -> None:
        groups = (self._spare, self._keeper)
        self._spare = self._keeper = None
        for group in groups:
            if group is None:
                continue
            group.close_program()
            try:
                os.rmdir(group.path)
            except OSError as exc:
                log.warning("removing %s: %s", group.path, exc.strerror)

    @staticmethod
    def _enable_controllers(group: str) -> None:
        try:
            available = _read(os.path.join(group, "cgroup.controllers")).split()
        except OSError:
            return
        for controller in CONTROLLERS:
            if controller not in available:
                continue
            try:
                _write(os.path.join(group, "cgroup.subtree_control"), f"+{controller}")
            except OSError as exc:
                log.warning("cannot enable %s in %s: %s", controller, group, exc.strerror)

    def create(self, container_id: str) -> CgroupV2:
        spare, self._spare = self._spare, None
        if spare is not None:
            if os.path.isdir(spare.path):
                return spare
            spare.close_program()
        path = os.path.join(self.root, container_id)
        try:
            os.mkdir(path)
        except FileExistsError:
            try:
                os.rmdir(path)  # left over by an agent that died; only empty groups can go
                os.mkdir(path)
            except OSError as exc:
                raise SetupFailed("creating cgroup", f"{path}: {exc.strerror}") from None
        except OSError as exc:
            raise SetupFailed("creating cgroup", f"{path}: {exc.strerror}") from None
        return CgroupV2(path)


class NoCgroups:
    """Host mode on a machine whose cgroup v2 tree has no controllers: containers run without a group."""

    def describe(self) -> str:
        return "no cgroups (limits, stats and OOM events are not available)"

    def setup(self) -> None:
        log.warning("running without per-container cgroups")

    def prepare_spare(self) -> None:
        pass

    def close(self) -> None:
        pass

    def create(self, container_id: str) -> None:
        return None
