"""`ctr run --runtime io.containerd.rund.v2` end to end: a private containerd 1.6, the shim, a real sandbox VM
(QEMU, TCG here), the guest agent, and a locally built busybox image.

Every container costs a VM (a template clone when templates work, else a cold boot), so the checks that need a
running container share one (`box`)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

from integration.rund_leaks import leftovers, qemu_processes_of
from rund.shim import address

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]

RUNTIME = "io.containerd.rund.v2"
TIMEOUT = 300


def run(ctd, cid: str, *args: str, opts: tuple[str, ...] = (), check: bool = False):
    return ctd.ctr("run", "--rm", "--runtime", RUNTIME, *opts, ctd.image, cid, *args, check=check, timeout=TIMEOUT)


def wait_status(ctd, cid: str, status: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = ctd.ctr("task", "ls").stdout.decode()
        for line in out.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == cid and fields[-1] == status:
                return
        time.sleep(0.1)
    raise AssertionError(f"task {cid} not {status}: {out}")


def shim_socket(ctd, cid: str) -> str:
    return address.socket_path(address.socket_address(ctd.address, "default", cid))


def assert_gone(ctd, cid: str) -> None:
    deadline = time.monotonic() + 10
    while (left := leftovers(cid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == {}
    assert not os.path.exists(shim_socket(ctd, cid))


def test_run_prints_output_and_exits_with_the_guest_process_status(rund_containerd):
    res = run(rund_containerd, "hello", "sh", "-c", "echo hello from $(hostname); uname -r; echo err >&2; exit 3")
    out = res.stdout.decode().splitlines()
    assert res.returncode == 3, res.stderr.decode() + rund_containerd.log_tail()
    assert out[0] == "hello from hello"
    assert out[1] != os.uname().release and out[1].endswith("cloud-amd64")   # the guest's kernel, not the host's
    assert "err" in res.stderr.decode()
    assert_gone(rund_containerd, "hello")
    assert run(rund_containerd, "zero", "true").returncode == 0
    assert_gone(rund_containerd, "zero")


@contextlib.contextmanager
def running_in_foreground(ctd, cid: str, *args: str):
    """`ctr run --rm` attached, as a user runs it; yields once the task runs, the process to wait for."""
    proc = subprocess.Popen(["ctr", "--address", ctd.address, "run", "--rm", "--runtime", RUNTIME, ctd.image,
                             cid, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_status(ctd, cid, "RUNNING", TIMEOUT)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_kill_with_sigkill_exits_137(rund_containerd):
    with running_in_foreground(rund_containerd, "killed", "sleep", "600") as proc:
        rund_containerd.ctr("task", "kill", "-s", "KILL", "killed")
        assert proc.wait(60) == 137
    assert_gone(rund_containerd, "killed")


def test_terminal_run_sees_a_tty(rund_containerd):
    ctd = rund_containerd
    controller, tty = pty.openpty()
    fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", 37, 111, 0, 0))   # ctr forwards it (ResizePty)
    proc = subprocess.Popen(["ctr", "--address", ctd.address, "run", "-t", "--rm", "--runtime", RUNTIME, ctd.image,
                             "tty", "sh", "-c", "tty; sleep 1; stty size; exit 4"],
                            stdin=tty, stdout=tty, stderr=tty, start_new_session=True)
    os.close(tty)
    output = b""
    try:
        deadline = time.monotonic() + TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.2)[0]:
                try:
                    output += os.read(controller, 4096)
                except OSError:
                    break
        assert proc.wait(30) == 4, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    text = output.decode(errors="replace")
    assert re.search(r"/dev/pts/\d+", text), text
    assert re.search(r"^37 111\s*$", text, re.M), text


@pytest.fixture(scope="module")
def box(rund_containerd):
    """One long-running container for the checks that need one."""
    ctd = rund_containerd
    ctd.ctr("run", "-d", "--runtime", RUNTIME, ctd.image, "box", "sh", "-c",
            "trap 'exit 42' TERM; while true; do sleep 1; done", timeout=TIMEOUT)
    wait_status(ctd, "box", "RUNNING")
    yield "box"
    ctd.ctr("task", "kill", "-s", "KILL", "box", check=False)
    ctd.ctr("task", "delete", "-f", "box", check=False)
    ctd.ctr("container", "delete", "box", check=False)


def test_exec_has_its_own_output_and_exit_code(rund_containerd, box):
    res = rund_containerd.ctr("task", "exec", "--exec-id", "e1", box, "sh", "-c", "echo in-exec; exit 7",
                              check=False)
    assert res.returncode == 7 and res.stdout.decode() == "in-exec\n", res
    # the exec id can be reused once deleted
    res = rund_containerd.ctr("task", "exec", "--exec-id", "e1", box, "cat", "/proc/1/cmdline", check=False)
    assert res.returncode == 0 and b"sh" in res.stdout


def test_exec_with_stdin(rund_containerd, box):
    res = rund_containerd.ctr("task", "exec", "--exec-id", "cat", box, "sh", "-c", "wc -c", input=b"x" * 100000,
                              check=False)
    assert res.returncode == 0 and res.stdout.decode().strip() == "100000", res


def test_output_is_complete_when_the_process_exits(rund_containerd, box):
    res = rund_containerd.ctr("task", "exec", "--exec-id", "flood", box, "sh", "-c",
                              "seq 1 200000; seq 1 50000 >&2; exit 9", check=False)
    lines = res.stdout.decode().splitlines()
    assert res.returncode == 9 and len(lines) == 200000 and lines[-1] == "200000"
    assert res.stderr.decode().splitlines()[-1] == "50000"


def test_ps_lists_the_guest_processes(rund_containerd, box):
    out = rund_containerd.ctr("task", "ps", box).stdout.decode().splitlines()
    assert out[0].split()[0] == "PID"
    pids = [int(line.split()[0]) for line in out[1:]]
    assert len(pids) >= 2 and all(p > 1 for p in pids), out   # sh and its sleep, as the guest numbers them


def test_metrics_come_from_the_guest_cgroup(rund_containerd, box):
    out = rund_containerd.ctr("task", "metrics", box).stdout.decode()
    assert re.search(r"memory\.usage_in_bytes\s+\d+", out), out
    assert re.search(r"pids\.current\s+\d+", out) or "pids" in out, out


def test_pause_and_resume_the_vm(rund_containerd, box):
    ctd = rund_containerd
    ctd.ctr("task", "pause", box)
    wait_status(ctd, box, "PAUSED", 10)
    ctd.ctr("task", "resume", box)
    wait_status(ctd, box, "RUNNING", 10)
    assert ctd.ctr("task", "exec", "--exec-id", "after", box, "true", check=False).returncode == 0


def test_sigterm_reaches_the_container_init(rund_containerd, box):
    ctd = rund_containerd
    ctd.ctr("task", "kill", "-s", "TERM", box)
    wait_status(ctd, box, "STOPPED", 30)
    ctd.ctr("task", "delete", box)
    ctd.ctr("container", "delete", box)
    assert_gone(ctd, box)


def test_sequential_runs_leave_nothing_behind(rund_containerd):
    n = int(os.environ.get("RUND_E2E_RUNS", "20"))
    for i in range(n):
        cid = f"seq{i}"
        res = run(rund_containerd, cid, "echo", str(i))
        assert res.returncode == 0 and res.stdout.decode() == f"{i}\n", (res, rund_containerd.log_tail())
        assert_gone(rund_containerd, cid)


def test_a_shim_killed_with_sigkill_is_cleaned_up_by_delete(rund_containerd):
    ctd = rund_containerd
    ctd.ctr("run", "-d", "--runtime", RUNTIME, ctd.image, "orphan", "sleep", "600", timeout=TIMEOUT)
    wait_status(ctd, "orphan", "RUNNING")
    sock = shim_socket(ctd, "orphan")
    shim_pid = _listener_pid(sock)
    os.kill(shim_pid, signal.SIGKILL)
    # containerd notices the closed connection and runs `containerd-shim-rund-v2 delete`.
    deadline = time.monotonic() + 30
    while leftovers("orphan") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers("orphan") == {}
    ctd.ctr("task", "delete", "orphan", check=False)
    ctd.ctr("container", "delete", "orphan")


def _listener_pid(sock: str) -> int:
    """The pid of the process listening on the unix socket `sock` (the shim daemon)."""
    inode = None
    with open("/proc/net/unix") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[-1] == sock:
                inode = fields[6]
    assert inode, f"nobody listens on {sock}"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no process holds {sock}")


def test_a_vm_that_dies_makes_its_container_exit_255(rund_containerd):
    with running_in_foreground(rund_containerd, "doomed", "sleep", "600") as proc:
        (qemu,) = qemu_processes_of("doomed")
        os.kill(qemu, signal.SIGKILL)
        assert proc.wait(60) == 255
    assert_gone(rund_containerd, "doomed")


def test_runtime_config_path_selects_the_vm_shape(rund_containerd, tmp_path):
    cfg = tmp_path / "rund.toml"      # the other machine (microvm: rootfs on virtio-blk, no DAX), more memory
    cfg.write_text('[hypervisor]\nmachine = "microvm"\nmemory_mib = 384\n')
    res = run(rund_containerd, "shaped", "sh", "-c", "grep MemTotal /proc/meminfo; cat /proc/cmdline",
              opts=("--runtime-config-path", str(cfg)))
    assert res.returncode == 0, res
    mem_kib = int(res.stdout.split()[1])
    assert 256 * 1024 < mem_kib <= 384 * 1024, res.stdout     # more than the default VM's 256 MiB could show
    assert b"rund.root=/dev/vda" in res.stdout
    assert_gone(rund_containerd, "shaped")


def test_an_invalid_runtime_config_is_a_clear_error(rund_containerd, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[hypervisor]\nmemroy_mib = 384\n")
    res = run(rund_containerd, "badcfg", "true", opts=("--runtime-config-path", str(cfg)))
    assert res.returncode != 0
    assert "unknown key 'memroy_mib'" in res.stderr.decode() and "invalid argument" in res.stderr.decode(), res
    assert_gone(rund_containerd, "badcfg")


def test_containers_of_one_pod_share_one_vm(rund_containerd):
    """CRI's grouping, driven through ctr with CRI's annotations: app containers join the sandbox's VM, one with
    the same image (shared rootfs slot), one with another image (hotplugged into the running VM)."""
    ctd = rund_containerd

    def start(cid: str, kind: str, *args: str, image: str = ctd.image) -> None:
        ctd.ctr("run", "-d", "--runtime", RUNTIME, "--annotation", f"io.kubernetes.cri.container-type={kind}",
                "--annotation", "io.kubernetes.cri.sandbox-id=pod1", image, cid, *args, timeout=TIMEOUT)
        wait_status(ctd, cid, "RUNNING")

    def boot_id(cid: str) -> str:
        res = ctd.ctr("task", "exec", "--exec-id", f"b-{cid}", cid, "cat", "/proc/sys/kernel/random/boot_id")
        return res.stdout.decode().strip()

    start("pod1", "sandbox", "sleep", "600")
    start("app1", "container", "sleep", "600")
    start("app2", "container", "sleep", "600", image=ctd.other_image)   # another image: hotplugged into the VM
    assert boot_id("pod1") == boot_id("app1") == boot_id("app2")      # one guest kernel
    assert len(qemu_processes_of("pod1")) == 1
    res = ctd.ctr("task", "exec", "--exec-id", "img", "app2", "cat", "/etc/rund-image")
    assert res.stdout == b"other\n"
    assert ctd.ctr("task", "exec", "--exec-id", "img", "app1", "cat", "/etc/rund-image", check=False).returncode
    for cid in ("app2",):
        ctd.ctr("task", "kill", "-s", "KILL", cid)
        wait_status(ctd, cid, "STOPPED")
        ctd.ctr("task", "delete", cid)
        ctd.ctr("container", "delete", cid)
    # The app container goes; the pod's VM and its sandbox container stay.
    ctd.ctr("task", "kill", "-s", "KILL", "app1")
    wait_status(ctd, "app1", "STOPPED")
    ctd.ctr("task", "delete", "app1")
    ctd.ctr("container", "delete", "app1")
    assert boot_id("pod1") and len(qemu_processes_of("pod1")) == 1
    ctd.ctr("task", "kill", "-s", "KILL", "pod1")
    wait_status(ctd, "pod1", "STOPPED")
    ctd.ctr("task", "delete", "pod1")
    ctd.ctr("container", "delete", "pod1")
    assert_gone(ctd, "pod1")


def test_a_bind_mounted_host_file_and_directory_reach_the_container(rund_containerd, tmp_path):
    greeting = tmp_path / "greeting"
    greeting.write_text("hello from the host\n")
    res = run(rund_containerd, "binds", "sh", "-c", "cat /etc/greeting; ls /data 2>&1 || true",
              opts=("--mount", f"type=bind,src={greeting},dst=/etc/greeting,options=rbind:ro",
                    "--mount", f"type=bind,src={tmp_path},dst=/data,options=rbind:ro"))
    assert res.returncode == 0, res
    lines = res.stdout.decode().splitlines()
    assert lines[0] == "hello from the host"
    assert lines[1] == "greeting"                      # the directory: shared into the VM (a pod volume)
    assert_gone(rund_containerd, "binds")
