"""The pod's network plumbing on the host, against a real network namespace with a veth as CNI's bridge plugin makes
one (root): the tap and both redirects appear, the identity read is the interface's, and detach leaves the netns as
CNI made it. (The VM side is end to end: integration/test_cri_network.py.)"""
from __future__ import annotations

import ipaddress
import os
import socket
import struct
import subprocess
import time
import uuid

import pytest

from rund.agent import Interface, IPAddress, Route
from rund.resources.network import NetworkError, PodAddress, PodNetwork, PodRoute, attach, detach, inspect
from rund.runtime.pod_network import guest_network, netns_path

pytestmark = pytest.mark.root


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def cni_netns(cni_wire):
    return cni_wire[0]


@pytest.fixture
def cni_wire():
    """(the netns path, the host end of its veth: where the pod's bridge would be)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    name, host = f"rundt-{uuid.uuid4().hex[:6]}", f"rt{uuid.uuid4().hex[:8]}"
    ip("netns", "add", name)
    try:
        ip("link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", name)
        ip("-n", name, "addr", "add", "10.77.0.2/24", "dev", "eth0")
        ip("-n", name, "-6", "addr", "add", "fd00:77::2/64", "dev", "eth0", "nodad")
        ip("-n", name, "link", "set", "eth0", "mtu", "1400", "up")
        ip("-n", name, "route", "add", "default", "via", "10.77.0.1")
        ip("link", "set", host, "up")
        yield f"/var/run/netns/{name}", host
    finally:
        subprocess.run(["ip", "link", "del", host], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def in_netns(path: str, *argv: str) -> str:
    return subprocess.run(["nsenter", f"--net={path}", *argv], check=True, capture_output=True, text=True).stdout


def test_attach_makes_a_tap_redirected_both_ways_and_reads_the_pods_identity(cni_netns):
    pod = attach(cni_netns)
    try:
        mac = in_netns(cni_netns, "ip", "-o", "link", "show", "eth0").split("link/ether ")[1].split()[0]
        assert (pod.interface, pod.mac, pod.mtu) == ("eth0", mac, 1400)
        assert pod.addresses == (PodAddress("10.77.0.2", 24), PodAddress("fd00:77::2", 64))
        assert pod.routes == (PodRoute("default", "10.77.0.1"),)
        assert "tap0_rund" in in_netns(cni_netns, "ip", "-o", "link")
        for dev, to in (("eth0", "tap0_rund"), ("tap0_rund", "eth0")):
            assert f"Egress Redirect to device {to}" in in_netns(cni_netns, "tc", "filter", "show", "dev", dev, "ingress")
        again = attach(cni_netns)            # a second shim for the pod (after a crash) starts clean
        os.close(again.tap_fd)
    finally:
        os.close(pod.tap_fd)
        detach(cni_netns)
    assert "tap0_rund" not in in_netns(cni_netns, "ip", "-o", "link")
    assert in_netns(cni_netns, "tc", "qdisc", "show", "dev", "eth0", "ingress") == ""
    detach("/var/run/netns/gone-already")       # CNI DEL ran first: nothing to do


def ipv6_frame(dst_mac: str, dst: str, marker: bytes) -> bytes:
    """An IPv6 packet with no next header (59), from a link-local source, carrying `marker`."""
    header = struct.pack("!IHBB16s16s", 6 << 28, len(marker), 59, 1, ipaddress.IPv6Address("fe80::99").packed,
                         ipaddress.IPv6Address(dst).packed)
    return bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex("020000000099") + b"\x86\xdd" + header + marker


def frames_on(tap_fd: int, wait: float = 1.0) -> list[bytes]:
    os.set_blocking(tap_fd, False)
    got, end = [], time.monotonic() + wait
    while time.monotonic() < end:
        try:
            got.append(os.read(tap_fd, 65536))
        except BlockingIOError:
            time.sleep(0.02)
    return got


def test_multicast_for_routers_only_never_reaches_the_vm(cni_wire):
    """Router solicitations and MLDv2 reports, which a querier-less bridge floods to every pod, are dropped before
    the redirect into the tap (each woke the VM's QEMU); all-nodes multicast and frames to the pod still pass. The
    CNI interface's own stack stops soliciting routers."""
    path, host = cni_wire
    pod = attach(path)
    try:
        assert in_netns(path, "cat", "/proc/sys/net/ipv6/conf/eth0/router_solicitations").strip() == "0"
        sent = {b"routers": ("33:33:00:00:00:02", "ff02::2"), b"mld-report": ("33:33:00:00:00:16", "ff02::16"),
                b"all-nodes": ("33:33:00:00:00:01", "ff02::1"), b"to-the-pod": (pod.mac, "fd00:77::2")}
        frames_on(pod.tap_fd, wait=0.2)                 # whatever the interface's own start sent
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((host, 0))
            for marker, (mac, dst) in sent.items():
                s.send(ipv6_frame(mac, dst, marker))
        seen = {m for frame in frames_on(pod.tap_fd) for m in sent if frame.endswith(m)}
        assert seen == {b"all-nodes", b"to-the-pod"}
    finally:
        os.close(pod.tap_fd)
        detach(path)


def test_inspect_reads_what_attach_reads_and_changes_nothing(cni_netns):
    """A spare VM's adoption gets the identity first (inspect) and the tap wired alongside (attach_moved)."""
    links, qdiscs = in_netns(cni_netns, "ip", "-o", "link"), in_netns(cni_netns, "tc", "qdisc", "show")
    seen = inspect(cni_netns)
    assert seen.tap_fd == -1
    assert (in_netns(cni_netns, "ip", "-o", "link"), in_netns(cni_netns, "tc", "qdisc", "show")) == (links, qdiscs)
    pod = attach(cni_netns)
    try:
        assert seen == PodNetwork(-1, pod.interface, pod.mac, pod.mtu, pod.addresses, pod.routes)
    finally:
        os.close(pod.tap_fd)
        detach(cni_netns)


def test_a_netns_without_an_addressed_interface_is_a_clear_error(cni_netns):
    in_netns(cni_netns, "ip", "addr", "flush", "dev", "eth0")
    with pytest.raises(NetworkError, match="no interface with an address"):
        attach(cni_netns)
    with pytest.raises(NetworkError, match="network namespace /nonexistent"):
        attach("/nonexistent")


def test_the_guest_takes_the_cni_interfaces_identity_on_its_eth0():
    pod = PodNetwork(-1, "net1", "0a:58:0a:58:00:05", 1450, (PodAddress("10.88.0.5", 16), PodAddress("fd00::5", 64)),
                     (PodRoute("default", "10.88.0.1"), PodRoute("10.96.0.0/12", "10.88.0.1")))
    config = guest_network(pod)
    assert config.interfaces == (Interface("eth0", "0a:58:0a:58:00:05", 1450,
                                           (IPAddress("10.88.0.5", 16), IPAddress("fd00::5", 64))),)
    assert config.routes == (Route("default", "10.88.0.1", "eth0"), Route("10.96.0.0/12", "10.88.0.1", "eth0"))


def test_the_netns_comes_from_the_sandbox_specs_network_entry():
    spec = {"linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1"}]}}
    assert netns_path(spec) == "/var/run/netns/cni-1"
    assert netns_path({"linux": {"namespaces": [{"type": "network"}]}}) == ""
    assert netns_path({}) == ""


def test_netns_work_runs_in_a_child_that_hands_back_its_value_and_fds():
    """netns.run_in forks (the pages the netlink work touches are copied into the child, not the shim) and hands
    back a JSON value and fds; errors keep their kind."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from rund.resources.network import netns

    def work():
        r, w = os.pipe()
        os.write(w, b"from the child")
        os.close(w)
        return {"pid": os.getpid()}, [r]

    value, (fd,) = netns.run_in("/proc/self/ns/net", work)
    try:
        assert value["pid"] != os.getpid()
        assert os.read(fd, 100) == b"from the child"
    finally:
        os.close(fd)

    def refuse():
        raise NetworkError("no such interface")
    with pytest.raises(NetworkError, match="no such interface"):
        netns.run_in("/proc/self/ns/net", refuse)

    def crash():
        raise KeyError("x")
    with pytest.raises(RuntimeError, match="KeyError"):
        netns.run_in("/proc/self/ns/net", crash)
    with pytest.raises(NetworkError, match="network namespace /nonexistent"):
        netns.run_in("/nonexistent", work)
