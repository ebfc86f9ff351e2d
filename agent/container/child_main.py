"""The body of a forked child: set up a container's init or an exec, report to the agent, execve.

Runs between fork and exec in a copy of the agent: no event loop, no logging, only blocking syscalls.
Every failure is sent to the agent on the status socket before the child exits.

A spare init (run_spare_init) is forked ahead of time into a new pid namespace (at the agent's start: a template
carries it to every clone) and waits with its signals already reset and its bounding set cut to containerd's
default (SPARE_BOUNDING: the cut costs a prctl per capability); it gets its plan on the status socket (PLAN + the
pickled InitPlan, the plan's fds alongside) and from there on goes the way of an init forked for the container.
It serves only a container whose bounding set is within SPARE_BOUNDING (the rest cannot come back).
"""
import _signal
import fcntl
import os
import pickle
import signal
import socket
import struct
import termios
from typing import NamedTuple

from ..linux import capabilities as caps
from ..linux import namespaces as ns
from ..network import loopback
from ..linux.prctl import PR_SET_PDEATHSIG, prctl
from ..linux.seccomp import SeccompFilter
from ..linux.system import sethostname
from ..oci.process import ProcessSpec
from ..oci.spec import ContainerSpec
from .. import spans
from . import status
from .child_process import become, execute, write_sysctls
from .child_rootfs import enter_rootfs

_CATCHABLE = tuple(sorted(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}))
TIOCGPTPEER = 0x5441
TIOCSPTLCK = 0x40045431
PLAN = b"plan"
SPARE_BOUNDING = caps.mask(caps.NUMBER[name] for name in caps.CONTAINERD_DEFAULT)
MAX_PLAN_BYTES = 1 << 20
MAX_PLAN_FDS = 64
MAX_FD = 1 << 20


class ChildStdio(NamedTuple):
    fds: tuple[int, int, int]  # become 0, 1, 2 (ignored with a terminal)
    terminal: bool
    console_size: tuple[int, int] | None = None


class InitPlan(NamedTuple):
    spec: ContainerSpec
    rootfs: str
    cgroup_procs: str | None
    joins: tuple[tuple[int, int], ...]  # (CLONE_NEW* flag, fd of the namespace to join), pid excluded
    new_namespaces: int                  # CLONE_NEW* flags to unshare, pid excluded
    stdio: ChildStdio
    seccomp: SeccompFilter | None = None


class ExecPlan(NamedTuple):
    process: ProcessSpec
    cgroup_procs: str | None
    joins: tuple[tuple[int, int], ...]  # the container's namespaces, mount last
    root_fd: int                         # the container's root directory
    stdio: ChildStdio
    seccomp: SeccompFilter | None = None  # the container's, as runc applies it to execs too


def run_init(sock: socket.socket, plan: InitPlan) -> None:
    guarded(sock, lambda: _init(sock, plan))


def run_spare_init(sock: socket.socket) -> None:
    guarded(sock, lambda: _spare_init(sock))


def encode_plan(plan: InitPlan) -> tuple[bytes, list[int]]:
    """The message that sends a spare init its plan, and the fds that go with it (the plan's own numbers are the
    agent's: the spare gets new ones, in this order)."""
    return PLAN + pickle.dumps(plan, pickle.HIGHEST_PROTOCOL), [fd for _, fd in plan.joins] + list(plan.stdio.fds)


def decode_plan(message: bytes, fds: list[int]) -> InitPlan:
    plan = pickle.loads(message[len(PLAN):])
    n = len(plan.joins)
    if len(fds) != n + len(plan.stdio.fds):
        raise AssertionError(f"the plan came with {len(fds)} fds")
    return plan._replace(joins=tuple((flag, fds[i]) for i, (flag, _) in enumerate(plan.joins)),
                         stdio=plan.stdio._replace(fds=tuple(fds[n:])))


def spare_fits(process: ProcessSpec) -> bool:
    """Whether a spare init can become `process`: its bounding set is within what the spare kept."""
    wanted = process.capabilities
    if wanted is None:
        return False            # the full set: gone from the spare
    last = caps.last_cap()
    return not caps.mask(c for c in wanted.bounding if c <= last) & ~SPARE_BOUNDING


