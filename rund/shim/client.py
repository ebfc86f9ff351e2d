"""`containerd-shim-rund-v2 ... start` as a thin client of the shim fork server (forkserver.py).

It imports next to nothing (check: `python -X importtime`; `_socket`, not `socket`, whose enum and selectors cost
more than the rest; plaintoml.py, not tomllib, for a plain config file), asks the server of its state dir to start
the shim, prints the address containerd expects, and tells the server it did (the daemon serves only then).
Whenever the server cannot serve the start (none runs, it is starting, its code changed, it died mid-request, the
client runs in other namespaces or cgroups, `[shim] fork_server = false`), start() returns None and the caller
runs today's in-process start: a start never fails because of the fork server. When no server runs, it spawns one
in the background (daemonized: setsid, its log STATE_DIR/shim-server.log), for the starts after this one. A pod
member's start is answered before this (member.py), unless it has an error to report.
"""
from __future__ import annotations

import _socket
import os
import select
import stat
import struct
import sys

from rund.shim import forkproto, plaintoml

DEFAULT_CONFIG_PATH = "/etc/rund/config.toml"   # rund.config's, not imported here (dataclasses, pathlib: ~10 ms)
DEFAULT_STATE_DIR = "/run/rund"
DEFAULT_FORK_SERVER = True                      # rund.config.ShimConfig.fork_server's default
MAX_PODS_PER_SHIM = 64                          # rund.config.MAX_PODS_PER_SHIM
STDIN_WAIT = 0.1            # containerd writes the options and closes stdin as it starts us
STDIN_MAX = 1 << 16
ANSWER_TIMEOUT = 60.0       # a worker answers within its own timeouts (handshake 10 s, retiring a stale shim 5 s)


def wanted(argv: list[str]) -> bool:
    """A `start` the fork server may serve (not -v / -info)."""
    return bool(argv) and argv[-1] == "start" and not any(
        a.lstrip("-").partition("=")[0] in ("v", "version", "info") for a in argv if a.startswith("-"))


def read_stdin(fd: int = 0, wait: float = STDIN_WAIT) -> bytes:
    """containerd's runtime options (a protobuf Any) if it passed any: a pipe it closes at once, or /dev/null.
    Anything else (a terminal, a pipe nobody closes) yields what arrived within `wait` seconds."""
    try:
        st = os.fstat(fd)
    except OSError:
        return b""
    if stat.S_ISREG(st.st_mode):
        return os.read(fd, STDIN_MAX)
    if not (stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)):
        return b""
    out = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    import time
    deadline = time.monotonic() + wait
    while len(out) < STDIN_MAX:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            break
        try:
            chunk = os.read(fd, STDIN_MAX - len(out))
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


def _table(config_path: str) -> dict | None:
    """The config file's TOML table; {} for the default file when it is missing; None when unreadable."""
    try:
        f = open(config_path, "rb")
    except FileNotFoundError:
        return {} if config_path == DEFAULT_CONFIG_PATH else None
    except OSError:
        return None
    try:
        with f:
            data = f.read()
        table = plaintoml.loads(data)   # a plain file without tomllib's imports (~15 ms), else tomllib's reading
        if table is None:
            import tomllib
            table = tomllib.loads(data.decode())
        return table
    except (ValueError, OSError):
        return None


def _shim_key(table: dict, key: str, default):
    shim = table.get("shim", {})
    return shim.get(key, default) if isinstance(shim, dict) else None


def _state_dir(table: dict) -> str | None:
    state_dir = table.get("state_dir", DEFAULT_STATE_DIR)
    return state_dir if isinstance(state_dir, str) and os.path.isabs(state_dir) else None


def settings(config_path: str) -> tuple[bool, str]:
    """([shim] fork_server, state_dir) of a config file. A file that is missing (but the default), unreadable or
    wrong disables the fork server: today's path then reports it where it always did (at Create)."""
    table = _table(config_path)
    if table is None:
        return False, ""
    enabled = _shim_key(table, "fork_server", DEFAULT_FORK_SERVER)
    state_dir = _state_dir(table)
    if not isinstance(enabled, bool) or state_dir is None:
        return False, ""
    return enabled, state_dir


def group_settings(config_path: str) -> tuple[int, str]:
    """([shim] pods_per_shim, state_dir) of a config file: (1, "") (a shim per pod, today's path) when the file is
    missing, unreadable or wrong, which Create then reports."""
    return _group_of(_table(config_path) if config_path else None)


def merge_memory(config_path: str) -> bool:
    """[shim] merge_memory of a config file: False when the file is missing, unreadable or wrong."""
    return _merge_of(_table(config_path) if config_path else None)


def spawn_settings(config_path: str) -> tuple[int, str, bool]:
    """group_settings and merge_memory from one reading of the file (a start that spawns a shim needs both)."""
    table = _table(config_path) if config_path else None
    return (*_group_of(table), _merge_of(table))


