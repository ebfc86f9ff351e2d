"""The pod holder: what a CRI pod's sandbox container becomes in the guest.

Under runc the sandbox container runs the pause image's /pause to hold the pod's IPC, UTS (and, shared, PID)
namespaces, and to reap orphans as PID 1. In the VM the agent does that itself: a forked child that unshares the
pod's namespaces, sets the hostname, and then only waits, as pause does (SIGTERM or SIGINT: exit 0; SIGCHLD: reap).
No rootfs is mounted, no cgroup made, no program exec'd: the pod's start skips all of a container's setup.

A spare holder is forked ahead of time (run_spare_holder, at the agent's start: a template carries it to every
clone) with the namespaces a CRI pod's sandbox asks for; it waits for HOLD + the pod's hostname, and from there on
goes the way of a holder forked for the pod.
"""
import os
import _signal
import signal
import socket
from typing import NamedTuple

from ..linux import namespaces as ns
from ..linux.prctl import PR_SET_PDEATHSIG, prctl
from ..linux.system import sethostname
from . import status
from .child_main import close_fds_but, enter_namespaces, guarded, start_clean

HOLD = b"hold"


class HolderPlan(NamedTuple):
    hostname: str
    joins: tuple[tuple[int, int], ...]  # (CLONE_NEW* flag, fd) of namespaces to join, pid excluded
    new_namespaces: int                  # CLONE_NEW* flags to unshare, pid excluded (the launcher forks into it)
    stdio_fds: tuple[int, ...]           # closed: the holder writes nothing


def run_holder(sock: socket.socket, plan: HolderPlan) -> None:
    guarded(sock, lambda: _holder(sock, plan))


def run_spare_holder(sock: socket.socket, plan: HolderPlan) -> None:
    guarded(sock, lambda: _spare(sock, plan))


def _holder(sock: socket.socket, plan: HolderPlan) -> None:
    start_clean()
    enter_namespaces(plan.joins, plan.new_namespaces)
    _hold_for_pod(sock, plan, plan.hostname)


def _spare(sock: socket.socket, plan: HolderPlan) -> None:
    start_clean()
    close_fds_but(sock.fileno())
    enter_namespaces(plan.joins, plan.new_namespaces)
    message = sock.recv(4096)
    if not message.startswith(HOLD):
        os._exit(0)     # the agent let the spare go (or went away)
    _hold_for_pod(sock, plan, message[len(HOLD):].decode())


def _hold_for_pod(sock: socket.socket, plan: HolderPlan, hostname: str) -> None:
    if hostname and plan.new_namespaces & ns.CLONE_NEWUTS:
        sethostname(hostname)
    for fd in plan.stdio_fds:
        os.close(fd)
    sock.send(status.READY)
    if sock.recv(16) != status.START:
        os._exit(1)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    sock.close()                    # what an exec would do: the agent sees the start completed
    _hold()


def _hold() -> None:
    def down(signum, frame):
        os._exit(0)

    def reap(signum, frame):
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass

    # _signal, not signal: the enum wrappers would copy-on-write pages of the agent's heap for nothing.
    _signal.signal(_signal.SIGTERM, down)
    _signal.signal(_signal.SIGINT, down)
    _signal.signal(_signal.SIGCHLD, reap)
    while True:
        _signal.pause()
