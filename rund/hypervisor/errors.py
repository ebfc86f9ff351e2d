"""Typed errors of the hypervisor layer; callers match on the class, never on the text."""

from __future__ import annotations


class HypervisorError(Exception):
    """Base class of every error raised by rund.hypervisor."""


class InvalidSpec(HypervisorError, ValueError):
    """A VMSpec that QEMU would reject, or accept and then misbehave with (e.g. pmem on microvm)."""


class PmemSlotMismatch(InvalidSpec):
    """A pmem image whose size is not exactly its slot size: QEMU would refuse it or silently truncate it."""


class MemoryResizeError(HypervisorError):
    """The VM has no hotplug memory, or a requested size does not fit its virtio-mem device."""


class VMStartError(HypervisorError):
    """QEMU did not come up to a negotiated QMP session; the message ends with the tail of its log."""

    def __init__(self, message: str, log_tail: str = "", returncode: int | None = None) -> None:
        self.log_tail = log_tail
        self.returncode = returncode
        super().__init__(f"{message}\n--- qemu log tail ---\n{log_tail}" if log_tail else message)


class VMNotRunning(HypervisorError):
    """An operation that needs a live QEMU was called before start() or after the VM was stopped."""


class VMDied(HypervisorError):
    """QEMU exited while the caller expected it to be running."""

    def __init__(self, returncode: int, log_tail: str = "") -> None:
        self.returncode = returncode
        self.log_tail = log_tail
        message = f"QEMU exited unexpectedly (returncode {returncode})"
        super().__init__(f"{message}\n--- qemu log tail ---\n{log_tail}" if log_tail else message)


class QMPCommandError(HypervisorError):
    """QEMU answered a QMP command with an error."""

    def __init__(self, command: str, error_class: str, description: str) -> None:
        self.command = command
        self.error_class = error_class
        self.description = description
        super().__init__(f"QMP {command} failed: {error_class}: {description}")


class MigrationError(HypervisorError):
    """Saving or restoring VM state did not reach the 'completed' migration status."""

    def __init__(self, status: str, description: str = "") -> None:
        self.status = status
        self.description = description
        super().__init__(f"migration ended {status}" + (f": {description}" if description else ""))


class VMTimeout(HypervisorError):
    """QEMU did not reach the expected state in the allotted time."""


class QMPConnectionLost(HypervisorError):
    """The QMP connection broke while QEMU itself kept running."""
