"""What Kubernetes expects of a pod, through CRI, for `runc` and `rund` in the same run: the pod's containers share
its network, IPC and UTS namespaces (and PID when the pod asks), talk over localhost, share /dev/shm; loopback is up;
stop honours TERM; an exec of a missing binary fails at once; resource updates reach the container's cgroup; killing
the sandbox ends the pod. A rund failure where runc passes is rund's."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time

import grpc
import pytest

from integration.cri.client import api, container_config, sandbox_config
from integration.rund_leaks import STATE_DIR, leftovers, pod_cgroups_of
from integration.test_cri_pods import HANDLERS, Steps, wait_for
from rund.shim import address

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]


@contextlib.contextmanager
def pod(cri, ctd, handler: str, name: str, **config):
    """A running pod; yields (sandbox id, its config, a Steps for failures); removed afterwards."""
    pod_config = sandbox_config(name, log_directory=str(ctd.log_dir / name), **config)
    step = Steps(ctd, handler)
    with step("RunPodSandbox"):
        sid = cri.run_pod_sandbox(pod_config, handler)
    step.ids.append(sid)
    try:
        yield sid, pod_config, step
    finally:
        with contextlib.suppress(grpc.RpcError):
            cri.remove_pod(sid)


def start(cri, step, sid, pod_config, name: str, image: str, script: str, **config) -> str:
    with step(f"CreateContainer {name}"):
        cid = cri.create_container(sid, container_config(name, image, ["sh", "-c", script], **config), pod_config)
    step.ids.append(cid)
    with step(f"StartContainer {name}"):
        cri.start_container(cid)
    return cid


def sh(cri, cid: str, script: str, timeout: int = 60) -> str:
    res = cri.exec_sync(cid, ["sh", "-c", script], timeout=timeout)
    assert res.exit_code == 0, (script, res.stdout, res.stderr)
    return res.stdout.decode().strip()


@pytest.mark.parametrize("handler", HANDLERS)
def test_containers_of_a_pod_share_its_namespaces_localhost_shm_and_hostname(cri, cri_containerd, handler):
    ctd = cri_containerd
    with pod(cri, ctd, handler, f"share-{handler}", pid=api.POD) as (sid, config, step):
        web = start(cri, step, sid, config, "web", ctd.image,
                    "echo served > /tmp/index.html; exec httpd -f -p 127.0.0.1:8080 -h /tmp",
                    pid=api.POD)
        client = start(cri, step, sid, config, "client", ctd.image, "exec sleep 600", pid=api.POD)
        with step("shared namespaces"):
            for ns in ("net", "ipc", "uts", "pid"):
                a, b = (sh(cri, c, f"readlink /proc/self/ns/{ns}") for c in (web, client))
                assert a == b, f"{ns}: {a} != {b}"
        with step("localhost between containers"):
            got = wait_for(lambda: cri.exec_sync(client, ["wget", "-qO-", "http://127.0.0.1:8080/index.html"],
                                                 timeout=30).stdout, 30, "the web container to answer")
            assert got == b"served\n"
        with step("loopback up"):
            flags = sh(cri, client, "ip -o link show lo").split("<", 1)[1].split(">", 1)[0].split(",")
            assert "UP" in flags, flags
        with step("/dev/shm writable and shared"):
            sh(cri, web, "echo note > /dev/shm/shared")
            assert sh(cri, client, "cat /dev/shm/shared") == "note"
            assert sh(cri, client, "grep ' /dev/shm ' /proc/mounts | cut -d' ' -f3") == "tmpfs"
        with step("hostname"):
            assert sh(cri, web, "hostname") == sh(cri, client, "hostname") == f"share-{handler}"
        with step("shared PID namespace: the other container's processes are visible"):
            assert "httpd" in sh(cri, client, "ps -o comm")


@pytest.mark.parametrize("handler", HANDLERS)
def test_stop_honours_term_and_kills_what_ignores_it(cri, cri_containerd, handler):
    ctd = cri_containerd
    with pod(cri, ctd, handler, f"stop-{handler}") as (sid, config, step):
        handles = start(cri, step, sid, config, "handles", ctd.image,
                        "trap 'exit 0' TERM; while true; do sleep 0.2; done")
        ignores = start(cri, step, sid, config, "ignores", ctd.image, "exec sleep 600")   # PID 1: TERM ignored
        with step("StopContainer of a TERM-handling process"):
            t0 = time.monotonic()
            cri.stop_container(handles, timeout=30)
            took = time.monotonic() - t0
            st = cri.container_status(handles).status
            assert (st.state, st.exit_code) == (api.CONTAINER_EXITED, 0) and took < 10, (st, took)
        with step("StopContainer of a TERM-ignoring PID 1"):
            t0 = time.monotonic()
            cri.stop_container(ignores, timeout=2)
            took = time.monotonic() - t0
            st = cri.container_status(ignores).status
            assert (st.state, st.exit_code) == (api.CONTAINER_EXITED, 137) and 1.5 < took < 15, (st, took)


@pytest.mark.parametrize("handler", HANDLERS)
def test_in_a_shared_pid_namespace_term_ends_a_plain_process_at_once(cri, cri_containerd, handler):
    ctd = cri_containerd
    with pod(cri, ctd, handler, f"pidpod-{handler}", pid=api.POD) as (sid, config, step):
        cid = start(cri, step, sid, config, "sleeper", ctd.image, "exec sleep 600", pid=api.POD)
        with step("StopContainer: not PID 1, TERM's default action ends it"):
            t0 = time.monotonic()
            cri.stop_container(cid, timeout=10)
            took = time.monotonic() - t0
            st = cri.container_status(cid).status
            assert (st.state, st.exit_code) == (api.CONTAINER_EXITED, 143) and took < 5, (st, took)


@pytest.mark.parametrize("handler", HANDLERS)
def test_exec_of_a_missing_binary_fails_at_once_and_updates_reach_the_cgroup(cri, cri_containerd, handler):
    ctd = cri_containerd
    with pod(cri, ctd, handler, f"exec-{handler}") as (sid, config, step):
        cid = start(cri, step, sid, config, "app", ctd.image, "exec sleep 600")
        with step("ExecSync of a missing binary"):
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError):
                cri.exec_sync(cid, ["/no/such/binary"], timeout=30)
            assert time.monotonic() - t0 < 3
            assert sh(cri, cid, "echo still") == "still"
        with step("UpdateContainerResources read back in the container"):
            cri.update_container_resources(cid, api.LinuxContainerResources(
                memory_limit_in_bytes=200 << 20, cpu_period=100000, cpu_quota=50000))
            memory = sh(cri, cid, "cat /sys/fs/cgroup/memory.max 2>/dev/null || "
                                  "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
            assert int(memory) == 200 << 20
            cpu = sh(cri, cid, "cat /sys/fs/cgroup/cpu.max 2>/dev/null || "
                               "echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)")
            assert cpu.split() == ["50000", "100000"]


@pytest.mark.parametrize("handler", HANDLERS)
def test_memory_a_container_uses_its_limit_and_one_without_a_limit_allocates_100_mb(cri, cri_containerd, handler):
    ctd = cri_containerd
    with pod(cri, ctd, handler, f"mem-{handler}") as (sid, config, step):
        limited = start(cri, step, sid, config, "limited", ctd.image, "exec sleep 600", memory_limit=400 << 20)
        free = start(cri, step, sid, config, "free", ctd.image, "exec sleep 600")
        with step("a container with a 400 MiB limit allocates 300 MiB"):
            sh(cri, limited, "dd if=/dev/zero of=/dev/null bs=300M count=1")
        with step("a container without a limit allocates 100 MB"):
            sh(cri, free, "dd if=/dev/zero of=/dev/null bs=100M count=1")


@pytest.mark.parametrize("handler", HANDLERS)
def test_a_killed_sandbox_ends_the_pod_and_nothing_is_left(cri, cri_containerd, handler):
    ctd = cri_containerd
    with pod(cri, ctd, handler, f"kill-{handler}") as (sid, config, step):
        cid = start(cri, step, sid, config, "app", ctd.image, "exec sleep 600")
        with step("kill the sandbox container"):
            ctd.ctr("task", "kill", "-s", "SIGKILL", sid, namespace="k8s.io")
            wait_for(lambda: cri.pod_sandbox_status(sid).status.state == api.SANDBOX_NOTREADY, 60,
                     "the pod to be NOTREADY")
        if handler == "rund":
            with step("the pod's other containers exit with it (one VM, one pod)"):
                wait_for(lambda: cri.container_status(cid).status.state == api.CONTAINER_EXITED, 60,
                         "the app container to exit")
                assert cri.container_status(cid).status.exit_code == 137
        with step("StopPodSandbox and RemovePodSandbox"):
            cri.remove_pod(sid)
            assert cri.list_containers(pod_sandbox_id=sid) == []
        if handler == "rund":
            with step("nothing left, the pod's shim gone"):
                wait_for(lambda: leftovers(sid, "k8s.io") == {}, 15, f"leftovers {leftovers(sid, 'k8s.io')}")
                sock = address.socket_path(address.socket_address(ctd.address, "k8s.io", sid))
                wait_for(lambda: not os.path.exists(sock), 15, f"the pod's shim socket {sock} to go")


def test_a_crashed_rund_shim_leaves_nothing_behind(cri, cri_containerd):
    """kill -9 of a pod's shim: containerd runs the shim's `delete`, which kills the VM and removes what the records
    name (the VMM's cgroup in the pod's cgroupsPath among them); the pod reads NOTREADY and is removable."""
    ctd = cri_containerd
    with pod(cri, ctd, "rund", "crash-rund") as (sid, config, step):
        start(cri, step, sid, config, "app", ctd.image, "exec sleep 600")
        assert pod_cgroups_of(sid), "the VMM runs in the pod's cgroupsPath"
        with step("kill -9 the pod's shim"):
            record = json.loads((STATE_DIR / "k8s.io" / sid / "sandbox.json").read_text())
            os.kill(record["shim_pid"], signal.SIGKILL)
            wait_for(lambda: cri.pod_sandbox_status(sid).status.state == api.SANDBOX_NOTREADY, 60,
                     "the pod to be NOTREADY")
        with step("StopPodSandbox and RemovePodSandbox"):
            cri.remove_pod(sid)
        with step("nothing left: VM, state, cgroups"):
            wait_for(lambda: leftovers(sid, "k8s.io") == {}, 15, f"leftovers {leftovers(sid, 'k8s.io')}")


@pytest.mark.parametrize("handler", HANDLERS)
def test_a_host_network_pod_has_the_nodes_hostname(cri, cri_containerd, handler):
    """A VM cannot share the node's network: a rund hostNetwork pod runs with the VM's own network (documented);
    like runc's, it sees the node's hostname, since it asked for the node's UTS namespace."""
    ctd = cri_containerd
    with pod(cri, ctd, handler, f"hostnet-{handler}", network=api.NODE, hostname="") as (sid, config, step):
        cid = start(cri, step, sid, config, "app", ctd.image, "exec sleep 600", network=api.NODE)
        with step("hostname"):
            assert sh(cri, cid, "hostname") == socket.gethostname()
