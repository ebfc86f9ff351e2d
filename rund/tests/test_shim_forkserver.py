"""The shim fork server with real processes and sockets (root; no VM, no containerd): a daemon it forks is the daemon
an in-process `start` makes, it refuses peers that are not root, and its death touches no running shim."""
from __future__ import annotations

import asyncio
import os
import signal
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from proto import ttrpc
from proto.gen.containerd.task.v2 import shim_pb2
from rund.shim import forkproto, forkserver
from rund.tests.test_shim_start import (NS, SHIM, daemon_of, make_bundle, options_any, reap, socket_of,  # noqa: F401
                                        start_fork_server, stop_fork_server)

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (shim sockets live in /run/containerd/s)")]


@pytest.fixture
def setup(tmp_path):
    """(config for fork_server on, config for off, state dir, containerd address); the server stopped after."""
    top = Path(tempfile.mkdtemp(prefix="rund-forksrv-", dir="/tmp"))
    top.chmod(0o711)                            # traversable: one test connects as nobody
    state = top / "state"
    on, off = tmp_path / "on.toml", tmp_path / "off.toml"
    on.write_text(f'state_dir = "{state}"\n[shim]\nfork_server = true\n')
    off.write_text(f'state_dir = "{state}"\n[shim]\nfork_server = false\n')
    ctd = f"/tmp/rund-test-{os.urandom(6).hex()}/containerd.sock"
    yield on, off, state, ctd
    stop_fork_server(state)
    shutil.rmtree(top, ignore_errors=True)


def start(ctd: str, cid: str, bundle: Path, config: Path, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "TTRPC_ADDRESS": ctd + ".ttrpc", "GRPC_ADDRESS": ctd, "NAMESPACE": NS,
            "MAX_SHIM_VERSION": "2", "RUND_SHIM_IDLE_TIMEOUT": "30", **env}
    return subprocess.run([str(SHIM), "-namespace", NS, "-address", ctd, "-publish-binary", "/bin/true", "-id", cid,
                           "-debug", "start"], cwd=bundle, env=full, capture_output=True, timeout=60,
                          input=options_any(str(config)))


def _proc(pid: int) -> dict:
    def read(name: str) -> bytes:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    status = dict(line.split(":", 1) for line in read("status").decode().splitlines())
    stat_ = read("stat").decode()
    fields = stat_[stat_.rindex(")") + 2:].split()
    cwd = os.readlink(f"/proc/{pid}/cwd")
    fds = sorted(os.readlink(f"/proc/{pid}/fd/{fd}").split(":")[0].replace(cwd, "BUNDLE")
                 for fd in os.listdir(f"/proc/{pid}/fd"))
    fds = ["SHIM SOCKET" if f.startswith("/run/containerd/s/") else f for f in fds]
    limits = [line for line in read("limits").decode().splitlines() if "open files" in line]
    return {"cmdline": read("cmdline").split(b"\0"), "environ": sorted(read("environ").split(b"\0")),
            "comm": read("comm"), "cwd": os.readlink(f"/proc/{pid}/cwd"), "umask": status["Umask"].strip(),
            "threads": status["Threads"].strip(), "ppid": int(fields[1]), "sid": int(fields[3]),
            "cgroup": read("cgroup"), "oom": read("oom_score_adj"), "fds": fds, "limits": limits}


def _state(path: str, cid: str) -> str:
    async def call():
        async with await ttrpc.Client.connect_unix(path) as client:
            task = ttrpc.Stub(client, shim_pb2.DESCRIPTOR.services_by_name["Task"])
            try:
                await task.State(shim_pb2.StateRequest(id=cid), timeout=5)
            except ttrpc.NotFound:
                return "not found"
            return "found"
    return asyncio.run(call())


