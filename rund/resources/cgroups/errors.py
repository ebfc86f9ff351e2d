"""Typed errors of the cgroup pool; callers match on the class, never on the message."""

from __future__ import annotations


class CgroupError(Exception):
    """Base of every cgroup pool error."""


class CgroupUnavailable(CgroupError):
    """No usable cgroup hierarchy is mounted (or a required controller is missing)."""


class ControllerMissing(CgroupError):
    """A limit was asked for a controller this hierarchy does not offer."""

    def __init__(self, controller: str) -> None:
        super().__init__(f"controller {controller!r} is not available in this cgroup layout")
        self.controller = controller


class InvalidLimits(CgroupError, ValueError):
    """A limit value is outside what the kernel accepts."""


class InvalidSandboxId(CgroupError, ValueError):
    """A sandbox id cannot be part of a cgroup name."""


class InvalidCgroupPath(CgroupError, ValueError):
    """A cgroup path (an OCI linux.cgroupsPath) that does not name a cgroup below a hierarchy's root."""


class LimitRejected(CgroupError):
    """The kernel refused to write a limit (e.g. a memory limit below current usage)."""

    def __init__(self, path: str, value: str, errno: int | None) -> None:
        super().__init__(f"kernel refused {value!r} for {path} (errno {errno})")
        self.path = path
        self.value = value
        self.errno = errno


class CgroupBusy(CgroupError):
    """Processes in a cgroup did not go away in time, so it cannot go back to the pool."""


class LeaseNotHeld(CgroupError):
    """The lease is not (or no longer) held by this pool."""
