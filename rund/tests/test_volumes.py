"""The pod's volume share on the host (rund/runtime/volumes.py), with real mounts: binds in, binds out, read-only and
propagation on the host bind, and that nothing of the host's data is ever removed, by a teardown, by the state dir's
removal, or by `delete` after a shim crash."""
from __future__ import annotations

import os
import subprocess

import pytest

from rund.errors import InvalidArgument
from rund.hypervisor.paths import VMPaths
from rund.runtime.state import SandboxDir
from rund.runtime.volumes import PodShare, Volume, bind, mounts_under, prepare, teardown
from rund.tests.test_shim_delete import bind as rootfs_bind, layer, leftovers, run_delete  # noqa: F401 - leftovers:
# the fixture of a dead shim's sandbox

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _root(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts)")
    yield
    for point in sorted(mounts_under(str(tmp_path)), key=len, reverse=True):    # a failed test's binds
        subprocess.run(["umount", "-l", point], check=False)


def volume(index: int, source, *options: str, destination: str = "/v") -> Volume:
    return Volume(index, {"destination": destination, "source": str(source), "options": ["rbind", *options]})


@pytest.fixture
def host(tmp_path):
    data = tmp_path / "host"
    (data / "sub").mkdir(parents=True)
    (data / "kept").write_text("kept\n")
    (data / "empty-file").touch()
    return data


def test_binds_are_seen_under_the_share_and_go_with_their_container(tmp_path, host):
    share = PodShare(tmp_path / "sb" / "volumes")
    share.prepare()
    assert str(share.path) in mounts_under(str(share.path))          # a private mount of its own
    share.bind_container("c1", [volume(0, host), volume(1, host / "kept")])
    share.bind_container("c2", [volume(0, host)])
    assert (share.path / "c1" / "0" / "kept").read_text() == "kept\n"
    assert (share.path / "c1" / "1").read_text() == "kept\n"            # a file volume
    (share.path / "c2" / "0" / "written").write_text("x")
    assert (host / "written").read_text() == "x"
    share.unbind_container("c1")
    assert not (share.path / "c1").exists() and (share.path / "c2" / "0" / "kept").exists()
    share.teardown()
    assert mounts_under(str(tmp_path)) == [] and not share.path.exists()
    assert sorted(p.name for p in host.iterdir()) == ["empty-file", "kept", "sub", "written"]


def test_a_read_only_volume_is_a_read_only_bind_on_the_host(tmp_path, host):
    share = tmp_path / "volumes"
    prepare(share)
    try:
        bind(share, "c", volume(0, host, "ro"))
        with pytest.raises(OSError, match="Read-only"):
            (share / "c" / "0" / "nope").write_text("x")
    finally:
        teardown(share)
    assert not (host / "nope").exists()


@pytest.mark.parametrize("option, seen", [("rslave", True), ("rprivate", False)])
def test_host_mounts_after_the_bind_reach_a_slave_volume_only(tmp_path, host, option, seen):
    subprocess.run(["mount", "--bind", str(host), str(host)], check=True)
    subprocess.run(["mount", "--make-rshared", str(host)], check=True)
    share = tmp_path / "volumes"
    try:
        prepare(share)
        bind(share, "c", volume(0, host, option))
        subprocess.run(["mount", "-t", "tmpfs", "late", str(host / "sub")], check=True)
        (host / "sub" / "on-tmpfs").write_text("late")
        assert (share / "c" / "0" / "sub" / "on-tmpfs").exists() is seen
    finally:
        teardown(share)
        subprocess.run(["umount", "-R", str(host)], check=False)
    assert mounts_under(str(share)) == []


def test_a_missing_source_is_invalid_argument_and_leaves_nothing(tmp_path):
    share = PodShare(tmp_path / "volumes")
    share.prepare()
    with pytest.raises(InvalidArgument, match="mount /v: source .* does not exist"):
        share.bind_container("c", [volume(0, tmp_path / "missing")])
    assert not (share.path / "c").exists()
    share.teardown()


def test_removing_the_state_dir_unmounts_first_and_never_deletes_through_a_bind(tmp_path, host):
    sdir = SandboxDir(tmp_path / "state", "ns", "sb")
    sdir.create()
    share = PodShare(VMPaths(sdir.path).share)
    share.prepare()
    share.bind_container("c", [volume(0, host)])
    sdir.remove()                          # what a teardown that forgot the share would do
    assert mounts_under(str(tmp_path / "state")) == [] and not sdir.path.exists()
    assert (host / "kept").read_text() == "kept\n" and (host / "empty-file").exists() and (host / "sub").is_dir()


def test_a_share_with_another_filesystem_left_under_it_is_not_emptied(tmp_path, host, monkeypatch):
    share = tmp_path / "volumes"
    prepare(share)
    bind(share, "c", volume(0, host))
    import rund.runtime.volumes as volumes
    monkeypatch.setattr(volumes, "_detach", lambda target: None)      # an unmount that did nothing
    monkeypatch.setattr(volumes, "mounts_under", lambda path: [])     # and a mount table that hides it
    assert teardown(share) is False
    monkeypatch.undo()
    assert (host / "empty-file").exists() and (host / "sub").is_dir()   # nothing removed through the bind
    assert teardown(share) is True and not share.exists()


def test_delete_after_a_shim_crash_unbinds_a_member_then_the_whole_share(leftovers, host):  # noqa: F811
    share = PodShare(VMPaths(leftovers.sdir.path).share)
    share.prepare()
    share.bind_container("sb", [volume(0, host)])
    leftovers.add_container("member", rootfs_bind(layer(host.parent / "rootfs-member", "member\n")))
    share.bind_container("member", [volume(0, host)])
    run_delete("member", leftovers.bundles["member"])
    assert not (share.path / "member").exists() and (share.path / "sb" / "0" / "kept").exists()
    run_delete("sb", leftovers.bundles["sb"])
    assert mounts_under(str(leftovers.root)) == [] and not leftovers.sdir.path.exists()
    assert (host / "kept").read_text() == "kept\n" and (host / "empty-file").exists()
