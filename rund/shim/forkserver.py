"""The shim fork server ("zygote"): one pre-imported parent per rund state_dir that forks each pod's shim daemon.

    python -I -m rund.shim.forkserver STATE_DIR          (started by client.py, daemonized; never by hand)

It imports the whole runtime once, `gc.freeze()`s it, and listens on STATE_DIR/shim-server-KEY.sock (0600, root;
each peer's SO_PEERCRED must say uid 0). KEY names the interpreter, checkout, namespaces and cgroups it serves
(forkproto.server_key): one server per containerd cgroup on a host, and a client only finds a server of its own. It starts no thread and no event loop, and does nothing per request but check the
peer and whether its code changed on disk, then fork a worker. The worker is today's `start` process: it takes on
the client's environment, working directory (the bundle, passed as an fd), umask, RLIMIT_NOFILE, oom_score_adj,
command line and name, checks that it lives in the client's namespaces and cgroups (else: "fallback", the client
runs today's start itself), then runs start.start_shim: bind or adopt the socket, fork the daemon (setsid, as
today), handshake. The daemon serves only once the client printed the address (the handshake's go). The worker
exits then, so the daemon's parent is init, never this server.

Blast radius: the server holds no shim state. Killing it (any signal) affects no running shim: they are not its
children, share no socket or lock with it, and hold only copy-on-write pages. A start that finds no server runs
today's in-process path and spawns a new server in the background (one wins the lock). A start whose worker dies
falls back likewise. A server whose code changed on disk (an upgrade) answers "fallback" and exits.
"""
from __future__ import annotations

import errno
import fcntl
import gc
import importlib
import logging
import os
import random
import resource
import signal
import socket
import sys
import threading
import time

from rund.peercred import peer_credentials
from rund.shim import codefiles, forkproto
from rund.shim.forkproto import ProtocolError

LOG_NAME = "shim-server.log"     # every server of the state dir appends here
COMM = "rund-forksrv"
REQUEST_TIMEOUT = 10.0       # a client sends its request at once after connect
PRINTED_TIMEOUT = 10.0       # and answers "printed" at once after the address
BACKLOG = 128
# What a shim daemon runs: imported here once, shared copy-on-write by every daemon forked from this server.
PRELOAD = ("rund.shim.start", "rund.shim.serve", "rund.shim.flags", "rund.runtime.sandbox_runtime",
           "rund.shim.delete", "rund.runtime.cleanup", "proto.gen.containerd.task.v2.shim_pb2",
           "concurrent.futures.thread",     # the loop's default executor (run_in_executor)
           "rund.shim.group", "rund.shim.group_start")     # [shim] pods_per_shim > 1: placing pods, group shims

log = logging.getLogger("rund.shim.forkserver")


STALE_CHECK = 60.0           # an idle server looks this often whether it is still wanted (see Server.retire)
IDLE_EXIT = 1800.0           # a server no start asked for this long exits: the next start spawns one again


def paths(state_dir: str, key: str | None = None) -> tuple[str, str, str]:
    """(socket, lock, log) of fork server `key` of `state_dir`; by default the one that serves this process."""
    sock, lock = forkproto.server_paths(state_dir, key or forkproto.own_server_key())
    return sock, lock, os.path.join(state_dir, LOG_NAME)


def server_pid(socket_path: str) -> int | None:
    """The pid of the server listening on `socket_path`, or None if none does."""
    from rund.shim import peer
    server = peer.probe(socket_path) if os.path.exists(socket_path) else None
    return server.pid if server is not None else None


