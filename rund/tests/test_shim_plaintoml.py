"""plaintoml.py: plain TOML read without tomllib, and always as tomllib reads it (or not at all)."""
from __future__ import annotations

import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rund.shim import plaintoml

PLAIN = b"""# rund's config for a runtime class
state_dir = "/run/rund-x"   # a comment
log_level = 'debug'

[shim]
fork_server = false
pods_per_shim = 4
  merge_memory = true#tight
[ templates ]
dir = "/dev/shm/a#b"
empty = ""
negative = -12
zero = 0
"""


def test_a_plain_config_reads_as_tomllib_reads_it():
    assert plaintoml.loads(PLAIN) == tomllib.loads(PLAIN.decode())
    assert plaintoml.loads(b"") == {} == tomllib.loads("")


@pytest.mark.parametrize("text", [
    b'a = "x\\ty"', b"a = '''x'''", b'a = """x"""', b"a = [1]", b"a = {b = 1}", b"a = 1.5", b"a = 1_000",
    b"a = +1", b"a = 007", b"a = -0", b"a = 0x10", b"a.b = 1", b'"a" = 1', b"[a.b]", b"[[a]]", b"a = 1\na = 2",
    b"[a]\n[a]", b"a = 1\n[a]", b"a = 1979-05-27", b"a = inf", b'a = "\xc3\xa9"', b"a = 1\r\n", b"a = 'x' y",
    b"a = \"x", b"a", b"= 1", b"[a] b", b"a = tru", b"a = true false", b"a = 1 # \x01",
])
def test_anything_not_plain_is_left_to_tomllib(text):
    assert plaintoml.loads(text) is None


_KEYS = st.sampled_from(["a", "b", "fork_server", "state-dir", "x_1", "1", "a.b", '"q"', "a b", ""])
_VALUES = st.sampled_from(['"s"', "'lit'", '""', '"a#b"', '"x\\"y"', "'''m'''", "true", "false", "0", "7", "-3",
                           "007", "-0", "+1", "1_0", "1.5", "[1]", "{}", "tru", '"open', "1979-05-27", "nan"])
_TAIL = st.sampled_from(["", " ", "\t", " # c", "#c", " x", "\r"])
_LINE = st.one_of(
    st.tuples(st.sampled_from(["", " ", "\t"]), _KEYS, st.sampled_from(["=", " = ", "\t=\t", " "]), _VALUES,
              _TAIL).map("".join),
    st.tuples(st.sampled_from(["[", "[ ", "[["]), _KEYS, st.sampled_from(["]", " ]", "]]"]), _TAIL).map("".join),
    st.sampled_from(["", "# comment", "   ", "\t# x"]),
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(_LINE, max_size=8))
def test_whatever_it_reads_tomllib_reads_the_same(lines):
    text = "\n".join(lines).encode()
    got = plaintoml.loads(text)
    if got is not None:
        assert got == tomllib.loads(text.decode())
