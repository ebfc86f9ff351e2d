"""The build key: a pure function of the inputs, sensitive to each of them, blind to mtimes and listing order."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest

from guest import inputs, sources
from guest.hashing import tree_sha256

BASE = inputs.Inputs(
    kernel_package="linux-image-6.1.0-56-cloud-amd64",
    kernel_version="6.1.192-2",
    packages=(("python3.11-minimal", "3.11.2-6+deb12u9"), ("libc6", "2.36-9+deb12u14")),
    wheels=(("protobuf", "7.36.2"),),
    sources=(("agent", "a" * 64), ("guest", "b" * 64), ("proto", "c" * 64)),
    host_tools=(("erofs-utils", "1.5-1"),),
)


def test_same_inputs_same_key():
    again = dataclasses.replace(BASE, packages=tuple(reversed(BASE.packages)))
    assert again.key() == BASE.key()
    assert re.fullmatch(r"[0-9a-f]{16}", BASE.key())


@pytest.mark.parametrize("change", [
    {"kernel_version": "6.1.193-1"},
    {"kernel_package": "linux-image-6.1.0-57-cloud-amd64"},
    {"packages": (("python3.11-minimal", "3.11.2-6+deb12u10"), ("libc6", "2.36-9+deb12u14"))},
    {"packages": (("python3.11-minimal", "3.11.2-6+deb12u9"),)},
    {"wheels": (("protobuf", "7.36.3"),)},
    {"sources": (("agent", "d" * 64), ("guest", "b" * 64), ("proto", "c" * 64))},
    {"sources": (("agent", "a" * 64), ("guest", "e" * 64), ("proto", "c" * 64))},
    {"host_tools": (("erofs-utils", "1.6-1"),)},
])
def test_any_changed_input_changes_the_key(change):
    assert dataclasses.replace(BASE, **change).key() != BASE.key()


def test_kernel_release_comes_from_the_package_name():
    assert BASE.kernel_release == "6.1.0-56-cloud-amd64"


def test_tree_hash_follows_content_and_paths_not_mtimes(tmp_path):
    (tmp_path / "pkg").mkdir()
    a, b = tmp_path / "pkg/a.py", tmp_path / "pkg/b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    h = tree_sha256(tmp_path, [a, b])
    assert tree_sha256(tmp_path, [b, a]) == h
    os.utime(a, (1, 1))
    assert tree_sha256(tmp_path, [a, b]) == h
    a.write_text("x = 2\n")
    assert tree_sha256(tmp_path, [a, b]) != h
    a.write_text("x = 1\n")
    a.rename(tmp_path / "pkg/c.py")
    assert tree_sha256(tmp_path, [tmp_path / "pkg/c.py", b]) != h


def test_shipped_files_leave_out_tests_caches_and_host_tools(tmp_path):
    for rel in ("proto/__init__.py", "proto/gen/x_pb2.py", "proto/gen/x_pb2.pyi", "proto/src/x.proto",
                "proto/generate.py", "proto/tests/test_x.py", "proto/__pycache__/x.cpython-311.pyc"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    shipped = [str(p.relative_to(tmp_path)) for p in sources.shipped_files("proto", tmp_path)]
    assert shipped == ["proto/__init__.py", "proto/gen/x_pb2.py"]
    assert sources.module_names([tmp_path / s for s in shipped], tmp_path) == ["proto", "proto.gen.x_pb2"]


def test_the_recipe_is_the_guest_package_without_tests_or_output():
    recipe = {p.relative_to(sources.GUEST_DIR).as_posix() for p in sources.recipe_files()}
    assert {"build.py", "spec.py", "init.sh"} <= recipe
    assert not any(r.startswith(("tests/", "out/")) or "__pycache__" in r or r.endswith(".md") for r in recipe)


def test_resolve_against_this_hosts_apt_is_stable():
    """Real apt-cache/dpkg-query; no network. Two resolutions in a row give the same key."""
    first = inputs.resolve()
    assert first.kernel_package.startswith("linux-image-") and first.kernel_release.endswith("-cloud-amd64")
    assert dict(first.packages).keys() >= {"python3.11-minimal", "busybox-static", "libffi8"}
    assert dict(first.sources).keys() == {"agent", "guest", "proto"}
    assert inputs.resolve().key() == first.key()