def wait_server(socket_path: str, timeout: float = 60) -> int:
    """The pid of the server on `socket_path` once one listens there; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while (pid := server_pid(socket_path)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no fork server listens on {socket_path} after {timeout} s")
        time.sleep(0.1)
    return pid


# ---- the server ----------------------------------------------------------------------------------------------------

class _Server:
    def __init__(self, state_dir: str, key: str | None = None):
        self.state_dir = state_dir
        self.socket_path, self.lock_path, _ = paths(state_dir, key)
        self.lock_fd = -1
        self.sock: socket.socket | None = None
        self.socket_file = None
        self.files: dict[str, tuple[int, int, int]] = {}

    def lock(self) -> bool:
        """The server's lock, held for its life (one server per state dir). False: another server has it."""
        os.makedirs(self.state_dir, mode=0o711, exist_ok=True)
        self.lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.lock_fd)
            self.lock_fd = -1
            return False
        return True

    def listen(self) -> None:
        from rund.shim.socket_file import SocketFile
        try:
            os.unlink(self.socket_path)      # a dead server's: we hold the lock, so no live one listens there
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(self.socket_path)
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        self.socket_file = SocketFile(self.socket_path)
        sock.listen(BACKLOG)
        self.sock = sock

    def snapshot(self) -> None:
        self.files = codefiles.snapshot()

    def stale(self) -> str | None:
        """The first module file changed on disk since the server imported it, or None."""
        return codefiles.changed(self.files)

    def retire(self, idle_s: float) -> str | None:
        """Why an idle server should exit, or None: its code changed on disk, its socket is gone (its state dir
        was removed, or another server took the path), or no start asked for it in IDLE_EXIT (a node without
        starts keeps no server; the next start runs in-process once and spawns one)."""
        if (changed := self.stale()) is not None:
            return f"{changed} changed on disk since this server started"
        if self.socket_file is not None and not self.socket_file.still_ours():
            return f"its socket {self.socket_path} is gone"
        if idle_s >= IDLE_EXIT:
            return f"no start asked for it in {idle_s:.0f} s"
        return None

    def serve_forever(self) -> None:
        assert self.sock is not None
        self.sock.settimeout(STALE_CHECK)
        last = time.monotonic()
        while True:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                if (why := self.retire(time.monotonic() - last)) is not None:
                    log.warning("%s: exiting", why)
                    return
                continue
            except OSError as e:
                if e.errno in (errno.ECONNABORTED, errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept: %s", e)
                    continue
                raise
            last = time.monotonic()
            with conn:
                try:
                    if self.handle(conn) == "exit":
                        return
                except OSError as e:    # fork failed (EAGAIN, ENOMEM), the peer went away: that client falls back
                    log.warning("a start request: %s", e)
                    _send_quietly(conn, {"t": "fallback", "reason": f"the fork server could not fork: {e}"})

    def handle(self, conn: socket.socket) -> str | None:
        uid = peer_credentials(conn).uid
        if uid != 0:
            log.warning("refused a connection from uid %s", uid)
            _send_quietly(conn, {"t": "error", "message": "rund fork server: only root may start shims", "code": 1})
            return None
        changed = self.stale()
        if changed is not None:
            log.warning("%s changed on disk since this server started: exiting (a new one starts)", changed)
            self.close()                # first: the client that reads the answer spawns the next server
            _send_quietly(conn, {"t": "fallback", "reason": "the fork server's code changed on disk"})
            return "exit"
        pid = os.fork()
        if pid == 0:                    # the worker: today's `start` process
            code = 1
            try:
                code = _worker(conn, self)
            except BaseException:       # noqa: BLE001 - a worker never returns into the server's loop
                log.exception("start worker failed")
            finally:
                os._exit(code)
        return None

    def close(self) -> None:
        if self.socket_file is not None:
            self.socket_file.remove()
        if self.sock is not None:
            self.sock.close()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def forget_in_child(self) -> None:
        """In a worker: let go of everything that is the server's (its socket, its lock) without removing them."""
        if self.sock is not None:
            self.sock.close()
        if self.socket_file is not None:
            self.socket_file.close()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)


def _prepare_children() -> None:
    """What every forked shim would otherwise do for itself, done once here where it is shared: a child that
    touches an object writes its reference count, which copies the object's page into that child (4 KiB a page,
    per shim). `frozenset(sys.modules)` in a child increfs ~600 module-name strings scattered over the whole heap
    (1.1 MiB per shim); logs.setup's setLevel calls sweep every logger's cache (~70 loggers, one page or two each)
    unless the levels are already what it sets."""
    from rund.shim import logs, start
    start.PRELOADED = frozenset(sys.modules)
    logs.preset()


def _send_quietly(conn: socket.socket, msg: dict) -> None:
    try:
        conn.settimeout(1.0)
        conn.sendall(forkproto.encode(msg))
    except OSError:
        pass


def _reap(signum, frame) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or not os.path.isabs(argv[0]):
        print("usage: python -m rund.shim.forkserver STATE_DIR (absolute) KEY", file=sys.stderr)
        return 2
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))   # nothing its spawner held leaks into every shim
    if argv[1] != forkproto.own_server_key():
        print(f"rund fork server: key {argv[1]!r} is not this process's (other cgroups or namespaces)",
              file=sys.stderr)
        return 1
    server = _Server(argv[0], argv[1])
    if not server.lock():
        return 0                        # another server runs (or is starting) for this state dir
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s pid=%(process)d %(levelname)s %(message)s")
    try:
        from rund.shim import procname
        procname.set_comm(COMM)
    except OSError:
        pass
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        for name in PRELOAD:
            importlib.import_module(name)
        server.snapshot()
        if threading.active_count() != 1:
            log.error("a preloaded module started a thread: a fork server must not have any; exiting")
            return 1
        _prepare_children()
        gc.collect()
        gc.freeze()                     # the imports' objects: never touched by a child's collections (CoW)
        signal.signal(signal.SIGCHLD, _reap)
        server.listen()
        log.info("rund shim fork server for %s: pid %d, %d modules, listening on %s", server.state_dir,
                 os.getpid(), len(sys.modules), server.socket_path)
        server.serve_forever()
        return 0
    except SystemExit:
        return 0
    finally:
        server.close()
        log.info("fork server exiting")


# ---- the worker: one start request -------------------------------------------------------------------------------