def test_a_forked_daemon_is_the_daemon_start_makes(setup, tmp_path, reap):
    on, off, state, ctd = setup
    server = start_fork_server(state)
    assert stat.S_IMODE(os.stat(forkserver.paths(str(state))[0]).st_mode) == 0o600
    assert _proc(server)["threads"] == "1"
    got = {}
    for mode, config in (("exec", off), ("fork", on)):
        bundle = make_bundle(tmp_path / mode)
        (bundle / "log").touch()
        res = start(ctd, mode, bundle, config)
        assert res.returncode == 0 and res.stderr == b"", res.stderr
        path = socket_of(ctd, mode)
        assert res.stdout.decode() == f"unix://{path}" == (bundle / "address").read_text()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        pid = daemon_of(path)
        reap.append(pid)
        deadline = time.monotonic() + 10
        while "serving sandbox" not in (bundle / "log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ("the fork server" in (bundle / "log").read_text()) == (mode == "fork")
        got[mode] = _proc(pid)                  # before a call of ours adds a connection
        assert _state(path, mode) == "not found"
        assert got[mode]["sid"] == pid and got[mode]["ppid"] != server
    exec_, fork = got["exec"], got["fork"]
    assert fork["cmdline"] == [a.replace(b"exec", b"fork") for a in exec_["cmdline"]]
    assert b"-debug" in fork["cmdline"] and fork["cmdline"][-2:] == [b"start", b""]
    assert fork["environ"] == exec_["environ"]
    assert any(e.startswith(b"TTRPC_ADDRESS=") for e in fork["environ"])
    assert fork["cwd"] == str(tmp_path / "fork") and exec_["cwd"] == str(tmp_path / "exec")
    for key in ("comm", "umask", "threads", "cgroup", "oom", "limits"):
        assert fork[key] == exec_[key], (key, fork[key], exec_[key])
    # open files once both have settled: a daemon that just started may still hold a short-lived socket of its
    # start (seen 1 run in 4 in the exec'd one), which the snapshot above can catch
    fds = {mode: got[mode]["fds"] for mode in got}
    deadline = time.monotonic() + 5
    while fds["fork"] != fds["exec"] and time.monotonic() < deadline:
        time.sleep(0.1)
        fds = {mode: _proc(daemon_of(socket_of(ctd, mode)))["fds"] for mode in got}
    assert fds["fork"] == fds["exec"], fds


def test_a_peer_that_is_not_root_is_refused(setup, tmp_path):
    on, off, state, ctd = setup
    start_fork_server(state)
    sock = forkserver.paths(str(state))[0]
    os.chmod(sock, 0o666)                       # as if the file mode were wrong: the credentials check still holds
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(sock)
                s.settimeout(10)
                os.write(w, s.recv(4096))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        answer = f.read()
    os.waitpid(pid, 0)
    msgs = forkproto.Decoder().feed(answer)
    assert msgs and msgs[0]["t"] == "error" and "only root" in msgs[0]["message"]


def test_killing_the_server_leaves_running_shims_alone_and_a_new_start_brings_a_new_server(setup, tmp_path, reap):
    on, off, state, ctd = setup
    server = start_fork_server(state)
    bundle = make_bundle(tmp_path / "c1")
    assert start(ctd, "c1", bundle, on).returncode == 0
    path = socket_of(ctd, "c1")
    pid = daemon_of(path)
    reap.append(pid)
    os.kill(server, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{server}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(path, "c1") == "not found" and daemon_of(path) == pid     # the shim serves on
    res = start(ctd, "c2", make_bundle(tmp_path / "c2"), on)   # no server: in-process, and a new server spawned
    assert res.returncode == 0 and res.stdout.decode() == f"unix://{socket_of(ctd, 'c2')}", res.stderr
    reap.append(daemon_of(socket_of(ctd, "c2")))
    new = start_fork_server(state)              # already there: start_fork_server's own spawn loses the lock
    assert new != server
    bundle3 = make_bundle(tmp_path / "c3")
    (bundle3 / "log").touch()
    assert start(ctd, "c3", bundle3, on).returncode == 0
    reap.append(daemon_of(socket_of(ctd, "c3")))
    deadline = time.monotonic() + 10
    while "serving sandbox" not in (bundle3 / "log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"the fork server (pid {new})" in (bundle3 / "log").read_text()


def test_fork_server_off_starts_no_server(setup, tmp_path, reap):
    on, off, state, ctd = setup
    res = start(ctd, "c1", make_bundle(tmp_path / "c1"), off)
    assert res.returncode == 0, res.stderr
    reap.append(daemon_of(socket_of(ctd, "c1")))
    time.sleep(1)
    assert not os.path.exists(forkserver.paths(str(state))[0])


def test_errors_come_back_as_start_prints_them(setup, tmp_path):
    on, off, state, ctd = setup
    start_fork_server(state)
    bundle = tmp_path / "nobundle"
    bundle.mkdir()                              # no config.json
    res = start(ctd, "c1", bundle, on)
    assert res.returncode == 1 and res.stdout == b"" and res.stderr.startswith(b"rund start: "), res.stderr
    res = start(ctd, "../x", make_bundle(tmp_path / "b"), on)
    assert res.returncode == 1 and b"not a valid identifier" in res.stderr, res.stderr


def test_a_server_answers_fallback_to_another_checkout_and_when_its_code_changed(setup):
    on, off, state, ctd = setup
    server = forkserver._Server(str(state))
    server.files = {str(Path(forkproto.__file__)): (0, 0, 0)}
    assert server.stale() == str(Path(forkproto.__file__))
    server.snapshot()
    assert server.stale() is None
    req = forkproto.validate_start({**forkproto.start_message(["x", "start"], {}, ["x"], "c", 0o22, (1, 1), 0, {},
                                                                "0::/\n"), "origin": ["/other/python", "/other/f"]})
    assert "the client runs" in forkserver._become(req, -1)


def test_an_idle_server_retires_when_its_socket_goes_or_nobody_asks(tmp_path):
    """Servers are not left behind: one whose state dir went (tests, a removed runtime class) or that no start asked
    for in IDLE_EXIT exits; a fresh, wanted one stays."""
    from rund.shim import forkserver
    server = forkserver._Server(str(tmp_path / "state"))
    assert server.lock()
    server.listen()
    server.snapshot()
    try:
        assert server.retire(0.0) is None
        assert "no start asked" in server.retire(forkserver.IDLE_EXIT)
        os.unlink(server.socket_path)
        assert "is gone" in server.retire(0.0)
    finally:
        server.close()


def test_the_server_does_once_what_every_forked_shim_would_do(monkeypatch):
    """What a forked shim reads but must not build (writing reference counts all over the server's heap copies
    those pages into every shim): the preloaded module names, the log levels its setup sets."""
    import logging
    import sys
    from rund.shim import logs, start
    monkeypatch.setattr(start, "PRELOADED", frozenset())
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.WARNING)
    forkserver._prepare_children()
    assert start.PRELOADED == frozenset(sys.modules)
    assert root.level == logging.INFO
    for name, level in logs.QUIET.items():
        assert logging.getLogger(name).level == level


def _merge_any(pid: int) -> str:
    with open(f"/proc/{pid}/ksm_stat") as f:
        return next(line.split(":")[1].strip() for line in f if line.startswith("ksm_merge_any:"))


@pytest.mark.skipif(not Path("/proc/self/ksm_stat").exists(), reason="no KSM in this kernel")
def test_merge_memory_makes_the_daemon_and_only_it_mergeable(setup, tmp_path, reap):
    on, off, state, ctd = setup
    merge_fork, merge_exec = tmp_path / "merge-fork.toml", tmp_path / "merge-exec.toml"
    merge_fork.write_text(on.read_text() + "merge_memory = true\n")
    merge_exec.write_text(off.read_text() + "merge_memory = true\n")
    server = start_fork_server(state)
    got = {}
    for cid, config in (("plain", on), ("fork", merge_fork), ("exec", merge_exec)):
        bundle = make_bundle(tmp_path / cid)
        res = start(ctd, cid, bundle, config)
        assert res.returncode == 0, res.stderr
        pid = daemon_of(socket_of(ctd, cid))
        reap.append(pid)
        got[cid] = _merge_any(pid)
    assert got == {"plain": "no", "fork": "yes", "exec": "yes"}
    assert _merge_any(server) == "no"           # the server serves every class: only the class's shims merge