def _group_of(table: dict | None) -> tuple[int, str]:
    if table is None:
        return 1, ""
    pods = _shim_key(table, "pods_per_shim", 1)
    state_dir = _state_dir(table)
    if not isinstance(pods, int) or isinstance(pods, bool) or not 1 <= pods <= MAX_PODS_PER_SHIM or state_dir is None:
        return 1, ""
    return pods, state_dir


def _merge_of(table: dict | None) -> bool:
    return table is not None and _shim_key(table, "merge_memory", False) is True


_start_config: str | None = None


def start_config_path() -> str:
    """This start's config file: the runtime options' ConfigPath on stdin (read once), else the default file."""
    global _start_config
    if _start_config is None:
        _start_config = forkproto.config_path_from_options(read_stdin()) or DEFAULT_CONFIG_PATH
    return _start_config


def _identity(argv: list[str], config_path: str = "") -> dict:
    import resource
    with open("/proc/self/cmdline", "rb") as f:
        cmdline = [os.fsdecode(a) for a in f.read().split(b"\0")[:-1]]
    with open("/proc/self/comm") as f:
        comm = f.read().rstrip("\n")
    with open("/proc/self/oom_score_adj") as f:
        oom = int(f.read())
    umask = os.umask(0)
    os.umask(umask)
    return forkproto.start_message([sys.argv[0], *argv], dict(os.environ), cmdline, comm or "containerd-shim", umask,
                                   resource.getrlimit(resource.RLIMIT_NOFILE), oom, forkproto.own_namespaces(),
                                   forkproto.own_cgroup(), config_path)


def start(argv: list[str]) -> int | None:
    """The exit code of a start the fork server served, or None: run today's start in this process."""
    config_path = start_config_path()
    enabled, state_dir = settings(config_path)
    if not enabled:
        return None
    try:
        request = _identity(argv, config_path)
    except OSError:
        return None
    key = forkproto.server_key(request["origin"], request["ns"], request["cgroup"])
    sock_path, lock_path = forkproto.server_paths(state_dir, key)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(sock_path)
    except OSError:
        sock.close()
        ensure_server(state_dir, key)
        return None
    try:
        sock.settimeout(ANSWER_TIMEOUT)
        try:
            kind, text, code = _ask(sock, request)
        except (OSError, forkproto.ProtocolError, ValueError):
            return None                 # the server or its worker died before answering
        if kind == "fallback":
            if "changed on disk" in text:
                ensure_server(state_dir, key)
            return None
        if kind == "error":
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
            return code
        sys.stdout.write(text)
        sys.stdout.flush()
        try:
            sock.sendall(forkproto.encode({"t": "printed"}))
        except OSError:
            pass                        # an adopted shim's worker does not wait for it
        return 0
    finally:
        sock.close()


def _ask(sock: _socket.socket, request: dict) -> tuple[str, str, int]:
    bundle = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        frame = forkproto.encode(request)      # the fd rides on the first byte (socket.send_fds, by hand)
        sent = sock.sendmsg([frame[:1]], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", bundle))])
        if sent != 1:
            raise OSError("short send")
        sock.sendall(frame[1:])
    finally:
        os.close(bundle)
    dec = forkproto.Decoder()
    while True:
        data = sock.recv(65536)
        if not data:
            raise OSError("the fork server closed without an answer")
        for msg in dec.feed(data):
            kind, text = forkproto.reply(msg)
            code = msg.get("code", 1)
            return kind, text, code if isinstance(code, int) and 0 < code < 256 else 1


def ensure_server(state_dir: str, key: str) -> None:
    """Spawn fork server `key` for `state_dir` unless one holds its lock (runs or is starting). Never raises."""
    try:
        os.makedirs(state_dir, mode=0o711, exist_ok=True)
        lock = os.open(forkproto.server_paths(state_dir, key)[1],
                       os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            import fcntl
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        finally:
            os.close(lock)
    except OSError:
        return
    try:
        spawn_server(state_dir, key)
    except OSError:
        pass


def spawn_server(state_dir: str, key: str | None = None) -> None:
    """Start `python -I -m rund.shim.forkserver STATE_DIR KEY` (this process's key by default) in its own session, holding none of our fds (containerd
    waits for EOF on start's output), its output into STATE_DIR/shim-server.log. Returns once it is detached."""
    env = {"PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")}
    env.update({k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "LC_CTYPE", "TZ")})
    os.makedirs(state_dir, mode=0o711, exist_ok=True)
    key = key or forkproto.own_server_key()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                out = os.open(os.path.join(state_dir, "shim-server.log"),
                              os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
                os.dup2(null, 0)
                os.dup2(out, 1)
                os.dup2(out, 2)
                for fd in (null, out):
                    if fd > 2:
                        os.close(fd)
                os.chdir("/")
                os.umask(0o022)
                os.execve(sys.executable, [sys.executable, "-I", "-m", "rund.shim.forkserver", state_dir, key],
                          env)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