def _worker(conn: socket.socket, server: _Server) -> int:
    server.forget_in_child()
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    random.seed()                       # os.fork reseeds `random` too (register_at_fork); be explicit
    root = logging.getLogger()
    for h in list(root.handlers):       # the server's log; serve.py sets up the daemon's own (the bundle's FIFO)
        root.removeHandler(h)
    conn.settimeout(REQUEST_TIMEOUT)
    try:
        msg, fds = _recv_request(conn)
    except (OSError, ProtocolError) as e:
        _send_quietly(conn, {"t": "error", "message": f"rund start: bad request to the fork server: {e}", "code": 1})
        return 1
    try:
        try:
            req = forkproto.validate_start(msg)
            if len(fds) != 1:
                raise ProtocolError(f"expected the bundle directory's fd, got {len(fds)} fds")
        except ProtocolError as e:
            _send_quietly(conn, {"t": "error", "message": f"rund start: bad request to the fork server: {e}",
                                 "code": 1})
            return 1
        why = _become(req, fds[0])
    finally:
        for fd in fds:
            os.close(fd)
    if why is not None:
        _note(f"start worker {os.getpid()}: falling back to the client's own start: {why}")
        _send_quietly(conn, {"t": "fallback", "reason": why})
        return 0
    return _start(conn, req)


def _note(text: str) -> None:
    """A line into the server's log (a worker's stderr) without the server's logging handlers."""
    try:
        os.write(2, f"{time.strftime('%Y-%m-%d %H:%M:%S')} pid={os.getpid()} {text}\n".encode(errors="replace"))
    except OSError:
        pass


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    dec = forkproto.Decoder()
    fds: list[int] = []
    while True:
        data, got, _, _ = socket.recv_fds(conn, 65536, 4)
        fds.extend(got)
        if not data:
            for fd in fds:
                os.close(fd)
            raise ProtocolError("the client closed before a whole request")
        msgs = dec.feed(data)
        if msgs:
            return msgs[0], fds


def _become(req: forkproto.StartRequest, bundle_fd: int) -> str | None:
    """Take on the client's process identity. A reason to fall back when this process cannot be what an exec'd
    `start` would have been (another checkout, other namespaces or cgroups, a limit it may not set); None when
    it is."""
    if req.origin != forkproto.origin():
        return f"the client runs {req.origin}, this server {forkproto.origin()}"
    for name, ino in req.ns.items():
        try:
            mine = os.stat(f"/proc/self/ns/{name}").st_ino
        except OSError:
            continue
        if mine != ino:
            return f"the client runs in another {name} namespace"
    try:
        with open("/proc/self/cgroup") as f:
            if f.read() != req.cgroup:
                return "the client runs in other cgroups"
    except OSError:
        return "cannot read /proc/self/cgroup"
    try:
        if resource.getrlimit(resource.RLIMIT_NOFILE) != tuple(req.nofile):
            resource.setrlimit(resource.RLIMIT_NOFILE, tuple(req.nofile))
        with open("/proc/self/oom_score_adj", "r+") as f:
            if int(f.read()) != req.oom_score_adj:
                f.seek(0)
                f.write(str(req.oom_score_adj))
    except (OSError, ValueError) as e:
        return f"cannot take on the client's limits: {e}"
    try:
        from rund.shim import procname
        procname.set_cmdline(req.cmdline, req.env)
        procname.set_comm(req.comm)
    except OSError as e:
        return f"cannot take on the client's command line: {e}"
    os.fchdir(bundle_fd)
    os.umask(req.umask)
    os.environ.clear()
    os.environ.update(req.env)
    time.tzset()                        # TZ as the client has it (logging's timestamps)
    sys.argv = list(req.argv)
    return None


def _start(conn: socket.socket, req: forkproto.StartRequest) -> int:
    from rund.errors import RundError
    from rund.shim import flags, start
    from rund.shim.start import start_shim
    start.STARTED_BY = f"the fork server (pid {os.getppid()})"    # start.PRELOADED: set by the server
    try:
        args = flags.parse(req.argv[1:])
    except RundError as e:
        _send_quietly(conn, {"t": "error", "message": f"containerd-shim-rund-v2: {e}", "code": 2})
        return 2
    sent = False

    def confirm(address: str) -> bool:
        nonlocal sent
        sent = True
        try:
            conn.settimeout(PRINTED_TIMEOUT)
            conn.sendall(forkproto.encode({"t": "address", "address": address}))
            msg = forkproto.recv_message(conn)
            return msg is not None and msg.get("t") == "printed"
        except (OSError, ProtocolError):
            return False

    try:
        address = start_shim(args, os.getcwd(), confirm=confirm, close_in_child=[conn], config_path=req.config)
    except (RundError, OSError) as e:
        if not sent:
            _send_quietly(conn, {"t": "error", "message": f"rund start: {e}", "code": 1})
        return 1
    if not sent:                        # an adopted shim: nothing waits for the client
        _send_quietly(conn, {"t": "address", "address": address})
    return 0


if __name__ == "__main__":
    sys.exit(main())
