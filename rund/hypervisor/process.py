"""Start the QEMU process and learn of its exit without a thread or a polling loop.

The child runs these between fork and exec: the caller's hook (the cgroup pool puts the
child into the sandbox cgroup there, before QEMU touches guest memory), PR_SET_THP_DISABLE
(~2 MiB less private memory per idle clone, measured; inherited across exec, host setting
untouched), PR_SET_MEMORY_MERGE taken back when the owner had it (a shim with [shim] merge_memory:
the flag is inherited over fork and kept across exec; QEMU offers only guest RAM to KSM, its own
heap, libraries and TCG buffer are not worth ksmd's time, README Density), and PR_SET_PDEATHSIG so a
QEMU never outlives the process that owns it.

QEMU's environment is the owner's plus QEMU_ENV (allocator settings; a value already set in the owner's
environment wins, so an operator can take one back).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence

PR_SET_PDEATHSIG = 1
PR_SET_THP_DISABLE = 41
PR_SET_MEMORY_MERGE = 67
PR_GET_MEMORY_MERGE = 68

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int

PreExec = Callable[[], None]

# QEMU's allocators, ~1.4 MiB less private memory per clone (README Density, "QEMU's own memory"), no slower:
# MALLOC_ARENA_MAX=1: one glibc arena for all of QEMU's threads; the vCPU thread's arena (TCG's lookup structures)
#   otherwise holds its own free space next to the main arena's (-0.5 MiB).
# G_SLICE=always-malloc: GLib's slice allocator (before GLib 2.76, which dropped it) keeps per-thread magazines and
#   slabs; TCG puts a GTree node per translated block there (-1.1 MiB). Ignored by GLib >= 2.76.
QEMU_ENV = {"MALLOC_ARENA_MAX": "1", "G_SLICE": "always-malloc"}


def qemu_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment QEMU is started with: `base` (the owner's environment by default) plus QEMU_ENV's defaults."""
    env = dict(os.environ if base is None else base)
    for key, value in QEMU_ENV.items():
        env.setdefault(key, value)
    return env


def set_memory_merge(on: bool = True) -> None:
    """Make every private mapping of this process, and of what it forks, mergeable by KSM (and of what it execs:
    Linux >= 6.7). No privilege needed. on=False: take it back (unmerges what was merged)."""
    if _prctl(PR_SET_MEMORY_MERGE, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MEMORY_MERGE) (needs Linux >= 6.4 with KSM)")


def _child_setup(pre_exec: PreExec | None, parent_pid: int, die_with_owner: bool) -> Callable[[], None]:
    def setup() -> None:
        if pre_exec is not None:
            pre_exec()
        if _prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_THP_DISABLE)")
        if _prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0) == 1:   # inherited: a shim with [shim] merge_memory
            set_memory_merge(False)
        if not die_with_owner:
            return
        # The death signal fires when the forking *thread* exits: spawn from the event loop thread.
        if _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != parent_pid:  # the owner died before the death signal was armed
            os._exit(1)

    return setup


def spawn(argv: Sequence[str], *, log_fd: int, pass_fds: Sequence[int] = (),
          pre_exec: PreExec | None = None, die_with_owner: bool = True) -> subprocess.Popen[bytes]:
    """Popen with stdin from /dev/null and stdout+stderr into log_fd, in its own session, environment from
    qemu_environment(). die_with_owner=False: no death signal, for a VM another process will own (a spare VM,
    rund/templates/spares.py), which must outlive the process that started it."""
    return subprocess.Popen(
        list(argv),
        env=qemu_environment(),
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=log_fd,
        pass_fds=tuple(pass_fds),
        close_fds=True,
        start_new_session=True,  # a ^C to the owner's group must not reach QEMU directly
        preexec_fn=_child_setup(pre_exec, os.getpid(), die_with_owner),
    )


class AdoptedProcess:
    """A running process this one did not start (a spare VM's QEMU, handed over by its keeper), with the parts of
    Popen that QemuVM and ExitWatch use. Signals go through a pidfd, so a recycled pid is never hit. Its exit
    status is its parent's to read: wait() reports ADOPTED_EXIT once it is gone."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._pidfd: int | None = os.pidfd_open(pid)     # ProcessLookupError: already gone
        self.returncode: int | None = None

    def send_signal(self, signum: int) -> None:
        if self._pidfd is not None and self.returncode is None:
            try:
                signal.pidfd_send_signal(self._pidfd, signum)
            except ProcessLookupError:
                pass

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = ADOPTED_EXIT
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        return self.returncode


ADOPTED_EXIT = 255  # what an adopted QEMU's exit reads as (its parent reaps it): a lost VM, as for its containers


class ExitWatch:
    """Resolves `exited` with the return code once the process ends and has been reaped.

    A pidfd becomes readable when the process exits; the loop calls back, no task or thread is involved.
    """

    def __init__(self, popen: subprocess.Popen[bytes] | AdoptedProcess, loop: asyncio.AbstractEventLoop) -> None:
        self._popen = popen
        self._loop = loop
        self.exited: asyncio.Future[int] = loop.create_future()
        self._pidfd: int | None = os.pidfd_open(popen.pid)
        loop.add_reader(self._pidfd, self._on_readable)

    def _on_readable(self) -> None:
        self._close_pidfd()
        returncode = self._popen.wait()
        if not self.exited.done():
            self.exited.set_result(returncode)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def close(self) -> None:
        """Stop watching (only for a process already reaped some other way)."""
        self._close_pidfd()