def _spare_init(sock: socket.socket) -> None:
    start_clean()
    close_fds_but(sock.fileno())
    caps.drop_bounding(SPARE_BOUNDING, caps.last_cap())
    message, fds, flags, _ = socket.recv_fds(sock, MAX_PLAN_BYTES, MAX_PLAN_FDS, socket.MSG_CMSG_CLOEXEC)
    if not message.startswith(PLAN):
        os._exit(0)     # the agent let the spare go (or went away)
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        raise AssertionError("the plan did not fit in one message")
    spans.reset("plan")
    plan = decode_plan(message, fds)
    spans.mark("decoded")
    _setup_init(sock, plan)


def run_exec(sock: socket.socket, plan: ExecPlan) -> None:
    guarded(sock, lambda: _exec(sock, plan))


def guarded(sock: socket.socket, body) -> None:
    """Run a child's body, which never returns (it execs, or holds): any error goes to the agent, then exit 1."""
    try:
        body()
        raise AssertionError("the child returned instead of calling execve")
    except BaseException as exc:
        try:
            sock.send(status.encode_error(exc))
        finally:
            os._exit(1)


def _init(sock: socket.socket, plan: InitPlan) -> None:
    start_clean()
    _setup_init(sock, plan)


def _setup_init(sock: socket.socket, plan: InitPlan) -> None:
    if plan.cgroup_procs:
        _join_cgroup(plan.cgroup_procs)
    spans.mark("cgroup")
    enter_namespaces(plan.joins, plan.new_namespaces)
    write_sysctls(plan.spec.sysctl)
    if plan.spec.hostname and plan.new_namespaces & ns.CLONE_NEWUTS:
        sethostname(plan.spec.hostname)
    spans.mark("namespaces")
    enter_rootfs(plan.spec, plan.rootfs)
    spans.mark("rootfs")
    spans.keep_output()
    master = _setup_stdio(plan.stdio)
    path, env = become(plan.spec.process, plan.seccomp)
    spans.mark("become")
    spans.dump("init child")
    _report_ready(sock, master)
    if sock.recv(16) != status.START:
        os._exit(1)  # the agent gave up on this container
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    execute(path, plan.spec.process, env, plan.seccomp)


def enter_namespaces(joins: tuple[tuple[int, int], ...], new_namespaces: int) -> None:
    """Join the given namespaces, then make the new ones (pid excluded: the launcher forked into it); a new network
    namespace gets loopback up, as runc's does."""
    for flag, fd in joins:
        ns.setns(fd, flag)
    ns.unshare(new_namespaces)
    if new_namespaces & ns.CLONE_NEWNET:
        loopback.bring_up()


def _exec(sock: socket.socket, plan: ExecPlan) -> None:
    start_clean()
    if plan.cgroup_procs:
        _join_cgroup(plan.cgroup_procs)
    for flag, fd in plan.joins:
        ns.setns(fd, flag)
    os.fchdir(plan.root_fd)
    os.chroot(".")
    master = _setup_stdio(plan.stdio)
    path, env = become(plan.process, plan.seccomp)
    _report_ready(sock, master)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    execute(path, plan.process, env, plan.seccomp)


def start_clean() -> None:
    """Undo what the agent's Python set up: signal handlers, ignored SIGPIPE, the loop's wakeup fd."""
    signal.set_wakeup_fd(-1)
    # _signal, not signal: the enum wrappers would touch (and so copy-on-write) hundreds of pages of this fork.
    for sig in _CATCHABLE:
        if _signal.getsignal(sig) != _signal.SIG_DFL:
            try:
                _signal.signal(sig, _signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
    os.setsid()


def close_fds_but(keep: int) -> None:
    """A spare lives long: it must not hold the agent's ends of other containers' pipes (a stdin that never sees
    EOF) or sockets. Everything it inherited is close-on-exec anyway; its plan brings the fds it needs."""
    os.closerange(3, keep)
    os.closerange(keep + 1, MAX_FD)


def _join_cgroup(procs_path: str) -> None:
    fd = os.open(procs_path, os.O_WRONLY | os.O_CLOEXEC)  # no text-file machinery to page in
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def _setup_stdio(stdio: ChildStdio) -> int | None:
    """dup the pipes onto 0-2, or open a pty in the container's devpts; returns the pty master."""
    if not stdio.terminal:
        for target, fd in enumerate(stdio.fds):
            os.dup2(fd, target)
        return None
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    if stdio.console_size:
        rows, columns = stdio.console_size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for target in range(3):
        os.dup2(slave, target)
    os.close(slave)
    return master


def _report_ready(sock: socket.socket, master: int | None) -> None:
    if master is None:
        sock.send(status.READY)
        return
    socket.send_fds(sock, [status.READY], [master])
    os.close(master)


