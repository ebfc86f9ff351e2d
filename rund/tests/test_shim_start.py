"""`containerd-shim-rund-v2 ... start` as containerd runs it: a real subprocess of the shim binary in a bundle,
its daemon, and its socket under /run/containerd/s (so: root). No VM: none of these tests sends a Create.

What they hold: every id is checked before it names a path; the socket is 0600; a daemon whose `start` failed
or that nobody uses exits and removes its socket; a live socket is adopted only from a shim of the same containerd
whose bundle still exists, and a stale one is retired first.

Every test runs twice: `start` in-process (`[shim] fork_server = false`) and through a fork server of the module's
own state dir (the config reaches `start` as containerd passes it: runtime options on stdin, ConfigPath).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from proto import ttrpc
from proto.gen.containerd.task.v2 import shim_pb2
from rund.procfs import argvs
from rund.shim import address, client, forkserver, idle, peer

SHIM = Path(sys.executable).parent / "containerd-shim-rund-v2"
NS = "rundtest"
IDLE = 3.0

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (shim sockets live in /run/containerd/s)")]


START_STDIN = {"input": b"", "mode": "exec"}


def options_any(config_path: str) -> bytes:
    """runtimeoptions.v1.Options{ConfigPath} in a google.protobuf.Any: what containerd writes to start's stdin."""
    from google.protobuf import any_pb2
    from proto.gen.runtimeoptions.v1 import api_pb2
    return any_pb2.Any(type_url="runtimeoptions.v1.Options",
                       value=api_pb2.Options(config_path=config_path).SerializeToString()).SerializeToString()


def start_fork_server(state: Path) -> int:
    """A fork server for `state`, up and listening; its pid."""
    client.spawn_server(str(state))
    sock = forkserver.paths(str(state))[0]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (shim := peer.probe(sock) if os.path.exists(sock) else None) is not None:
            return shim.pid
        time.sleep(0.05)
    raise AssertionError(f"no fork server on {sock}")


def stop_fork_server(state: Path) -> None:
    """Every fork server of `state` (also one still importing, or one whose socket a test removed)."""
    pids = []
    for pid, argv in argvs():
        if b"rund.shim.forkserver" in argv and os.fsencode(str(state)) in argv:
            pids.append(pid)
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(scope="module", params=["exec", "fork-server"], autouse=True)
def start_mode(request, tmp_path_factory):
    fork = request.param == "fork-server"
    d = tmp_path_factory.mktemp("shim-config")
    state = d / "state"
    cfg = d / "config.toml"
    cfg.write_text(f'state_dir = "{state}"\n[shim]\nfork_server = {str(fork).lower()}\n')
    START_STDIN.update(input=options_any(str(cfg)), mode=request.param)
    if fork:
        start_fork_server(state)
    try:
        yield request.param
    finally:
        START_STDIN.update(input=b"", mode="exec")
        stop_fork_server(state)
        if fork:
            assert "changed on disk" not in (state / "shim-server.log").read_text()


@pytest.fixture
def ctd(tmp_path):
    """A containerd address nobody listens on: unique per test, so are its shim sockets."""
    return f"/tmp/rund-test-{uuid.uuid4().hex[:12]}/containerd.sock"


def make_bundle(path: Path, annotations: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "annotations": annotations or {}}))
    return path


def run_start(ctd: str, cid: str, bundle: Path, namespace: str = NS, idle_timeout: float = IDLE):
    env = {**os.environ, idle.ENV: str(idle_timeout)}
    return subprocess.run([str(SHIM), "-namespace", namespace, "-address", ctd, "-publish-binary", "/bin/true",
                           "-id", cid, "start"], cwd=bundle, env=env, capture_output=True, timeout=60,
                          input=START_STDIN["input"])


def socket_of(ctd: str, group: str, namespace: str = NS) -> str:
    return address.socket_path(address.socket_address(ctd, namespace, group))


def daemon_of(path: str) -> int:
    shim = peer.probe(path)
    assert shim is not None, f"nothing listens on {path}"
    return shim.pid


def wait_gone(pid: int, path: str, timeout: float) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if not os.path.exists(f"/proc/{pid}") and not os.path.exists(path):
            return time.monotonic() - began
        time.sleep(0.05)
    raise AssertionError(f"shim {pid} still there after {timeout}s (socket exists: {os.path.exists(path)})")


