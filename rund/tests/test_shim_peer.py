"""peer.py and handshake.py without containerd: who listens on a socket, when `start` may adopt it, and the
start/daemon handshake."""
from __future__ import annotations

import os
import socket
import subprocess
import threading

import pytest

from rund.errors import Unavailable
from rund.shim import handshake, peer
from rund.shim.flags import ShimArgs

ARGS = ShimArgs(action="start", namespace="ns", address="/run/c.sock", id="c1")


def test_identify_reads_flags_and_the_bundle_of_a_live_process(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    proc = subprocess.Popen(["sh", "-c", "echo up; read x", "shim", "-namespace", "ns", "-address=/run/c.sock",
                             "start"], cwd=bundle, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"up\n"              # exec'd: its cmdline is sh's
        st = bundle.stat()
        shim = peer.identify(proc.pid)
        assert (shim.address, shim.namespace, shim.bundle) == ("/run/c.sock", "ns", (st.st_dev, st.st_ino))
        assert peer.refusal(shim, ARGS, (st.st_dev, st.st_ino)) is None
        assert peer.refusal(shim, ARGS, None) is None
        bundle.rmdir()                                  # containerd removed the bundle
        assert peer.identify(proc.pid).bundle is None
        assert "bundle was removed" in peer.refusal(peer.identify(proc.pid), ARGS, None)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_refusals():
    live = peer.LiveShim(7, "/run/c.sock", "ns", (1, 2))
    assert peer.refusal(live, ARGS, (1, 2)) is None
    assert "earlier bundle" in peer.refusal(live, ARGS, (1, 3))
    assert "serves containerd" in peer.refusal(peer.LiveShim(7, "/other.sock", "ns", (1, 2)), ARGS, None)
    assert "serves containerd" in peer.refusal(peer.LiveShim(7, "/run/c.sock", "k8s.io", (1, 2)), ARGS, None)
    assert "cannot be identified" in peer.refusal(peer.LiveShim(7, None, None, None), ARGS, None)
    assert peer.identify(2 ** 22 + 1).address is None   # no such pid


def test_probe_names_the_listening_process(tmp_path):
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        assert peer.probe(path) is None                 # bound, not listening
        s.listen(1)
        assert peer.probe(path).pid == os.getpid()
    assert peer.probe(path) is None


def test_handshake_go_and_a_parent_that_dies_first():
    parent, child = handshake.pair()
    with parent, child:
        handshake.ready(child)
        handshake.wait_ready(parent)
        handshake.go(parent)
        assert handshake.got_go(child, 1.0)
    parent, child = handshake.pair()
    with child:
        parent.close()                                  # start was killed before go
        assert not handshake.got_go(child, 5.0)
    parent, child = handshake.pair()
    with parent:
        threading.Timer(0.05, child.close).start()      # the daemon died before ready
        with pytest.raises(Unavailable):
            handshake.wait_ready(parent, 5.0)
