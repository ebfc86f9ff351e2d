"""Template primitives over QMP: save a paused VM's state to a file, load it into a clone.

QEMU reads and writes the state through an fd we pass over the QMP socket (`fd:` URI) rather
than `exec:cat`: with exec the 'completed' event can arrive before cat has flushed the file,
and it spares QEMU a fork of sh and cat per clone. MIGRATION events (capability `events`)
replace polling query-migrate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from qemu.qmp import EventListener

from rund.hypervisor.errors import HypervisorError, MigrationError, QMPCommandError, VMDied, VMTimeout

STATE_FD_NAME = "rund-state"
_T = TypeVar("_T")


class QmpPort(Protocol):
    """What these functions need from a VM (QemuVM provides it)."""

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any: ...

    async def until_exit(self, aw: Awaitable[_T], timeout: float | None = None) -> _T: ...

    def events(self, *names: str) -> AbstractContextManager[EventListener]: ...

    def send_fd(self, fd: int) -> None: ...


async def save_state(vm: QmpPort, path: Path, timeout: float) -> None:
    """Pause the guest and write its device state to `path`; the VM stays paused ('postmigrate').

    RAM in a shared file backend is skipped (x-ignore-shared): the clones map that file. A
    failed save removes the file, which would otherwise be restored as garbage.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        await _set_capabilities(vm)
        await vm.execute("stop")
        await _migrate(vm, "migrate", fd, timeout)
        await _left_finish_migrate(vm, timeout)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    finally:
        os.close(fd)


async def restore_state(vm: QmpPort, path: Path, timeout: float) -> None:
    """Load `path` into a VM started with -incoming defer, then `cont` it.

    On a bad stream QEMU itself exits ("load of migration failed"): MigrationError('failed')
    carries its log tail, and the VM is gone.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise MigrationError("refused", f"cannot open {path}: {exc.strerror}") from exc
    try:
        await _set_capabilities(vm)
        # No self-announce after the load: every clone of a template carries the template's NIC MAC until the agent
        # gives it the pod's, and its RARP announcements would only teach the pod's bridge that shared MAC.
        await vm.execute("migrate-set-parameters", {"announce-rounds": 0})
        await _migrate(vm, "migrate-incoming", fd, timeout)
    finally:
        os.close(fd)
    # The clone arrives in the template's run state, which was paused for the save.
    await vm.execute("cont")


async def _left_finish_migrate(vm: QmpPort, timeout: float) -> None:
    """'completed' comes from the migration thread; the run state moves on to 'postmigrate' a moment later in the
    main loop (seen under load): wait for it, so that the saved VM is settled when save_state returns."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (await vm.execute("query-status"))["status"] == "finish-migrate":
        if asyncio.get_running_loop().time() > deadline:
            raise MigrationError("timeout", "the VM stayed in finish-migrate after the save completed")
        await asyncio.sleep(0.005)


async def _set_capabilities(vm: QmpPort) -> None:
    await vm.execute("migrate-set-capabilities", {"capabilities": [
        {"capability": "x-ignore-shared", "state": True},
        {"capability": "events", "state": True},
    ]})


async def _migrate(vm: QmpPort, command: str, fd: int, timeout: float) -> None:
    with vm.events("MIGRATION") as events:
        vm.send_fd(fd)
        await vm.execute("getfd", {"fdname": STATE_FD_NAME})
        try:
            await vm.execute(command, {"uri": f"fd:{STATE_FD_NAME}"})
            await vm.until_exit(_migration_end(vm, events), timeout)
        except QMPCommandError as exc:
            with contextlib.suppress(HypervisorError):  # do not leave the fd parked in QEMU
                await vm.execute("closefd", {"fdname": STATE_FD_NAME})
            raise MigrationError("refused", exc.description) from exc
        except VMDied as exc:
            raise MigrationError("failed", exc.log_tail) from exc
        except VMTimeout as exc:
            if command == "migrate":  # an incoming load cannot be cancelled; the caller stops that VM
                with contextlib.suppress(HypervisorError):
                    await vm.execute("migrate_cancel")
            raise MigrationError("timeout", f"not completed within {timeout} s") from exc


async def _migration_end(vm: QmpPort, events: EventListener) -> None:
    while True:
        event = await events.get()
        status = event.get("data", {}).get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            info = await vm.execute("query-migrate")
            raise MigrationError(status, info.get("error-desc", ""))