@pytest.fixture
def reap():
    """Stop what a test left listening: SIGTERM (the shim removes its socket), SIGKILL if it does not go."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 10
    for pid in pids:
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def started(ctd, cid, bundle, reap, **kw) -> tuple[str, int]:
    """A started (or adopted) shim. Its log (a file here, a FIFO under containerd) tells which path made it."""
    log = bundle / "log"
    log.touch()
    res = run_start(ctd, cid, bundle, **kw)
    assert res.returncode == 0, res.stderr.decode()
    path = socket_of(ctd, cid)
    assert res.stdout.decode() == f"unix://{path}" == (bundle / "address").read_text()
    pid = daemon_of(path)
    reap.append(pid)
    deadline = time.monotonic() + 10
    while "serving sandbox" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    by = "the fork server" if START_STDIN["mode"] == "fork-server" else "started by start"
    assert by in log.read_text(), log.read_text()
    return path, pid


# ---- the socket and the daemon's life --------------------------------------------------------------------------


def test_the_socket_is_private_and_an_unused_daemon_exits(ctd, tmp_path, reap):
    path, pid = started(ctd, "c1", make_bundle(tmp_path / "b"), reap)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.readlink(f"/proc/{pid}/cwd") == str(tmp_path / "b")
    took = wait_gone(pid, path, IDLE + 10)
    assert took >= IDLE - 1.5


def test_a_shim_whose_calls_ended_and_that_has_no_task_exits(ctd, tmp_path, reap):
    path, pid = started(ctd, "c1", make_bundle(tmp_path / "b"), reap, idle_timeout=4.0)

    async def call_then_leave():
        async with await ttrpc.Client.connect_unix(path) as client:
            task = ttrpc.Stub(client, shim_pb2.DESCRIPTOR.services_by_name["Task"])
            with pytest.raises(ttrpc.NotFound):
                await task.State(shim_pb2.StateRequest(id="c1"), timeout=5)
    time.sleep(2.5)
    asyncio.run(call_then_leave())              # a call resets the clock
    began = time.monotonic()
    wait_gone(pid, path, 15)
    assert time.monotonic() - began >= 2.5


def test_a_start_that_fails_after_fork_takes_its_daemon_along(ctd, tmp_path):
    bundle = make_bundle(tmp_path / "b")
    (bundle / "address").mkdir()                # writing the address file fails, after the daemon forked
    (bundle / "address" / "x").write_text("")
    res = run_start(ctd, "c1", bundle, idle_timeout=60)
    assert res.returncode == 1 and b"rund start:" in res.stderr
    path = socket_of(ctd, "c1")
    def daemons() -> list[str]:
        return [p for p in os.listdir("/proc") if p.isdigit() and _cwd(p) == str(bundle)]

    deadline = time.monotonic() + 5             # at once, not after the idle timeout
    while (os.path.exists(path) or daemons()) and time.monotonic() < deadline:
        time.sleep(0.05)                        # the socket goes a moment before the process does
    assert not os.path.exists(path)
    assert not daemons()


def _cwd(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


# ---- adopting a live socket ------------------------------------------------------------------------------------


def test_a_second_start_in_the_same_bundle_adopts_the_shim(ctd, tmp_path, reap):
    bundle = make_bundle(tmp_path / "b")
    path, pid = started(ctd, "c1", bundle, reap, idle_timeout=60)
    again, pid2 = started(ctd, "c1", bundle, reap, idle_timeout=60)
    assert (again, pid2) == (path, pid)


def test_a_stale_shim_of_a_removed_bundle_is_retired_not_adopted(ctd, tmp_path, reap):
    bundle = make_bundle(tmp_path / "b")
    path, old = started(ctd, "c1", bundle, reap, idle_timeout=60)
    shutil.rmtree(bundle)                       # containerd gave up on that start and removed the bundle
    make_bundle(bundle)
    again, new = started(ctd, "c1", bundle, reap, idle_timeout=60)
    assert again == path and new != old
    assert os.readlink(f"/proc/{new}/cwd") == str(bundle)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{old}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{old}")


@pytest.mark.parametrize("accepting", [True, False], ids=["accepting", "stuck"])
def test_a_socket_served_by_something_else_is_refused_and_left_alone(ctd, tmp_path, accepting):
    """Another program listens there (this test): not a shim of this containerd. One that does not even accept
    (its backlog full) is neither adopted nor mistaken for a dead socket."""
    path = socket_of(ctd, "c1")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(path)
        other.listen(16 if accepting else 0)
        ours = os.stat(path).st_ino
        held = []
        if accepting:
            threading.Thread(target=_accept_forever, args=(other,), daemon=True).start()
        else:
            held = _fill_backlog(path)
        try:
            res = run_start(ctd, "c1", make_bundle(tmp_path / "b"))
            want = b"cannot be identified" if accepting else b"does not accept"
            assert res.returncode == 1 and want in res.stderr, res.stderr
            assert os.stat(path).st_ino == ours
        finally:
            os.unlink(path)
            for s in held:
                s.close()


def _accept_forever(listener: socket.socket) -> None:
    try:
        while True:
            listener.accept()[0].close()
    except OSError:
        return


def _fill_backlog(path: str) -> list[socket.socket]:
    held = []
    while True:
        s = socket.socket(socket.AF_UNIX)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            return held
        held.append(s)


def test_a_pod_member_joins_only_a_sandbox_shim_whose_bundle_exists(ctd, tmp_path, reap):
    pod = {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "pod1"}
    member = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "pod1"}
    sandbox = make_bundle(tmp_path / "pod1", pod)
    path, pid = started(ctd, "pod1", sandbox, reap, idle_timeout=60)
    app = make_bundle(tmp_path / "app1", member)
    res = run_start(ctd, "app1", app)
    assert res.returncode == 0 and res.stdout.decode() == f"unix://{path}", res.stderr
    shutil.rmtree(sandbox)
    res = run_start(ctd, "app2", make_bundle(tmp_path / "app2", member))
    assert res.returncode == 1 and b"bundle was removed" in res.stderr, res.stderr
    assert daemon_of(path) == pid               # refused, not touched


def test_a_pod_member_is_answered_by_the_thin_start_and_its_errors_by_the_start_as_before(ctd, tmp_path, reap):
    """member.py: the sandbox's address from the `start` process itself (no fork server, no runtime imports), with
    the fork server on or off; a start it cannot answer goes the old way and fails in the old words."""
    pod = {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "pod2"}
    member = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "pod2"}
    path, pid = started(ctd, "pod2", make_bundle(tmp_path / "pod2", pod), reap, idle_timeout=60)
    app = make_bundle(tmp_path / "app", member)
    env = {**os.environ, idle.ENV: "60", "PYTHONPROFILEIMPORTTIME": "1"}
    res = subprocess.run([str(SHIM), "-namespace", NS, "-address", ctd, "-publish-binary", "/bin/true", "-id", "app",
                          "start"], cwd=app, env=env, capture_output=True, timeout=60, input=START_STDIN["input"])
    assert res.returncode == 0 and res.stdout.decode() == f"unix://{path}" == (app / "address").read_text()
    imported = {line.split("|")[-1].strip() for line in res.stderr.decode().splitlines()}
    assert "rund.shim.member" in imported
    assert not imported & {"rund.shim.start", "asyncio", "tomllib", "json", "re", "socket", "dataclasses"}, imported
    assert sorted(p.name for p in app.iterdir()) == ["address", "config.json"]
    res = run_start(ctd, "app3", make_bundle(tmp_path / "app3", {**member, "io.kubernetes.cri.sandbox-id": "nopod"}))
    assert res.returncode == 1 and b"sandbox nopod of container app3 has no running rund shim" in res.stderr
    res = run_start(ctd, "app4", make_bundle(tmp_path / "app4", member), idle_timeout=-1)
    assert res.returncode == 1 and b"must be positive" in res.stderr
    assert daemon_of(path) == pid


# ---- hostile ids -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../../../tmp/victim", ".", "..", "a/b", "x" * 77, "a\x01b"])
@pytest.mark.parametrize("where", ["id", "namespace", "annotation"])
def test_a_bad_id_is_refused_before_any_socket_or_file(ctd, tmp_path, bad, where):
    ann = {"io.kubernetes.cri.sandbox-id": bad} if where == "annotation" else {}
    bundle = make_bundle(tmp_path / "b", ann)
    cid = bad if where == "id" else "c1"
    namespace = bad if where == "namespace" else NS
    res = run_start(ctd, cid, bundle, namespace=namespace)
    assert res.returncode == 1 and res.stdout == b""
    assert b"not a valid identifier" in res.stderr or b"characters long" in res.stderr, res.stderr
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json"]
    for group in (bad, "c1"):
        assert not os.path.exists(socket_of(ctd, group, namespace))
