"""Pod networking through CRI, runc and rund side by side: the pod IP that CNI assigns answers from the host, pods
reach each other across handlers, the guest carries CRI's dual-stack addresses, egress reaches the bridge gateway,
and nothing of the pod's plumbing is left after it."""
from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
import urllib.request

import grpc
import pytest

from integration.cri.client import api, container_config, sandbox_config
from integration.test_cri_pod_behaviour import sh
from integration.test_cri_pods import HANDLERS, Steps, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]

PAGE = "hello from the pod"


@contextlib.contextmanager
def web_pod(cri, ctd, handler: str, name: str):
    """A pod whose container serves PAGE on port 8080 of every address; yields (sandbox id, container id, ips)."""
    config = sandbox_config(name, log_directory=str(ctd.log_dir / name))
    step = Steps(ctd, handler)
    with step("RunPodSandbox"):
        sid = cri.run_pod_sandbox(config, handler)
    step.ids.append(sid)
    try:
        with step("web container"):
            cid = cri.create_container(sid, container_config(
                "web", ctd.image, ["sh", "-c", f"mkdir /www; echo '{PAGE}' > /www/index.html; "
                                               f"exec httpd -f -p 8080 -h /www"]), config)
            cri.start_container(cid)
        status = cri.pod_sandbox_status(sid).status.network
        yield sid, cid, [status.ip, *(a.ip for a in status.additional_ips)], step
    finally:
        with contextlib.suppress(grpc.RpcError):
            cri.remove_pod(sid)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode().strip()


def url(ip: str) -> str:
    return f"http://[{ip}]:8080/index.html" if ":" in ip else f"http://{ip}:8080/index.html"


@pytest.mark.parametrize("handler", HANDLERS)
def test_the_pod_ip_answers_from_the_host_and_the_guest_has_cris_addresses(cri, cri_containerd, handler):
    ctd, net = cri_containerd, cri_containerd.network
    with web_pod(cri, ctd, handler, f"ip-{handler}") as (sid, cid, ips, step):
        v4, v6 = ips
        assert ipaddress.ip_address(v4) in net.subnet4 and ipaddress.ip_address(v6) in net.subnet6
        with step("dual stack inside the pod, usable as soon as the container runs"):
            # CNI settles the pod's addresses (duplicate address detection done) before the pod starts: an IPv6
            # address still tentative cannot be a source, and the container's first connection hangs
            addrs = sh(cri, cid, "ip -o addr show eth0")
            assert f" {v4}/{net.subnet4.prefixlen} " in addrs and f" {v6}/{net.subnet6.prefixlen} " in addrs, addrs
            assert "tentative" not in addrs, addrs
        with step("the host fetches a page from the pod IP (IPv4 and IPv6)"):
            for ip in (v4, v6):
                assert wait_for(lambda ip=ip: _try_fetch(url(ip)), 30, f"{url(ip)} to answer") == PAGE
        with step("egress to the bridge gateway"):
            sh(cri, cid, f"ping -c 1 -W 5 {net.gateway4}")
            sh(cri, cid, f"ping -c 1 -W 5 {net.gateway6}")


def test_pods_reach_each_other_across_handlers(cri, cri_containerd):
    ctd = cri_containerd
    with web_pod(cri, ctd, "rund", "x-rund-a") as (_, rund_a, ips_a, step_a), \
            web_pod(cri, ctd, "runc", "x-runc") as (_, runc_b, ips_b, step_b), \
            web_pod(cri, ctd, "rund", "x-rund-c") as (_, rund_c, ips_c, step_c):
        for step, client, target, what in ((step_a, rund_a, ips_c[0], "rund to rund"),
                                           (step_a, rund_a, ips_b[0], "rund to runc"),
                                           (step_b, runc_b, ips_a[0], "runc to rund"),
                                           (step_c, rund_c, ips_b[1], "rund to runc over IPv6")):
            with step(what):
                got = wait_for(lambda c=client, t=target: cri.exec_sync(
                    c, ["wget", "-qO-", url(t)], timeout=30).stdout, 30, f"{what}: {url(target)}")
                assert got.decode().strip() == PAGE


def test_nothing_of_a_rund_pods_network_is_left(cri, cri_containerd):
    ctd, net = cri_containerd, cri_containerd.network
    with web_pod(cri, ctd, "rund", "gone-rund") as (sid, _, ips, step):
        netns = _netns_of(cri, sid)
        with step("the tap and its filters are in the pod's netns"):
            assert "tap0_rund" in _ip_netns(netns, "link")
            assert "mirred" in _ip_netns(netns, "tc-filters")
    assert not os.path.exists(netns)                # CRI's netns removal worked
    assert net.ports() == [] and net.pod_netns() == []
    assert "tap0_rund" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def _try_fetch(address: str) -> str | None:
    try:
        return fetch(address)
    except OSError:
        return None


def _netns_of(cri, sid: str) -> str:
    import json
    info = json.loads(cri.pod_sandbox_status(sid, verbose=True).info["info"])
    return next(ns["path"] for ns in info["runtimeSpec"]["linux"]["namespaces"] if ns["type"] == "network")


def _ip_netns(netns: str, what: str) -> str:
    argv = {"link": ["ip", "-o", "link"],
            "tc-filters": ["tc", "filter", "show", "dev", "eth0", "ingress"]}[what]
    return subprocess.run(["nsenter", f"--net={netns}", *argv], capture_output=True, text=True).stdout
