import pytest

from rund.errors import InvalidArgument
from rund.shim import address, flags


def test_parses_containerd_16_start_argv():
    a = flags.parse(["-namespace", "default", "-address", "/run/containerd/containerd.sock",
                     "-publish-binary", "/usr/bin/containerd", "-id", "c1", "-debug", "start"])
    assert (a.action, a.namespace, a.address, a.id, a.debug) == (
        "start", "default", "/run/containerd/containerd.sock", "c1", True)


def test_parses_delete_with_bundle_and_equals_form():
    a = flags.parse(["-namespace=k8s.io", "--address", "/x.sock", "-id", "c2", "-bundle", "/b", "delete"])
    assert (a.action, a.namespace, a.bundle, a.debug) == ("delete", "k8s.io", "/b", False)


def test_ttrpc_address_prefers_env(monkeypatch):
    a = flags.parse(["-address", "/x.sock", "-id", "c", "start"])
    monkeypatch.delenv("TTRPC_ADDRESS", raising=False)
    assert a.ttrpc_address == "/x.sock.ttrpc"
    monkeypatch.setenv("TTRPC_ADDRESS", "/y.ttrpc")
    assert a.ttrpc_address == "/y.ttrpc"


def test_version_flag():
    assert flags.parse(["-v"]).version


@pytest.mark.parametrize("argv", [["-id"], ["-bogus", "start"], ["-id", "x", "frobnicate"], ["start", "extra"], []])
def test_bad_argv_is_invalid_argument(argv):
    with pytest.raises(InvalidArgument):
        flags.parse(argv)


def test_socket_address_matches_containerd_formula():
    # sha256("/run/containerd/containerd.sock/default/c1"), as containerd's shim.SocketAddress computes it.
    import hashlib
    want = hashlib.sha256(b"/run/containerd/containerd.sock/default/c1").hexdigest()
    got = address.socket_address("/run/containerd/containerd.sock", "default", "c1")
    assert got == f"unix:///run/containerd/s/{want}"
    assert len(address.socket_path(got)) <= 106


def test_grouping_by_sandbox_annotation():
    sandbox = {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "sb"}
    member = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "sb"}
    assert address.sandbox_id("sb", sandbox) == "sb" and not address.is_pod_member("sb", sandbox)
    assert address.sandbox_id("c1", member) == "sb" and address.is_pod_member("c1", member)
    assert address.sandbox_id("solo", {}) == "solo" and not address.is_pod_member("solo", {})
    crio = {"io.kubernetes.cri-o.ContainerType": "container", "io.kubernetes.cri-o.SandboxID": "p"}
    assert address.is_pod_member("c", crio)


def test_address_file_is_replaced_atomically(tmp_path):
    address.write_address_file(tmp_path, "unix:///a")
    address.write_address_file(tmp_path, "unix:///b")
    assert (tmp_path / "address").read_text() == "unix:///b"
    assert [p.name for p in tmp_path.iterdir()] == ["address"]


@pytest.mark.parametrize("bad", ["../../../tmp/victim", ".", "..", "a/b", "a\x00b", "x" * 77, 7])
def test_a_sandbox_id_annotation_must_be_an_identifier(bad):
    for key in address.SANDBOX_ID_KEYS:
        with pytest.raises(InvalidArgument, match="annotation"):
            address.sandbox_id("c1", {key: bad})
    member = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": bad}
    with pytest.raises(InvalidArgument):
        address.is_pod_member("c1", member)
