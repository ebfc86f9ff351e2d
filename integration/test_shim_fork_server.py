"""The shim fork server end to end (issues 17, 18): `ctr run` through rund with `[shim] fork_server` on and off, a
real containerd 1.6 and real VMs. The config reaches `start` as containerd passes it (--runtime-config-path: the
runtime options on start's stdin), so these tests do not depend on /etc/rund/config.toml.

With the server on, the pod's shim is forked by the state dir's fork server but is not its child; killing the server
(-9) while a task runs changes nothing for that task; the next start works (in-process) and brings a new server."""
from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from integration.rund_leaks import STATE_DIR, leftovers
from rund.shim import address, forkserver, peer

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]

RUNTIME = "io.containerd.rund.v2"
TIMEOUT = 300
SERVER_SOCKET = forkserver.paths(str(STATE_DIR))[0]


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    d = tmp_path_factory.mktemp("rund-config")
    on, off = d / "fork-on.toml", d / "fork-off.toml"
    on.write_text("[shim]\nfork_server = true\n")
    off.write_text("[shim]\nfork_server = false\n")
    return {"on": str(on), "off": str(off)}


def server_pid() -> int | None:
    return forkserver.server_pid(SERVER_SOCKET)


def wait_server(timeout: float = 60) -> int:
    return forkserver.wait_server(SERVER_SOCKET, timeout)


def shim_of(ctd, cid: str) -> int:
    shim = peer.probe(address.socket_path(address.socket_address(ctd.address, "default", cid)))
    assert shim is not None, f"no shim for {cid}"
    return shim.pid


def ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return int(s[s.rindex(")") + 2:].split()[1])


def run(ctd, cid: str, config: str, *args: str, detach: bool = False):
    opts = ("-d",) if detach else ("--rm",)
    return ctd.ctr("run", *opts, "--runtime", RUNTIME, "--runtime-config-path", config, ctd.image, cid, *args,
                   check=False, timeout=TIMEOUT)


def remove(ctd, cid: str) -> None:
    ctd.ctr("task", "kill", "-s", "KILL", cid, check=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and cid in ctd.ctr("task", "ls", check=False).stdout.decode():
        if ctd.ctr("task", "rm", "-f", cid, check=False).returncode == 0:
            break
        time.sleep(0.2)
    ctd.ctr("containers", "rm", cid, check=False)


def assert_gone(cid: str) -> None:
    deadline = time.monotonic() + 15
    while (left := leftovers(cid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == {}


@pytest.mark.parametrize("mode", ["on", "off"])
def test_ctr_run_prints_output_with_the_fork_server_on_and_off(rund_containerd, configs, mode):
    ctd = rund_containerd
    cid = f"fs-{mode}-{uuid.uuid4().hex[:6]}"
    if mode == "on":
        wait_server_soon = server_pid() is None
        run(ctd, f"warm-{cid}", configs["on"], "true")      # the first start with no server spawns one
        if wait_server_soon:
            wait_server()
    res = run(ctd, cid, configs[mode], "sh", "-c", "echo hello from rund; exit 3")
    assert res.returncode == 3 and b"hello from rund" in res.stdout, res.stderr.decode() + ctd.log_tail()
    logged = ctd.log_path.read_text(errors="replace")
    by_server = [line for line in logged.splitlines() if f"serving sandbox {cid}" in line]
    assert by_server and (("the fork server" in by_server[-1]) == (mode == "on")), by_server
    assert_gone(cid)


def test_killing_the_fork_server_leaves_a_running_task_alone(rund_containerd, configs):
    ctd = rund_containerd
    cid = f"fs-kill-{uuid.uuid4().hex[:6]}"
    if server_pid() is None:
        run(ctd, f"warm-{cid}", configs["on"], "true")
    server = wait_server()
    try:
        res = run(ctd, cid, configs["on"], "sleep", "600", detach=True)
        assert res.returncode == 0, res.stderr.decode() + ctd.log_tail()
        shim = shim_of(ctd, cid)
        assert ppid(shim) != server and ppid(shim) != ctd.proc.pid
        exec1 = ctd.ctr("task", "exec", "--exec-id", "e1", cid, "echo", "before", check=False, timeout=TIMEOUT)
        assert exec1.returncode == 0 and exec1.stdout.strip() == b"before", exec1.stderr

        os.kill(server, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{server}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{server}")

        exec2 = ctd.ctr("task", "exec", "--exec-id", "e2", cid, "echo", "after", check=False, timeout=TIMEOUT)
        assert exec2.returncode == 0 and exec2.stdout.strip() == b"after", exec2.stderr
        assert shim_of(ctd, cid) == shim
        assert b"RUNNING" in ctd.ctr("task", "ls").stdout

        fresh = f"fs-fresh-{uuid.uuid4().hex[:6]}"    # no server: today's path, and a new server spawned
        res = run(ctd, fresh, configs["on"], "echo", "fresh start")
        assert res.returncode == 0 and b"fresh start" in res.stdout, res.stderr.decode() + ctd.log_tail()
        new = wait_server()
        assert new != server
        later = f"fs-later-{uuid.uuid4().hex[:6]}"
        res = run(ctd, later, configs["on"], "echo", "through the new server")
        assert res.returncode == 0 and b"through the new server" in res.stdout, res.stderr.decode()
        assert any(f"serving sandbox {later}" in line and f"the fork server (pid {new})" in line
                   for line in ctd.log_path.read_text(errors="replace").splitlines())
        for c in (fresh, later):
            assert_gone(c)
    finally:
        remove(ctd, cid)
    assert_gone(cid)
