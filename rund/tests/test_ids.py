"""The identifier check that stands between every id and the filesystem."""
import os

import pytest
from hypothesis import given, strategies as st

from rund import ids
from rund.errors import InvalidArgument


@pytest.mark.parametrize("good", ["a", "a_b", "sandbox-1.2", "A9", "x" * 76,
                                  "3f1e7c1a9b2d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789ab"])
def test_containerd_identifiers_pass(good):
    assert ids.validate(good, "id") == good


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "/abs", "a\x00", "x" * 77, "-a", "a-", "a..b",
                                 "a b", "a\n", "é"])
def test_anything_else_is_invalid_argument_naming_the_field(bad):
    with pytest.raises(InvalidArgument, match="exec id"):
        ids.validate(bad, "exec id")


def test_non_strings_are_refused_and_optional_allows_empty():
    with pytest.raises(InvalidArgument):
        ids.validate(None, "id")
    assert ids.validate_optional("", "exec id") == ""


@given(st.text(max_size=100))
def test_a_valid_id_never_leaves_the_directory_it_is_joined_to(value):
    try:
        ids.validate(value, "id")
    except InvalidArgument:
        return
    base = "/run/rund/ns"
    joined = os.path.normpath(os.path.join(base, value, "x.json"))
    assert joined.startswith(base + "/") and joined.count("/") == base.count("/") + 2
