"""Rootfs mount parsing, cache keys, owners and locks: no root, no mkfs."""
from __future__ import annotations

import os
import time

import pytest

from rund import errors
from rund.resources.rootfs import (
    InvalidCacheConfig, InvalidOwner, LayerNotFound, RootfsCache, SnapshotMount, UnsupportedMount, plan_source,
)
from rund.resources.rootfs.erofs import MAGIC, quick_problem
from rund.resources.rootfs.key import chain_key
from rund.resources.rootfs.layout import check_owner
from rund.resources.rootfs.locks import open_locked
from rund.resources.rootfs.scratch import Scratch, sweep


@pytest.fixture
def layers(tmp_path):
    paths = {name: tmp_path / name for name in ("l1", "l2", "upper", "work")}
    for path in paths.values():
        path.mkdir()
    return paths


def overlay(*options: str) -> list[SnapshotMount]:
    return [SnapshotMount("overlay", "overlay", tuple(options))]


def test_an_active_snapshot_with_an_empty_upper_is_its_lower_chain(layers):
    source = plan_source(overlay("index=off", f"workdir={layers['work']}", f"upperdir={layers['upper']}",
                                 f"lowerdir={layers['l2']}:{layers['l1']}"))
    assert source.paths == (str(layers["l2"]), str(layers["l1"]))
    assert source.cacheable and source.merge and source.upper_empty


def test_a_view_snapshot_has_only_lowerdirs_and_shares_the_key(layers):
    view = plan_source(overlay(f"lowerdir={layers['l2']}:{layers['l1']}"))
    active = plan_source(overlay(f"upperdir={layers['upper']}", f"workdir={layers['work']}",
                                 f"lowerdir={layers['l2']}:{layers['l1']}"))
    assert view.cacheable
    assert chain_key(view, 64 << 20) == chain_key(active, 64 << 20)


def test_a_non_empty_upper_becomes_part_of_a_private_image(layers):
    (layers["upper"] / "copied-up").write_text("volume content")
    source = plan_source(overlay(f"upperdir={layers['upper']}", f"workdir={layers['work']}",
                                 f"lowerdir={layers['l1']}"))
    assert not source.cacheable and not source.upper_empty
    assert source.paths == (str(layers["upper"]), str(layers["l1"]))


def test_bind_is_a_private_plain_copy(layers):
    source = plan_source([SnapshotMount("bind", str(layers["l1"]), ("rbind", "rw"))])
    assert not source.cacheable and not source.merge and source.paths == (str(layers["l1"]),)


@pytest.mark.parametrize("mounts, what", [
    ([SnapshotMount("tmpfs", "tmpfs", ())], "'tmpfs'"),
    ([], "got 0"),
    ([SnapshotMount("overlay", "overlay", ("upperdir=/x",))], "lowerdir"),
    ([SnapshotMount("overlay", "overlay", ("lowerdir=relative/path",))], "absolute"),
    ([SnapshotMount("overlay", "overlay", ("lowerdir=/a,b",))], "escaped"),
])
def test_unsupported_mounts_are_invalid_arguments_that_say_why(mounts, what):
    with pytest.raises(UnsupportedMount) as info:
        plan_source(mounts)
    assert isinstance(info.value, errors.InvalidArgument) and what in str(info.value)


def test_missing_layers_are_not_found(layers):
    with pytest.raises(LayerNotFound) as info:
        plan_source(overlay(f"lowerdir={layers['l1']}:/no/such/layer"))
    assert isinstance(info.value, errors.NotFound) and "/no/such/layer" in str(info.value)
    (layers["l1"] / "file").write_text("")
    with pytest.raises(LayerNotFound):
        plan_source([SnapshotMount("bind", str(layers["l1"] / "file"), ())])


def test_the_key_follows_layer_identity_order_and_slot_size(layers):
    mounts = overlay(f"lowerdir={layers['l2']}:{layers['l1']}")
    key = chain_key(plan_source(mounts), 64 << 20)
    assert key == chain_key(plan_source(mounts), 64 << 20)
    assert key != chain_key(plan_source(mounts), 128 << 20)
    assert key != chain_key(plan_source(overlay(f"lowerdir={layers['l1']}:{layers['l2']}")), 64 << 20)
    os.rmdir(layers["l1"])  # a snapshot removed and its path reused: same path, different layer
    time.sleep(0.01)
    layers["l1"].mkdir()
    assert key != chain_key(plan_source(mounts), 64 << 20)


@pytest.mark.parametrize("owner", ["", "../x", "a/b", ".hidden", "x" * 201, None])
def test_owners_must_be_plain_names(owner):
    with pytest.raises(InvalidOwner):
        check_owner(owner)


def test_owner_names_of_containerd_ids_are_fine():
    assert check_owner("k8s.io_pod-1234_abc") == "k8s.io_pod-1234_abc"


@pytest.mark.parametrize("slot, bound", [(0, 1 << 30), (3 << 20, 1 << 30), (64 << 20, 32 << 20)])
def test_cache_sizes_are_checked(tmp_path, slot, bound):
    with pytest.raises(InvalidCacheConfig):
        RootfsCache(str(tmp_path / "cache"), slot_bytes=slot, max_bytes=bound)


def test_quick_check_reports_size_and_magic(tmp_path):
    image = tmp_path / "image"
    image.write_bytes(b"\0" * 1024 + MAGIC + b"\0" * 1020)
    assert quick_problem(str(image), 2048) is None
    assert "slot size" in quick_problem(str(image), 4096)
    image.write_bytes(b"\0" * 2048)
    assert "magic" in quick_problem(str(image), 2048)
    with pytest.raises(FileNotFoundError):
        quick_problem(str(tmp_path / "missing"), 2048)


def test_a_lock_unlinked_by_its_holder_is_not_held_by_the_next_waiter(tmp_path):
    path = str(tmp_path / "lock")
    first = open_locked(path, exclusive=True)
    assert open_locked(path, exclusive=False, blocking=False) is None
    os.unlink(path)  # what an evictor does before it lets go
    second = open_locked(path, exclusive=True, blocking=False)  # a new file, free
    assert second is not None and os.fstat(second).st_ino != os.fstat(first).st_ino
    os.close(first)
    os.close(second)


def test_sweep_removes_only_scratch_of_dead_builds(tmp_path):
    tmp = str(tmp_path)
    (tmp_path / "dead.1234").mkdir()
    (tmp_path / "dead.1234" / "image.erofs").write_bytes(b"half")
    (tmp_path / "dead.1234.lock").write_bytes(b"")
    with Scratch(tmp, "live") as live:
        assert sweep(tmp) == 1
        assert os.path.isdir(live.path)
        assert sorted(os.listdir(tmp)) == sorted([os.path.basename(live.path), os.path.basename(live.path) + ".lock"])
    assert os.listdir(tmp) == []
