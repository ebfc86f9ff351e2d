"""Pods through Kubernetes' CRI, side by side: containerd 1.6's CRI plugin with runtime handlers `runc` and `rund`
in one private containerd (integration/conftest.py `cri_containerd`), driven by our CRI client
(integration/cri/client.py). What runc does is what a pod is expected to do; a rund failure where runc passes is
rund's, and the failure names the CRI step and carries containerd's log lines about the pod (the shim's included).
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import time

import grpc
import pytest

from integration.cri.client import api, container_config, log_lines, parse_log, sandbox_config
from integration.rund_leaks import leftovers
from rund.shim import address

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]

HANDLERS = ["runc", "rund"]
CRI_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")   # RFC 3339 (Go's Nano)


class Steps:
    """Names the CRI step that failed, with containerd's log lines about the pod and its containers."""

    def __init__(self, ctd, handler: str):
        self.ctd, self.handler, self.ids = ctd, handler, []
        self.log_start = ctd.log_path.stat().st_size

    @contextlib.contextmanager
    def __call__(self, name: str):
        try:
            yield
        except (AssertionError, grpc.RpcError, TimeoutError) as e:
            detail = f"{e.code().name}: {e.details()}" if isinstance(e, grpc.RpcError) else str(e)
            raise AssertionError(f"[{self.handler}] {name} failed: {detail}\n--- containerd log (this pod):\n"
                                 f"{self.log()}") from e

    def log(self, limit: int = 60) -> str:
        with open(self.ctd.log_path, errors="replace") as f:
            f.seek(self.log_start)
            lines = f.read().splitlines()
        keep = [ln for ln in lines if any(i[:12] in ln for i in self.ids) or "level=error" in ln
                or "level=ERROR" in ln or "level=WARNING" in ln or "level=warning" in ln]
        return "\n".join(keep[-limit:])


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return value


def read(path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def test_cri_serves_v1_with_both_handlers_and_our_images(cri, cri_containerd):
    v = cri.version()
    assert (v.runtime_name, v.runtime_api_version) == ("containerd", "v1")
    assert cri.conditions() == {"RuntimeReady": True, "NetworkReady": True}
    config = json.loads(cri.status(verbose=True).info["config"])
    assert set(config["containerd"]["runtimes"]) == {"runc", "rund"}
    assert config["containerd"]["runtimes"]["rund"]["runtimeType"] == "io.containerd.rund.v2"
    assert config["restrictOOMScoreAdj"] is True
    assert config["sandboxImage"] == cri_containerd.sandbox_image
    tags = {t for img in cri.list_images() for t in img.repo_tags}
    assert {cri_containerd.image, cri_containerd.sandbox_image} <= tags
    pause = cri.image_status(cri_containerd.sandbox_image)
    assert pause.size > 0 and pause.uid.value == 65535
    assert cri.image_status("docker.io/library/absent:none") is None


@pytest.mark.parametrize("handler", HANDLERS)
def test_pod_lifecycle_logs_exec_and_nothing_left(cri, cri_containerd, handler):
    ctd, net = cri_containerd, cri_containerd.network
    name = f"life-{handler}"
    log_dir = ctd.log_dir / name
    pod = sandbox_config(name, log_directory=str(log_dir))
    step = Steps(ctd, handler)
    sid = cid = None
    try:
        with step("RunPodSandbox"):
            sid = cri.run_pod_sandbox(pod, handler)
            step.ids.append(sid)
        with step("PodSandboxStatus"):
            res = cri.pod_sandbox_status(sid, verbose=True)
            status, info = res.status, json.loads(res.info["info"])
            assert status.state == api.SANDBOX_READY and status.runtime_handler == handler
            assert status.network.ip.startswith(f"10.88.{net.index}.")
            assert [ipaddress.ip_address(a.ip) in net.subnet6 for a in status.network.additional_ips] == [True]
            netns = info["runtimeSpec"]["linux"]["namespaces"]
            netns_path = next(ns["path"] for ns in netns if ns["type"] == "network")
            assert os.path.exists(netns_path)
        with step("CreateContainer"):
            cid = cri.create_container(sid, container_config("app", ctd.image, ["sh", "-c", "echo hello; sleep 600"]),
                                       pod)
            step.ids.append(cid)
        with step("StartContainer"):
            cri.start_container(cid)
        with step("container log"):
            log = log_dir / "app.log"
            wait_for(lambda: "hello" in log_lines(read(log)), 30, f"'hello' in {log}")
            ts, stream, tag, msg = parse_log(read(log))[0]
            assert (stream, tag, msg) == ("stdout", "F", "hello") and CRI_TIME.match(ts), read(log)
        with step("ExecSync echo hi"):
            res = cri.exec_sync(cid, ["echo", "hi"], timeout=60)
            assert (res.stdout, res.stderr, res.exit_code) == (b"hi\n", b"", 0)
        with step("ExecSync exit 3"):
            res = cri.exec_sync(cid, ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=60)
            assert (res.stdout, res.stderr, res.exit_code) == (b"out\n", b"err\n", 3)
        with step("ContainerStatus"):
            st = cri.container_status(cid).status
            assert st.state == api.CONTAINER_RUNNING and st.started_at > 0
            assert st.log_path == str(log)
            assert [c.id for c in cri.list_containers(pod_sandbox_id=sid)] == [cid]
        with step("StopContainer"):
            cri.stop_container(cid, timeout=1)      # sh as PID 1 ignores TERM: KILL after 1 s
            st = cri.container_status(cid).status
            assert (st.state, st.exit_code, st.reason) == (api.CONTAINER_EXITED, 137, "Error")
        with step("RemoveContainer"):
            cri.remove_container(cid)
            assert cri.list_containers(pod_sandbox_id=sid) == []
            with pytest.raises(grpc.RpcError) as err:
                cri.container_status(cid)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            cid = None
        with step("StopPodSandbox"):
            cri.stop_pod_sandbox(sid)
            assert cri.pod_sandbox_status(sid).status.state == api.SANDBOX_NOTREADY
        with step("RemovePodSandbox"):
            cri.remove_pod_sandbox(sid)
            assert sid not in {p.id for p in cri.list_pod_sandboxes()}
            with pytest.raises(grpc.RpcError) as err:
                cri.pod_sandbox_status(sid)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            removed, sid = sid, None
        with step("nothing left"):
            assert not os.path.exists(netns_path)
            assert net.ports() == [] and net.pod_netns() == []
            if handler == "rund":
                wait_for(lambda: leftovers(removed, "k8s.io") == {}, 10,
                         f"rund's leftovers of {removed}: {leftovers(removed, 'k8s.io')}")
                sock = address.socket_path(address.socket_address(ctd.address, "k8s.io", removed))
                wait_for(lambda: not os.path.exists(sock), 10, f"the pod's shim socket {sock} to go")
    finally:
        if sid is not None:
            with contextlib.suppress(grpc.RpcError):
                cri.remove_pod(sid)
