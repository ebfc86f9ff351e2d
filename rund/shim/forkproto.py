"""The fork server's wire protocol: an I/O-free core (bytes in, events out; messages out as bytes), shared by the thin
`start` client (client.py) and the server (forkserver.py). Imports only what the client can afford at start.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON, one object with a string field "t":

    client -> server   {"t": "start", "argv": [...], "env": {...}, "cmdline": [...], "comm": "...",
                        "umask": 18, "nofile": [soft, hard], "oom_score_adj": 0, "ns": {...}, "cgroup": "...",
                        "origin": [python executable, this module's file], "config": "/etc/rund/x.toml"}
                       + SCM_RIGHTS: one fd, the bundle directory (the client's cwd), sent with the frame's first byte
    server -> client   {"t": "address", "address": "unix://..."}   print it, then answer {"t": "printed"}
                       {"t": "error", "message": "..."}             what `start` would print on stderr (exit 1)
                       {"t": "fallback", "reason": "..."}           not served here: run today's start in-process
    client -> server   {"t": "printed"}                             the address is on stdout: the daemon may serve

Everything in a start request is checked here (types, sizes, no NUL, no '=' in env names) before anything uses it.
"""
from __future__ import annotations

import struct

from rund.shim import leanjson

MAX_FRAME = 1 << 20          # a start request is a few KiB: argv, containerd's environment, the process identity
MAX_ARGS = 64
MAX_ENV = 1024
MAX_STRING = 64 << 10
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """A frame or message that breaks the protocol: the connection is closed."""


def encode(msg: dict) -> bytes:
    body = leanjson.dumps(msg).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"message of {len(body)} bytes is over {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


class Decoder:
    """Feed bytes as they arrive; get complete messages (dicts with a string "t") back, in order."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self._buf = bytearray()
        self._max = max_frame
        self.closed = False

    def feed(self, data: bytes) -> list[dict]:
        if self.closed:
            raise ProtocolError("data after a protocol error")
        self._buf += data
        out = []
        while len(self._buf) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buf)
            if size > self._max:
                self.closed = True
                raise ProtocolError(f"frame of {size} bytes is over {self._max}")
            if len(self._buf) < _HEADER.size + size:
                break
            body = bytes(self._buf[_HEADER.size:_HEADER.size + size])
            del self._buf[:_HEADER.size + size]
            try:
                msg = leanjson.loads(body)
            except (ValueError, UnicodeDecodeError):
                self.closed = True
                raise ProtocolError("frame is not JSON") from None
            if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
                self.closed = True
                raise ProtocolError("a message must be an object with a string field 't'")
            out.append(msg)
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame (a peer that closes with pending > 0 was cut off)."""
        return len(self._buf)


def recv_message(sock) -> dict | None:
    """The next whole message on a blocking socket (its timeout applies), or None at EOF before one.
    ProtocolError for a broken frame; OSError as the socket raises it."""
    dec = Decoder()
    while True:
        data = sock.recv(4096)
        if not data:
            return None
        msgs = dec.feed(data)
        if msgs:
            return msgs[0]


class StartRequest:
    """A checked start request (see validate_start)."""
    __slots__ = ("argv", "env", "cmdline", "comm", "umask", "nofile", "oom_score_adj", "ns", "cgroup", "origin",
                 "config")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw[k])


