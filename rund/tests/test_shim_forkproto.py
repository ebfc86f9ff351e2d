"""The fork server's protocol core and the thin client's pure parts, without sockets or root."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

from rund import config
from rund.shim import client, forkproto
from rund.shim.forkproto import Decoder, ProtocolError, encode, validate_start


def good(**over) -> dict:
    msg = forkproto.start_message(
        ["/usr/local/bin/containerd-shim-rund-v2", "-namespace", "k8s.io", "-address", "/run/containerd/c.sock",
         "-publish-binary", "/usr/bin/containerd", "-id", "c1", "-debug", "start"],
        {"TTRPC_ADDRESS": "/run/containerd/c.sock.ttrpc", "GOMAXPROCS": "2", "NAMESPACE": "k8s.io"},
        ["/usr/bin/python3", "/usr/local/bin/containerd-shim-rund-v2", "start"], "containerd-shim", 0o022,
        (1048576, 1048576), 0, {"mnt": 4026531841, "net": 4026531840}, "0::/system.slice/containerd.service\n")
    msg.update(over)
    return msg


# ---- framing --------------------------------------------------------------------------------------------------------

def test_a_message_round_trips_whole_or_byte_by_byte():
    data = encode(good()) + encode({"t": "printed"})
    assert Decoder().feed(data) == [good(), {"t": "printed"}]
    dec, got = Decoder(), []
    for i in range(len(data)):
        got += dec.feed(data[i:i + 1])
    assert got == [good(), {"t": "printed"}] and dec.pending == 0


def test_a_cut_frame_is_pending_not_a_message():
    data = encode({"t": "printed"})
    dec = Decoder()
    assert dec.feed(data[:-1]) == [] and dec.pending == len(data) - 1


@pytest.mark.parametrize("frame, why", [
    (b"\x7f\xff\xff\xff", "over"),                                  # a 2 GiB frame: refused before buffering it
    (b"\x00\x00\x00\x03abc", "not JSON"),
    (b"\x00\x00\x00\x02[]", "object"),
    (b"\x00\x00\x00\x08{\"t\": 1}", "object"),
    (b"\x00\x00\x00\x02\xff\xfe", "not JSON"),
])
def test_bad_frames_close_the_decoder(frame, why):
    dec = Decoder()
    with pytest.raises(ProtocolError, match=why):
        dec.feed(frame)
    with pytest.raises(ProtocolError):
        dec.feed(encode({"t": "printed"}))


def test_encode_refuses_an_oversized_message():
    with pytest.raises(ProtocolError):
        encode({"t": "x", "pad": "a" * forkproto.MAX_FRAME})


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_the_decoder_never_fails_other_than_by_protocol_error(data):
    try:
        for msg in Decoder(max_frame=1 << 16).feed(data):
            assert isinstance(msg, dict) and isinstance(msg["t"], str)
    except ProtocolError:
        pass


# ---- start request validation -------------------------------------------------------------------------------------

def test_a_good_request_is_taken_as_is():
    req = validate_start(good())
    assert req.argv[-1] == "start" and req.env["TTRPC_ADDRESS"].endswith(".ttrpc")
    assert req.umask == 0o022 and req.nofile == [1048576, 1048576] and req.origin == forkproto.origin()


@pytest.mark.parametrize("over, why", [
    ({"t": "stop"}, "expected a start"),
    ({"argv": ["x", "delete"]}, "action start"),
    ({"argv": []}, "action start"),
    ({"argv": ["x"] * 100 + ["start"]}, "at most"),
    ({"argv": ["x", 3, "start"]}, "string"),
    ({"argv": ["x\0y", "start"]}, "NUL"),
    ({"env": {"A=B": "c"}}, "'='"),
    ({"env": {"": "c"}}, "empty"),
    ({"env": {"A": "c\0d"}}, "NUL"),
    ({"env": {"A": 1}}, "string"),
    ({"env": [["A", "b"]]}, "object"),
    ({"env": {f"K{i}": "" for i in range(forkproto.MAX_ENV + 1)}}, "at most"),
    ({"cmdline": []}, "empty"),
    ({"comm": ""}, "empty"),
    ({"umask": 0o1000}, "umask"),
    ({"umask": True}, "umask"),
    ({"nofile": [1]}, "soft, hard"),
    ({"nofile": [1, "2"]}, "nofile"),
    ({"oom_score_adj": -1001}, "oom_score_adj"),
    ({"ns": {"bogus": 1}}, "ns"),
    ({"ns": {"mnt": "1"}}, "ns mnt"),
    ({"cgroup": None}, "cgroup"),
    ({"origin": ["only one"]}, "origin"),
])
def test_every_field_is_checked(over, why):
    with pytest.raises(ProtocolError, match=why):
        validate_start(good(**over))


def test_missing_fields_are_refused():
    for key in ("argv", "env", "cmdline", "comm", "umask", "nofile", "oom_score_adj", "ns", "cgroup", "origin"):
        msg = good()
        del msg[key]
        with pytest.raises(ProtocolError):
            validate_start(msg)


@pytest.mark.parametrize("msg, out", [
    ({"t": "address", "address": "unix:///run/containerd/s/ab"}, ("address", "unix:///run/containerd/s/ab")),
    ({"t": "error", "message": "rund start: no", "code": 1}, ("error", "rund start: no")),
    ({"t": "fallback", "reason": "stale"}, ("fallback", "stale")),
])
def test_replies(msg, out):
    assert forkproto.reply(msg) == out


@pytest.mark.parametrize("msg", [{"t": "address"}, {"t": "nope", "address": "x"}, {"t": "error", "message": 3}])
def test_bad_replies(msg):
    with pytest.raises(ProtocolError):
        forkproto.reply(msg)


# ---- runtime options on stdin -------------------------------------------------------------------------------------

def _any(config_path: str) -> bytes:
    from google.protobuf import any_pb2
    from proto.gen.runtimeoptions.v1 import api_pb2 as ro
    a = any_pb2.Any(type_url="runtimeoptions.v1.Options", value=ro.Options(config_path=config_path).SerializeToString())
    return a.SerializeToString()


def test_config_path_from_a_legacy_any():
    assert forkproto.config_path_from_options(_any("/etc/rund/tiny.toml")) == "/etc/rund/tiny.toml"
    # the Any observed from containerd 1.6.20's CRI (reference/containerd-shim-contract.md 2.2)
    seen = bytes.fromhex("0a19") + b"runtimeoptions.v1.Options" + bytes.fromhex("1216") + bytes.fromhex("1214") + \
        b"/etc/rund/probe.toml"
    assert forkproto.config_path_from_options(seen) == "/etc/rund/probe.toml"


def test_config_path_from_bootstrap_params():
    any_bytes = _any("/etc/rund/b.toml")
    ext = b"\x0a" + bytes([len(any_bytes)]) + any_bytes
    params = b"\x0a\x02c1" + b"\x12\x06k8s.io" + b"\x42" + bytes([len(ext)]) + ext
    assert forkproto.config_path_from_options(params) == "/etc/rund/b.toml"


@pytest.mark.parametrize("data", [b"", b"\xff\xff\xff", b"\x0a\x05ab", b"\x0a\x03xyz\x12\x00",
                                  b"\x0a\x19runtimeoptions.v1.Options\x12\x03\x12\x05a"])
def test_unreadable_or_other_options_mean_the_default(data):
    assert forkproto.config_path_from_options(data) == ""


# ---- the thin client's pure parts ---------------------------------------------------------------------------------

def test_the_client_defaults_are_rund_configs():
    assert client.DEFAULT_CONFIG_PATH == str(config.DEFAULT_CONFIG_PATH)
    assert client.DEFAULT_STATE_DIR == config.Config().state_dir
    assert client.DEFAULT_FORK_SERVER == config.ShimConfig().fork_server


def test_settings(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('state_dir = "/run/x"\n[shim]\nfork_server = true\n')
    assert client.settings(str(f)) == (True, "/run/x")
    assert config.load(f).shim.fork_server is True
    f.write_text('[shim]\nfork_server = false\n')
    assert client.settings(str(f)) == (False, client.DEFAULT_STATE_DIR)
    for bad in ('[shim]\nfork_server = "yes"\n', 'state_dir = "relative"\n', "[[[", 'shim = 3\n'):
        f.write_text(bad)
        assert client.settings(str(f)) == (False, "")
    assert client.settings(str(tmp_path / "missing.toml"))[0] is False        # a named file that is missing
    f.write_text('[shim]\nfork_servr = true\n')
    with pytest.raises(Exception, match="unknown key"):
        config.load(f)


def test_merge_memory(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[shim]\nmerge_memory = true\n")
    assert client.merge_memory(str(f)) is True and config.load(f).shim.merge_memory is True
    for other in ("[shim]\nmerge_memory = false\n", '[shim]\nmerge_memory = "yes"\n', "[[[", "shim = 3\n", ""):
        f.write_text(other)
        assert client.merge_memory(str(f)) is False
    assert client.merge_memory(str(tmp_path / "missing.toml")) is False and client.merge_memory("") is False


def test_wanted():
    assert client.wanted(["-namespace", "n", "-id", "c", "start"])
    assert not client.wanted(["-namespace", "n", "-id", "c", "delete"])
    assert not client.wanted(["-v", "start"]) and not client.wanted(["-info", "start"]) and not client.wanted([])


def test_read_stdin_takes_a_closed_pipe_and_does_not_wait_for_an_open_one():
    r, w = os.pipe()
    os.write(w, b"abc")
    os.close(w)
    assert client.read_stdin(r) == b"abc"
    os.close(r)
    r, w = os.pipe()
    began = time.monotonic()
    assert client.read_stdin(r, wait=0.2) == b""
    assert time.monotonic() - began < 1.0
    os.close(r)
    os.close(w)
    null = os.open(os.devnull, os.O_RDONLY)
    assert client.read_stdin(null) == b""
    os.close(null)


def test_the_thin_client_imports_next_to_nothing():
    """`start` through the fork server must not pay for the runtime's imports."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import rund.shim.main, rund.shim.client"],
                         capture_output=True, text=True, check=True).stderr
    names = {line.split("|")[-1].strip() for line in out.splitlines() if "|" in line}
    heavy = {"asyncio", "pyroute2", "google.protobuf", "dataclasses", "rund.config", "rund.shim.start",
             "rund.runtime", "qemu.qmp", "ctypes", "logging"}
    assert not names & heavy, names & heavy


def test_the_server_key_follows_checkout_namespaces_and_cgroups():
    ns, cg = {"mnt": 1, "net": 2}, "0::/a\n"
    key = forkproto.server_key(forkproto.origin(), ns, cg)
    assert len(key) == 16 and key == forkproto.server_key(forkproto.origin(), dict(reversed(ns.items())), cg)
    assert key != forkproto.server_key(forkproto.origin(), {**ns, "net": 3}, cg)
    assert key != forkproto.server_key(forkproto.origin(), ns, "0::/b\n")
    assert key != forkproto.server_key(["/other/python", forkproto.__file__], ns, cg)
    sock, lock = forkproto.server_paths("/run/rund", key)
    assert sock == f"/run/rund/shim-server-{key}.sock" and lock == f"/run/rund/shim-server-{key}.lock"
