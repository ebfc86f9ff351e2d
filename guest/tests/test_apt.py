"""Parsing apt-cache output (pure)."""

from __future__ import annotations

import pytest

from guest.apt import parse_control_field, parse_depends, parse_policy
from guest.errors import PackageResolveError

POLICY = """\
libc6:
  Installed: 2.36-9+deb12u14
  Candidate: 2.36-9+deb12u14
  Version table:
 *** 2.36-9+deb12u14 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
zlib1g:amd64:
  Installed: (none)
  Candidate: 1:1.2.13.dfsg-1
  Version table:
     1:1.2.13.dfsg-1 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
ghost-package:
  Installed: (none)
  Candidate: (none)
  Version table:
"""


def test_policy_gives_the_candidate_of_each_package():
    assert parse_policy(POLICY) == {"libc6": "2.36-9+deb12u14", "zlib1g": "1:1.2.13.dfsg-1", "ghost-package": None}


def test_depends_takes_the_first_alternative_and_keeps_pins():
    field = "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2), libc6:any (>= 2.36) | musl, initramfs-tools"
    assert parse_depends(field) == [
        ("linux-image-6.1.0-56-cloud-amd64", "=", "6.1.192-2"),
        ("libc6", ">=", "2.36"),
        ("initramfs-tools", None, None),
    ]


def test_unparseable_dependency_is_an_error():
    with pytest.raises(PackageResolveError):
        parse_depends("Not A Package Name (")


def test_control_field():
    stanza = "Package: linux-image-cloud-amd64\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\n"
    assert parse_control_field(stanza, "Version") == "6.1.192-2"
    assert parse_control_field(stanza, "Pre-Depends") is None
