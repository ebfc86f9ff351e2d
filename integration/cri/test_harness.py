"""The CRI harness's own parts without containerd: the pause binary and the bridge network."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from hack import pause_image
from integration.cri import network
from integration.cri.network import BridgeNetwork


@pytest.fixture
def pause_bin(tmp_path) -> Path:
    path = tmp_path / "pause"
    path.write_bytes(pause_image.pause_elf())
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_pause_sleeps_until_term_or_int_then_exits_0_at_once(pause_bin, sig):
    proc = subprocess.Popen([str(pause_bin)])
    try:
        time.sleep(0.2)
        assert proc.poll() is None
        proc.send_signal(signal.SIGCHLD)            # handled (reaps nothing), keeps sleeping
        time.sleep(0.1)
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(2) == 0
        assert time.monotonic() - t0 < 0.5
    finally:
        proc.kill()


@pytest.mark.root
def test_pause_as_pid_1_reaps_orphans(pause_bin):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    proc = subprocess.Popen(["unshare", "--fork", "--pid", str(pause_bin)])
    try:
        deadline = time.monotonic() + 5
        while not (kids := Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        pause_pid = int(kids[0])
        # An orphan in pause's PID namespace: its parent (sh) exits at once, so it is reparented to pause.
        subprocess.run(["nsenter", "-t", str(pause_pid), "-p", "--", "sh", "-c", "sleep 0.2 & exit 0"], check=True)
        time.sleep(0.8)
        children = Path(f"/proc/{pause_pid}/task/{pause_pid}/children").read_text().split()
        zombies = [c for c in children if Path(f"/proc/{c}/stat").read_text().split(") ")[1][0] == "Z"]
        assert zombies == []
        os.kill(pause_pid, signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        proc.kill()


def test_pause_image_is_kubernetes_shaped(tmp_path):
    out = tmp_path / "pause.tar"
    assert pause_image.build(out) == pause_image.IMAGE_NAME
    with tarfile.open(out) as tar:
        index = json.load(tar.extractfile("index.json"))
        blobs = {m.name: m for m in tar.getmembers()}
        manifest = json.load(tar.extractfile(f"blobs/sha256/{index['manifests'][0]['digest'][7:]}"))
        config = json.load(tar.extractfile(f"blobs/sha256/{manifest['config']['digest'][7:]}"))
        assert len(manifest["layers"]) == 1 and len(blobs) == 5
    assert config["config"]["Entrypoint"] == ["/pause"] and config["config"]["User"] == "65535:65535"
    assert pause_image.build(tmp_path / "again.tar") and (tmp_path / "again.tar").read_bytes() == out.read_bytes()


def test_conflist_is_bridge_and_host_local_only_without_masquerade(tmp_path):
    net = BridgeNetwork(42, tmp_path, tmp_path / "net.d" / "10.conflist")
    conf = net.conflist()
    assert [p["type"] for p in conf["plugins"]] == ["bridge"]        # no portmap, firewall or bandwidth: no iptables
    bridge = conf["plugins"][0]
    assert (bridge["bridge"], bridge["ipMasq"], bridge["isGateway"]) == ("rcri42", False, False)
    assert bridge["ipam"]["type"] == "host-local" and bridge["ipam"]["dataDir"].startswith(str(tmp_path))
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.88.42.0/24", "gateway": "10.88.42.1"}],
                                        [{"subnet": "fd00:88:42::/64", "gateway": "fd00:88:42::1"}]]


def test_a_network_for_more_pods_than_a_24_holds_has_a_range_per_24(tmp_path):
    net = BridgeNetwork(40, tmp_path, tmp_path / "net.d" / "10.conflist", size=3)
    v4, v6 = net.conflist()["plugins"][0]["ipam"]["ranges"]
    assert v4 == [{"subnet": f"10.88.{i}.0/24", "gateway": f"10.88.{i}.1"} for i in (40, 41, 42)]
    assert v6 == [{"subnet": "fd00:88:40::/64", "gateway": "fd00:88:40::1"}]


@pytest.mark.root
def test_a_wide_network_takes_consecutive_indexes_and_gives_them_all_back(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    wide = BridgeNetwork.create(tmp_path / "w", tmp_path / "w" / "net.d", tmp_path / "w" / "bin", pods=600)
    try:
        assert wide.size == 3
        addrs = subprocess.run(["ip", "-br", "addr", "show", wide.bridge], capture_output=True, text=True,
                               check=True).stdout
        assert all(f"10.88.{i}.1/24" in addrs for i in wide.indexes)
        assert {str(i) for i in wide.indexes} <= set(os.listdir(network.REGISTRY))
        other = BridgeNetwork.create(tmp_path / "o", tmp_path / "o" / "net.d", tmp_path / "o" / "bin")
        try:
            assert other.index not in wide.indexes
        finally:
            other.destroy()
    finally:
        wide.destroy()
    assert not {str(i) for i in wide.indexes} & set(os.listdir(network.REGISTRY))
    assert subprocess.run(["ip", "link", "show", wide.bridge], capture_output=True).returncode != 0


@pytest.mark.root
def test_networks_are_distinct_owned_by_the_host_and_leave_nothing(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    a = BridgeNetwork.create(tmp_path / "a", tmp_path / "a" / "net.d", tmp_path / "a" / "bin")
    try:
        b = BridgeNetwork.create(tmp_path / "b", tmp_path / "b" / "net.d", tmp_path / "b" / "bin")
        try:
            assert a.index != b.index
            for net in (a, b):
                addrs = subprocess.run(["ip", "-br", "addr", "show", net.bridge], capture_output=True, text=True,
                                       check=True).stdout
                assert f"{net.gateway4}/24" in addrs and f"{net.gateway6}/64" in addrs
                assert json.loads(net.conf_path.read_text())["name"] == net.name
                assert sorted(os.listdir(tmp_path / ("a" if net is a else "b") / "bin")) == sorted(network.PLUGINS)
        finally:
            b.destroy()
        assert not b.conf_path.exists()
        assert subprocess.run(["ip", "link", "show", b.bridge], capture_output=True).returncode != 0
        assert str(b.index) not in os.listdir(network.REGISTRY)
    finally:
        a.destroy()


@pytest.mark.root
def test_a_network_whose_owner_died_is_reclaimed(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    a = BridgeNetwork.create(tmp_path / "a", tmp_path / "a" / "net.d", tmp_path / "a" / "bin")
    dead = subprocess.Popen(["true"])
    dead.wait()
    (network.REGISTRY / str(a.index)).write_text(f"{dead.pid} {tmp_path / 'a'}")
    b = BridgeNetwork.create(tmp_path / "b", tmp_path / "b" / "net.d", tmp_path / "b" / "bin")
    try:
        assert subprocess.run(["ip", "link", "show", a.bridge], capture_output=True).returncode != 0
        assert str(a.index) not in os.listdir(network.REGISTRY)
    finally:
        b.destroy()
        a.destroy()
