"""manifest.json round trip and checks; GuestArtifacts lookup and its NotBuiltError."""

from __future__ import annotations

import json
import os

import pytest

from guest import artifacts, manifest
from guest.errors import ManifestError, NotBuiltError


def _fake_build(directory, rootfs_bytes=b"\0" * 4096):
    directory.mkdir(parents=True)
    (directory / "vmlinux").write_bytes(b"\x7fELF" + b"k" * 100)
    (directory / "initrd.cpio").write_bytes(b"070701" + b"0" * 200)
    (directory / "rootfs.erofs").write_bytes(rootfs_bytes)
    m = manifest.make(key="0123456789abcdef", inputs={"schema": 1}, downloads={}, outputs_dir=directory,
                      details={"kernel_release": "6.1.0-56-cloud-amd64",
                               "rootfs": {"content_size": 1000, "agent_argv": ["/usr/bin/python3.11", "-m", "agent.main"]}})
    manifest.write(directory, m)
    return m


def test_round_trip_and_verify(tmp_path):
    m = _fake_build(tmp_path / "b")
    loaded = manifest.load(tmp_path / "b")
    assert loaded == m
    assert loaded["outputs"]["rootfs.erofs"]["size"] == 4096
    manifest.verify(tmp_path / "b", loaded, deep=True)


def test_verify_notices_a_size_change_and_deep_notices_a_content_change(tmp_path):
    m = _fake_build(tmp_path / "b")
    (tmp_path / "b/rootfs.erofs").write_bytes(b"\1" * 4096)  # same size
    manifest.verify(tmp_path / "b", m)
    with pytest.raises(ManifestError, match="sha256"):
        manifest.verify(tmp_path / "b", m, deep=True)
    (tmp_path / "b/rootfs.erofs").write_bytes(b"\1" * 10)
    with pytest.raises(ManifestError, match="bytes"):
        manifest.verify(tmp_path / "b", m)
    (tmp_path / "b/vmlinux").unlink()
    with pytest.raises(ManifestError, match="missing"):
        manifest.verify(tmp_path / "b", m)


@pytest.mark.parametrize("content", ["not json", json.dumps({"schema": 99}), json.dumps([1])])
def test_load_rejects_bad_manifests(tmp_path, content):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(ManifestError):
        manifest.load(tmp_path)


def test_artifacts_from_a_build_directory(tmp_path):
    _fake_build(tmp_path / "0123456789abcdef")
    os.symlink("0123456789abcdef", tmp_path / "current")
    art = artifacts.current(tmp_path)
    assert art.directory == (tmp_path / "0123456789abcdef").resolve()  # not the moving symlink
    assert art.key == "0123456789abcdef"
    assert art.rootfs.name == "rootfs.erofs" and art.rootfs_size == 4096
    assert art.kernel_release == "6.1.0-56-cloud-amd64"
    assert art.modules_list == "/etc/rund/modules.list"
    assert art.agent_argv == ("/usr/bin/python3.11", "-m", "agent.main")


def test_no_build_raises_not_built_with_the_command_to_run(tmp_path):
    with pytest.raises(NotBuiltError, match=r"run `python3 -m guest\.build`"):
        artifacts.current(tmp_path)


def test_a_broken_build_raises_not_built(tmp_path):
    _fake_build(tmp_path / "k")
    (tmp_path / "k/initrd.cpio").unlink()
    os.symlink("k", tmp_path / "current")
    with pytest.raises(NotBuiltError):
        artifacts.current(tmp_path)