def _string(value, what: str, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{what} must be a string")
    if "\0" in value:
        raise ProtocolError(f"{what} contains NUL")
    if len(value) > MAX_STRING:
        raise ProtocolError(f"{what} is too long")
    if not allow_empty and not value:
        raise ProtocolError(f"{what} is empty")
    return value


def _strings(value, what: str, limit: int) -> list[str]:
    if not isinstance(value, list) or len(value) > limit:
        raise ProtocolError(f"{what} must be a list of at most {limit} strings")
    return [_string(v, f"{what}[{i}]") for i, v in enumerate(value)]


def _int(value, what: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ProtocolError(f"{what} must be an integer in [{lo}, {hi}]")
    return value


def validate_start(msg: dict) -> StartRequest:
    """The start request in `msg`, every field checked; ProtocolError names the first bad one."""
    if msg.get("t") != "start":
        raise ProtocolError(f"expected a start request, got {msg.get('t')!r}")
    argv = _strings(msg.get("argv"), "argv", MAX_ARGS)
    if not argv or argv[-1] != "start":
        raise ProtocolError("argv must end with the action start")
    env = msg.get("env")
    if not isinstance(env, dict) or len(env) > MAX_ENV:
        raise ProtocolError(f"env must be an object of at most {MAX_ENV} strings")
    for k, v in env.items():
        _string(k, "env name", allow_empty=False)
        if "=" in k:
            raise ProtocolError(f"env name {k[:64]!r} contains '='")
        _string(v, f"env {k[:64]}")
    cmdline = _strings(msg.get("cmdline"), "cmdline", MAX_ARGS + 4)
    if not cmdline:
        raise ProtocolError("cmdline is empty")
    comm = _string(msg.get("comm"), "comm", allow_empty=False)[:15]
    umask = _int(msg.get("umask"), "umask", 0, 0o777)
    nofile = msg.get("nofile")
    if not isinstance(nofile, list) or len(nofile) != 2:
        raise ProtocolError("nofile must be [soft, hard]")
    nofile = [_int(v, "nofile", -1, 1 << 62) for v in nofile]
    oom = _int(msg.get("oom_score_adj"), "oom_score_adj", -1000, 1000)
    ns = msg.get("ns")
    if not isinstance(ns, dict) or set(ns) - set(NAMESPACES):
        raise ProtocolError(f"ns must map some of {NAMESPACES} to inode numbers")
    ns = {k: _int(v, f"ns {k}", 0, 1 << 64) for k, v in ns.items()}
    cgroup = _string(msg.get("cgroup"), "cgroup")
    origin = _strings(msg.get("origin"), "origin", 2)
    if len(origin) != 2:
        raise ProtocolError("origin must be [python executable, module file]")
    config = _string(msg.get("config", ""), "config")      # the runtime class's config file ("": not known)
    return StartRequest(argv=argv, env=env, cmdline=cmdline, comm=comm, umask=umask, nofile=nofile,
                        oom_score_adj=oom, ns=ns, cgroup=cgroup, origin=origin, config=config)


def origin() -> list[str]:
    """Which interpreter and which rund checkout a process runs: a server forks only for clients of its own."""
    import sys
    return [sys.executable, __file__]


def own_namespaces() -> dict[str, int]:
    import os
    ns = {}
    for name in NAMESPACES:
        try:
            ns[name] = os.stat(f"/proc/self/ns/{name}").st_ino
        except OSError:
            pass
    return ns


def own_cgroup() -> str:
    with open("/proc/self/cgroup") as f:
        return f.read()


def server_key(origin: list[str], ns: dict[str, int], cgroup: str) -> str:
    """Which fork server of a state dir serves a client: one per interpreter and checkout, namespaces and cgroups,
    so a forked daemon is where an exec'd `start` would have put it (containerd's cgroup, say)."""
    from rund.shim.sha256 import sha256
    text = leanjson.dumps([origin, sorted(ns.items()), cgroup])
    return sha256(text.encode()).hexdigest()[:16]


def own_server_key() -> str:
    return server_key(origin(), own_namespaces(), own_cgroup())


def server_paths(state_dir: str, key: str) -> tuple[str, str]:
    """(socket, lock) of the fork server `key` of `state_dir`."""
    import os
    return os.path.join(state_dir, f"shim-server-{key}.sock"), os.path.join(state_dir, f"shim-server-{key}.lock")


def start_message(argv: list[str], env: dict[str, str], cmdline: list[str], comm: str, umask: int,
                  nofile: tuple[int, int], oom_score_adj: int, ns: dict[str, int], cgroup: str,
                  config: str = "") -> dict:
    return {"t": "start", "argv": argv, "env": env, "cmdline": cmdline, "comm": comm, "umask": umask,
            "nofile": list(nofile), "oom_score_adj": oom_score_adj, "ns": ns, "cgroup": cgroup, "origin": origin(),
            "config": config}


def reply(msg: dict) -> tuple[str, str]:
    """A server reply as (kind, text): ("address", addr) | ("error", message) | ("fallback", reason)."""
    kind = msg.get("t")
    field = {"address": "address", "error": "message", "fallback": "reason"}.get(kind)
    if field is None or not isinstance(msg.get(field), str):
        raise ProtocolError(f"unexpected reply {kind!r}")
    return kind, msg[field]


# ---- containerd's runtime options on `start`'s stdin -------------------------------------------------------------

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes):
    """(number, wire type, value) of a protobuf message; bytes for length-delimited, int for varints."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            value, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field")
            value, i = buf[i:i + n], i + n
        elif wt == 1:
            value, i = buf[i:i + 8], i + 8
        elif wt == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt}")
        yield num, wt, value


def _config_path_of_any(any_bytes: bytes) -> str:
    type_url, value = "", b""
    for num, wt, v in _fields(any_bytes):
        if num == 1 and wt == 2:
            type_url = v.decode()
        elif num == 2 and wt == 2:
            value = v
    if type_url.rsplit("/", 1)[-1] != "runtimeoptions.v1.Options":
        return ""
    for num, wt, v in _fields(value):
        if num == 2 and wt == 2:
            return v.decode()
    return ""


def config_path_from_options(stdin: bytes) -> str:
    """runtimeoptions.v1.Options.ConfigPath from `start`'s stdin: a google.protobuf.Any (containerd 1.6-2.2) or a
    BootstrapParams whose extensions carry it (2.3+). "" when absent or unreadable (then the default config)."""
    if not stdin:
        return ""
    try:
        path = _config_path_of_any(stdin)
        if path:
            return path
        for num, wt, v in _fields(stdin):          # BootstrapParams.extensions (8): Extension{value (1): Any}
            if num == 8 and wt == 2:
                for n2, w2, any_bytes in _fields(v):
                    if n2 == 1 and w2 == 2 and (path := _config_path_of_any(any_bytes)):
                        return path
    except (ValueError, UnicodeDecodeError):
        pass
    return ""
