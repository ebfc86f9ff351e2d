"""The thin `start`'s lean stand-ins (leanjson, sha256, address.checked_id, the named tuples of flags and peer) give
what the modules they stand in for give, and the thin start imports none of those."""
from __future__ import annotations

import copy
import hashlib
import json
import pickle
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rund import ids
from rund.errors import InvalidArgument
from rund.shim import address, flags, idle, launcher, leanjson, member, peer
from rund.shim.sha256 import sha256

DOCS = [{"t": "start", "argv": ["a", "é\n\x00"], "env": {"K": "v"}, "n": [1, -2, 2 ** 70], "f": 1.5, "b": True,
         "none": None}, [], "", 0, {"nested": [[{}], {"x": [None]}]}]


@pytest.mark.parametrize("doc", DOCS)
def test_leanjson_writes_and_reads_what_json_does(doc):
    text = leanjson.dumps(doc)
    assert text == json.dumps(doc, separators=(",", ":"))
    assert leanjson.loads(text.encode()) == json.loads(text) == doc
    assert leanjson.loads(f" \n{json.dumps(doc, indent=2)}\t\r\n") == doc


@pytest.mark.parametrize("bad", [b"", b" ", b"{", b"{} {}", b"[1,]", b"nul", b"\xff", b"{'a': 1}"])
def test_leanjson_refuses_what_json_refuses(bad):
    with pytest.raises(ValueError):
        json.loads(bad)
    with pytest.raises(ValueError):
        leanjson.loads(bad)
    with pytest.raises(TypeError):
        leanjson.dumps({"x": object()})


def test_sha256_is_hashlibs():
    for data in (b"", b"/run/containerd/containerd.sock/k8s.io/pod", bytes(range(256)) * 9):
        assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()


def _ids_validate(value):
    try:
        return ids.validate(value, "x")
    except InvalidArgument as e:
        return str(e)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.text(alphabet="aZ09._-/ \x00é٣", max_size=80), st.text(max_size=8),
                 st.integers(), st.none()))
def test_checked_id_is_ids_validate(value):
    try:
        got = address.checked_id(value, "x")
    except InvalidArgument as e:
        got = str(e)
    assert got == _ids_validate(value)
    assert address.ID_MAX_LENGTH == ids.MAX_LENGTH


def test_the_named_tuples_are_frozen_values():
    a = flags.parse(["-namespace", "ns", "-address", "/c.sock", "-id", "c1", "start"])
    assert a == flags.ShimArgs(action="start", namespace="ns", address="/c.sock", id="c1")
    assert (a.bundle, a.debug, a.publish_binary) == ("", False, "")
    with pytest.raises(AttributeError):
        a.id = "c2"
    assert copy.copy(a) == a == pickle.loads(pickle.dumps(a)) and "id='c1'" in repr(a)
    shim = peer.LiveShim(7, "/c.sock", "ns", (1, 2))
    assert shim.same_containerd(a) and shim == peer.LiveShim(pid=7, address="/c.sock", namespace="ns", bundle=(1, 2))
    with pytest.raises(AttributeError):
        shim.pid = 8


def test_member_names_the_idle_variable_idle_reads():
    assert member.IDLE_ENV == idle.ENV


def test_the_thin_start_imports_none_of_the_dear_modules():
    """What `start` imports before it answers a pod member or asks the fork server (python -S, as containerd runs it):
    each of these cost it milliseconds (`re` through json and rund.ids, enum through socket, typing through tomllib)."""
    root = launcher.script().split("'")[1]
    probe = ("import sys; sys.path.insert(0, %r); import rund.shim.main, rund.shim.client, rund.shim.member; "
             "print(' '.join(sorted(sys.modules)))" % root)
    out = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = set(out.stdout.split())
    assert not loaded & {"re", "json", "enum", "socket", "typing", "dataclasses", "asyncio", "tomllib", "hashlib",
                         "pathlib", "inspect", "rund.ids", "rund.shim.start"}, loaded
