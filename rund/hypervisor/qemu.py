"""QemuVM: one qemu-system-x86_64 process driven over QMP, and nothing left behind when it ends.

Lifecycle: the driver listens on <runtime_dir>/qmp.sock, execs QEMU (which connects to it as
a client, so there is no polling for a socket to appear), negotiates QMP, then unlinks the
listening path. A reaper task owned by the VM waits for the process to exit (pidfd), closes
QMP, and removes the runtime dir; wait() returns only after that, on every path: a clean stop,
a failed start, or a QEMU that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import EventListener, ExecInterruptedError, ExecuteError, QMPClient, QMPError

from rund.hypervisor import memory, migration
from rund.hypervisor.argv import HOTPLUG_MEMORY_DEVICE, build_argv, disk_port, hotplug_port
from rund.hypervisor.base import VirtualMachine
from rund.hypervisor.errors import (
    HypervisorError,
    MemoryResizeError,
    QMPCommandError,
    QMPConnectionLost,
    VMDied,
    VMNotRunning,
    VMStartError,
    VMTimeout,
)
from rund.hypervisor.logtail import log_tail
from rund.hypervisor.pmem import check_pmem_images, mapped_size
from rund.hypervisor.process import AdoptedProcess, ExitWatch, PreExec, spawn
from rund.hypervisor.spec import PmemSlot, VMSpec, VsockChannel

log = logging.getLogger(__name__)

QEMU_BINARY = "qemu-system-x86_64"
_T = TypeVar("_T")


class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"  # the process is up and QMP is negotiated (the guest may be paused)
    STOPPING = "stopping"
    ENDED = "ended"


class QemuVM(VirtualMachine):
    def __init__(self, spec: VMSpec, qemu_binary: str | Path = QEMU_BINARY, *,
                 start_timeout: float = 30.0, command_timeout: float = 30.0,
                 migration_timeout: float = 60.0, die_with_owner: bool = True) -> None:
        self.spec = spec
        self._die_with_owner = die_with_owner   # False: a spare VM, handed over to another process later
        self._binary = qemu_binary
        self._start_timeout = start_timeout
        self._command_timeout = command_timeout
        self._migration_timeout = migration_timeout
        self._state = _State.NEW
        self._popen: subprocess.Popen[bytes] | AdoptedProcess | None = None
        self._watch: ExitWatch | None = None
        self._reaper: asyncio.Task[int] | None = None
        self._qmp: QMPClient | None = None
        self._log_fd: int | None = None
        self._log_start = 0
        self._owns_runtime_dir = False
        self._stop_requested = False  # distinguishes a stop or kill we asked for from a crash

    # ---- observers -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def returncode(self) -> int | None:
        """QEMU's exit status once it has been reaped (negative: killed by that signal)."""
        if self._watch is None or not self._watch.exited.done():
            return None
        return self._watch.exited.result()

    def log_tail(self) -> str:
        """What QEMU wrote to its log since this VM started."""
        return log_tail(self.spec.qemu_log, self._log_start)

    # ---- start -----------------------------------------------------------------------------

    async def start(self, pre_exec: PreExec | None = None) -> None:
        """Exec QEMU and return once QMP is negotiated (the machine is built, the guest not yet run long).

        pre_exec runs in the child between fork and exec, e.g. to join the sandbox cgroup.
        Call this from the event loop's thread: the child dies with the thread that forked it.
        """
        if self._state is not _State.NEW:
            raise HypervisorError(f"start() on a VM that is {self._state.value}")
        self._state = _State.STARTING
        try:
            check_pmem_images(self.spec.pmem)
            argv = build_argv(self.spec, self._binary)
            if self.spec.share is not None:   # QEMU refuses an export that does not exist (empty until used)
                self.spec.share.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.spec.runtime_dir.mkdir(mode=0o700, parents=True)
        except FileExistsError as exc:
            self._state = _State.ENDED
            raise VMStartError(f"runtime dir {self.spec.runtime_dir} already exists") from exc
        except BaseException:
            self._state = _State.ENDED
            raise
        self._owns_runtime_dir = True
        try:
            await self._launch(argv, pre_exec)
        except BaseException as exc:
            await self._abort_start()
            if not isinstance(exc, Exception):
                raise
            raise VMStartError(self._start_failure(exc), self.log_tail(), self.returncode) from exc
        self._state = _State.RUNNING

    async def _launch(self, argv: list[str], pre_exec: PreExec | None) -> None:
        loop = asyncio.get_running_loop()
        self._log_fd = os.open(self.spec.qemu_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._log_start = os.lseek(self._log_fd, 0, os.SEEK_END)
        self._qmp = QMPClient(self.spec.name)
        await self._qmp.start_server(str(self.spec.qmp_socket))
        log.debug("exec %s", " ".join(argv))
        self._popen = spawn(argv, log_fd=self._log_fd, pass_fds=self._pass_fds(), pre_exec=pre_exec,
                            die_with_owner=self._die_with_owner)
        self._watch = ExitWatch(self._popen, loop)
        self._reaper = loop.create_task(self._reap(), name=f"qemu-reaper-{self.spec.name}")
        await self._until_exit(self._qmp.accept(), timeout=self._start_timeout)
        # QEMU is connected and never reconnects: the listening path has no further use.
        self.spec.qmp_socket.unlink()

    # ---- hand-over (spare VMs: rund/runtime/spares.py) -----------------------------------------

    async def hand_over(self) -> int:
        """Give this running VM to another process: returns a duplicate of the QMP connection's fd (send it with
        SCM_RIGHTS; the receiver calls adopt()). This object lets go without touching QEMU, its files or its
        connection; it stays QEMU's parent, and must reap it (waitpid) once it exits."""
        self._require_running()
        assert self._qmp is not None and self._watch is not None and self._reaper is not None
        sock = self._qmp_socket()
        fd = os.dup(sock.fileno())
        self._state = _State.ENDED
        self._owns_runtime_dir = False
        self._watch.close()
        self._reaper.cancel()
        qmp, self._qmp = self._qmp, None
        with contextlib.suppress(Exception):     # closes this fd only: the duplicate keeps the connection
            await qmp.disconnect()
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        return fd

    def _qmp_socket(self) -> socket.socket:
        writer = getattr(self._qmp, "_writer", None)
        sock = writer.get_extra_info("socket") if writer is not None else None
        if sock is None:
            raise HypervisorError(f"VM {self.spec.name}: its QMP connection has no socket to hand over")
        return sock

    @classmethod
    async def adopt(cls, spec: VMSpec, pid: int, qmp_fd: int, qemu_binary: str | Path = QEMU_BINARY
                    ) -> "QemuVM":
        """Take over a running VM another process handed over (hand_over): its QMP connection, its process (by
        pidfd: not our child, see AdoptedProcess) and its runtime dir, from here on this object's."""
        sock = socket.socket(fileno=qmp_fd)     # owns the fd from here: closed on any failure
        vm = cls(spec, qemu_binary)
        vm._state = _State.STARTING
        loop = asyncio.get_running_loop()
        try:
            vm._popen = AdoptedProcess(pid)
        except ProcessLookupError:
            sock.close()
            vm._state = _State.ENDED
            raise VMStartError(f"spare VM {spec.name} (pid {pid}) is gone", "", None) from None
        vm._log_start = os.path.getsize(spec.qemu_log) if spec.qemu_log.exists() else 0
        vm._watch = ExitWatch(vm._popen, loop)
        vm._reaper = loop.create_task(vm._reap(), name=f"qemu-reaper-{spec.name}")
        vm._owns_runtime_dir = True
        qmp = QMPClient(spec.name)
        qmp.await_greeting = False      # the keeper's connection: negotiated already
        qmp.negotiate = False
        vm._qmp = qmp
        try:
            await vm._until_exit(qmp.connect(sock), timeout=vm._start_timeout)
        except BaseException as exc:
            sock.close()
            await vm._abort_start()
            if not isinstance(exc, Exception):
                raise
            raise VMStartError(vm._start_failure(exc), vm.log_tail(), vm.returncode) from exc
        vm._state = _State.RUNNING
        return vm

    def _pass_fds(self) -> list[int]:
        fds = []
        if isinstance(self.spec.agent, VsockChannel) and self.spec.agent.vhost_fd is not None:
            fds.append(self.spec.agent.vhost_fd)
        if self.spec.net is not None and self.spec.net.tap_fd is not None:
            fds.append(self.spec.net.tap_fd)
        return fds

    def _start_failure(self, exc: Exception) -> str:
        if isinstance(exc, VMDied):
            return f"QEMU exited during start (returncode {exc.returncode})"
        if isinstance(exc, VMTimeout):
            return f"QEMU did not answer QMP within {self._start_timeout} s"
        return f"QEMU start failed: {exc!r}"

    async def _abort_start(self) -> None:
        if self._popen is not None and self._reaper is not None:
            self._signal(signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._reaper)
        else:
            await self._cleanup()

    # ---- exit and cleanup ------------------------------------------------------------------

    async def _reap(self) -> int:
        assert self._watch is not None
        returncode = await self._watch.exited
        if self._state is _State.RUNNING and not self._stop_requested:
            # 0 is the guest powering off (-no-reboot turns a guest reboot or panic into an exit too).
            log.log(logging.INFO if returncode == 0 else logging.WARNING,
                    "QEMU %s (pid %s) exited on its own: %s", self.spec.name, self.pid, returncode)
        await self._cleanup()
        return returncode

    async def _cleanup(self) -> None:
        """Idempotent; runs once the process is gone (or never existed)."""
        self._state = _State.ENDED
        qmp, self._qmp = self._qmp, None
        if qmp is not None:
            with contextlib.suppress(Exception):  # EOF from the dead peer is the expected outcome
                await qmp.disconnect()
        if self._owns_runtime_dir:
            self._owns_runtime_dir = False
            shutil.rmtree(self.spec.runtime_dir, onerror=_log_rmtree_error)
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None

    async def wait(self) -> int:
        """QEMU's return code, once the process is reaped and its sockets and runtime dir are gone."""
        if self._reaper is None:
            raise VMNotRunning(f"VM {self.spec.name} was never started")
        return await asyncio.shield(self._reaper)

    def kill(self) -> None:
        """SIGKILL now; wait() reports the exit."""
        self._stop_requested = True
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        # Popen.send_signal skips a process it has already reaped, so a recycled pid is never hit.
        if self._popen is not None:
            self._popen.send_signal(signum)

    async def _exited_within(self, timeout: float) -> bool:
        assert self._watch is not None
        await asyncio.wait([self._watch.exited], timeout=timeout)
        return self._watch.exited.done()

    async def stop(self, timeout: float = 5.0, powerdown: bool = False) -> int:
        """End QEMU: [ACPI powerdown,] QMP quit, SIGTERM, SIGKILL, each given `timeout` seconds.

        powerdown=True first asks the guest to power off (needs a guest that handles the ACPI button).
        Returns QEMU's return code after everything is cleaned up.
        """
        if self._reaper is None:
            raise VMNotRunning(f"VM {self.spec.name} was never started")
        self._stop_requested = True
        if self._state is _State.RUNNING:
            self._state = _State.STOPPING
            if powerdown and await self._try("system_powerdown", timeout) and await self._exited_within(timeout):
                return await self.wait()
            if await self._try("quit", timeout) and await self._exited_within(timeout):
                return await self.wait()
            self._signal(signal.SIGTERM)
            if not await self._exited_within(timeout):
                log.warning("QEMU %s ignored SIGTERM for %s s; killing it", self.spec.name, timeout)
                self._signal(signal.SIGKILL)
        return await self.wait()

    async def _try(self, command: str, timeout: float) -> bool:
        """Send a command whose effect is the process ending; False if the channel is unusable."""
        if self.returncode is not None:
            return True
        try:
            await self._execute(command, allow_stopping=True, timeout=timeout)
        except VMDied:
            return True  # it went down while answering: the effect we asked for
        except HypervisorError as exc:
            log.info("QMP %s to %s failed: %s", command, self.spec.name, exc)
            return False
        return True

    # ---- QMP -------------------------------------------------------------------------------

    async def _until_exit(self, aw: Awaitable[_T], timeout: float | None = None) -> _T:
        """Await `aw` unless QEMU exits first (VMDied) or the timeout passes (VMTimeout)."""
        assert self._watch is not None
        task = asyncio.ensure_future(aw)
        try:
            done, _ = await asyncio.wait([task, self._watch.exited], timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if task in done and (task.exception() is None or not self._watch.exited.done()):
                return task.result()
            if self._watch.exited.done():
                raise VMDied(self._watch.exited.result(), self.log_tail())
            raise VMTimeout(f"QEMU {self.spec.name}: no answer within {timeout} s")
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def _execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                       allow_stopping: bool = False, timeout: float | None = None) -> Any:
        self._require_running(allow_stopping)
        qmp = self._qmp  # the reaper drops self._qmp as soon as QEMU exits
        assert qmp is not None
        try:
            result = await self._until_exit(qmp.execute(command, arguments), timeout or self._command_timeout)
        except ExecuteError as exc:
            raise QMPCommandError(command, exc.error_class, str(exc)) from exc
        except (ExecInterruptedError, QMPError, EOFError, ConnectionError) as exc:
            # The socket usually breaks a moment before the pidfd reports the exit.
            if await self._exited_within(1.0):
                raise VMDied(self.returncode or 0, self.log_tail()) from exc
            raise QMPConnectionLost(f"QMP {command} to {self.spec.name}: {exc!r}") from exc
        qmp.events.clear()  # nobody reads the default listener; keep it from growing
        return result

    def _require_running(self, allow_stopping: bool = False) -> None:
        if self.returncode is not None:
            if self._stop_requested:
                raise VMNotRunning(f"VM {self.spec.name} was stopped")
            raise VMDied(self.returncode, self.log_tail())
        allowed = (_State.RUNNING, _State.STOPPING) if allow_stopping else (_State.RUNNING,)
        if self._state not in allowed:
            raise VMNotRunning(f"VM {self.spec.name} is {self._state.value}")

    async def query_status(self) -> str:
        """QEMU's run state: 'running', 'paused', 'inmigrate', 'postmigrate', ..."""
        return (await self._execute("query-status"))["status"]

    async def pause(self, timeout: float | None = None) -> None:
        await self._execute("stop", timeout=timeout)

    async def resume(self, timeout: float | None = None) -> None:
        await self._execute("cont", timeout=timeout)

    # ---- devices added while running --------------------------------------------------------

    async def hotplug_pmem(self, index: int, image: Path) -> None:
        """Bind `image` (exactly the slot's size, read-only) to hotplug slot `index` of spec.pmem_hotplug; the device
        maps only what the image holds (pmem.mapped_size)."""
        try:
            slot = self.spec.pmem_hotplug[index]
        except IndexError:
            raise HypervisorError(f"VM {self.spec.name} has no pmem hotplug slot {index}") from None
        check_pmem_images((PmemSlot(Path(image), slot.size, slot.memaddr),))
        backend = f"hotplug-mem{index}"
        await self._execute("object-add", {"qom-type": "memory-backend-file", "id": backend, "mem-path": str(image),
                                           "size": mapped_size(Path(image), slot.size), "share": True,
                                           "readonly": True})
        try:
            await self._execute("device_add", {"driver": "virtio-pmem-pci", "id": f"hotplug-pmem{index}",
                                               "memdev": backend, "bus": hotplug_port(index),
                                               "memaddr": slot.memaddr})
        except BaseException:
            with contextlib.suppress(HypervisorError):
                await self._execute("object-del", {"id": backend})
            raise

    async def hotplug_disk(self, index: int, path: Path, serial: str, readonly: bool) -> None:
        """Add the host block device `path` as a virtio-blk disk in disk slot `index`; the guest finds it by
        `serial` (/sys/block/vd*/serial)."""
        if not 0 <= index < self.spec.disk_hotplug_slots:
            raise HypervisorError(f"VM {self.spec.name} has no disk hotplug slot {index}")
        node = f"hotdisk{index}"
        await self._execute("blockdev-add", {"node-name": node, "driver": "raw", "read-only": readonly,
                                             "file": {"driver": "host_device", "filename": str(path),
                                                      "aio": "threads", "cache": {"direct": True}}})
        try:
            await self._execute("device_add", {"driver": "virtio-blk-pci", "id": f"{node}dev", "drive": node,
                                               "bus": disk_port(index), "serial": serial})
        except BaseException:
            with contextlib.suppress(HypervisorError):
                await self._execute("blockdev-del", {"node-name": node})
            raise

    async def unplug_disk(self, index: int, timeout: float = 10.0) -> None:
        """Ask the guest to release disk slot `index` (PCIe unplug), then drop its backend; the slot is free once
        this returns. A guest that does not let go within `timeout` keeps the device: HypervisorError."""
        node = f"hotdisk{index}"
        with self.events("DEVICE_DELETED") as listener:
            await self._execute("device_del", {"id": f"{node}dev"})
            try:
                await self._until_exit(_device_deleted(listener, f"{node}dev"), timeout)
            except VMTimeout:
                raise HypervisorError(f"VM {self.spec.name}: the guest did not release disk {index} within "
                                      f"{timeout} s") from None
        await self._execute("blockdev-del", {"node-name": node})

    async def resize_memory(self, hotplug_bytes: int, timeout: float = 10.0) -> int:
        """Ask the guest to hold `hotplug_bytes` of its hotplug memory (spec.memory_hotplug) on top of its boot
        memory; returns what it holds when it matches or `timeout` passes (see rund.hypervisor.memory)."""
        hot = self.spec.memory_hotplug
        if hot is None:
            raise MemoryResizeError(f"VM {self.spec.name} has no hotplug memory")
        if not 0 <= hotplug_bytes <= hot.size or hotplug_bytes % hot.block_size:
            raise MemoryResizeError(f"hotplug memory of {hotplug_bytes} bytes: must be a multiple of "
                                    f"{hot.block_size} in [0, {hot.size}]")
        return await memory.request(self, HOTPLUG_MEMORY_DEVICE, hotplug_bytes, timeout)

    async def hotplug_memory(self) -> int:
        """The hotplug memory the guest holds now (0 for a VM without any)."""
        if self.spec.memory_hotplug is None:
            return 0
        return await memory.plugged_bytes(self, HOTPLUG_MEMORY_DEVICE)

    # ---- templates ---------------------------------------------------------------------------

    async def save_state(self, path: Path) -> None:
        """Pause the guest and write its device state to `path` (see migration.save_state)."""
        await migration.save_state(self, Path(path), self._migration_timeout)

    async def restore_state(self, path: Path) -> None:
        """Load a saved state into this VM (started with incoming_defer), then run it."""
        if not self.spec.incoming_defer:
            raise HypervisorError(f"VM {self.spec.name} was not started with incoming_defer")
        await migration.restore_state(self, Path(path), self._migration_timeout)

    # The narrow surface rund.hypervisor.migration drives; execute() also serves queries and tests.

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run any QMP command; typed errors (QMPCommandError, VMDied, VMTimeout, ...)."""
        return await self._execute(command, arguments)

    async def until_exit(self, aw: Awaitable[_T], timeout: float | None = None) -> _T:
        return await self._until_exit(aw, timeout)

    @contextlib.contextmanager
    def events(self, *names: str) -> Iterator[EventListener]:
        self._require_running()
        assert self._qmp is not None
        with self._qmp.listener(names) as listener:
            yield listener

    def send_fd(self, fd: int) -> None:
        """Pass `fd` over the QMP socket (SCM_RIGHTS); the next getfd names it."""
        self._require_running()
        assert self._qmp is not None
        self._qmp.send_fd_scm(fd)


async def _device_deleted(listener: EventListener, device_id: str) -> None:
    async for event in listener:
        if event.get("data", {}).get("device") == device_id:
            return


def _log_rmtree_error(function: Any, path: str, exc_info: Any) -> None:
    log.error("cannot remove %s: %s", path, exc_info[1])
