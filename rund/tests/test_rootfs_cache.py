"""The rootfs image cache against real mkfs.erofs, overlay and erofs mounts (as root): content fidelity, sharing,
pins, LRU eviction, corruption, too-large images, a full disk, and racing processes."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from rund import errors
from rund.procfs import argvs
from rund.resources.rootfs import (
    DiskFull, ImageTooLarge, RootfsCache, SnapshotMount, UnsupportedMount,
)

from .rootfs_trees import erofs_view, overlay_view, snapshot, two_layer_image

pytestmark = pytest.mark.root
MiB = 1 << 20


@pytest.fixture(autouse=True)
def _needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (overlay and erofs mounts)")


@pytest.fixture
def top():
    path = tempfile.mkdtemp(prefix="rund-rootfs-", dir="/tmp")
    yield path
    subprocess.run(["rm", "-rf", "--one-file-system", path], check=False)


@pytest.fixture
def image_layers(top):
    return two_layer_image(top)


def overlay(lowers, upper=None, work=None) -> list[SnapshotMount]:
    options = [f"lowerdir={':'.join(lowers)}"]
    if upper:
        options = [f"workdir={work}", f"upperdir={upper}", *options]
    return [SnapshotMount("overlay", "overlay", tuple(options))]


def random_layer(path: str, size: int) -> str:
    os.makedirs(path)
    with open(f"{path}/blob", "wb") as f:
        f.write(os.urandom(size))
    return path


def test_the_image_shows_exactly_what_the_host_overlay_shows(top, image_layers):
    cache = RootfsCache(f"{top}/cache", slot_bytes=16 * MiB, max_bytes=64 * MiB)
    image = cache.acquire(overlay(image_layers), "sb1")
    assert image.cached and image.built and image.path.stat().st_size == 16 * MiB
    assert image.path.stat().st_blocks * 512 < 4 * MiB  # the padding is sparse
    with overlay_view(list(image_layers), f"{top}/ov") as ov, erofs_view(str(image.path), f"{top}/ef") as ef:
        expected, actual = snapshot(ov), snapshot(ef)
        assert actual == expected
        # Whiteouts and the opaque dir were applied, not copied; the rest kept what matters to a container.
        assert "data/gone" not in actual and "dir-gone" not in actual
        assert sorted(p for p in actual if p.startswith("opq/")) == ["opq/new"]
        assert open(f"{ef}/data/changed").read() == "new\n"
        assert not any(k.startswith("trusted.overlay") for entry in actual.values() for k, _ in entry[4])
        user_file = os.lstat(f"{ef}/owned/user-file")
        assert (user_file.st_uid, user_file.st_gid, user_file.st_mode & 0o7777) == (1000, 1001, 0o640)
        assert os.lstat(f"{ef}/owned/suid").st_mode & 0o7777 == 0o4755
        assert os.getxattr(f"{ef}/xattrs/file", "user.rund.test") == b"value-1"
        assert os.lstat(f"{ef}/dev/null-copy").st_rdev == os.makedev(1, 3)
        assert os.lstat(f"{ef}/data/hardlink").st_ino == os.lstat(f"{ef}/data/keep").st_ino


def test_a_hit_shares_the_file_and_pins_per_owner(top, image_layers):
    cache = RootfsCache(f"{top}/cache", slot_bytes=16 * MiB, max_bytes=64 * MiB)
    first = cache.acquire(overlay(image_layers), "sb1")
    upper, work = f"{top}/u", f"{top}/w"
    os.mkdir(upper)
    os.mkdir(work)
    second = cache.acquire(overlay(image_layers, upper, work), "sb2")  # an active snapshot, empty upper
    assert second.path == first.path and second.key == first.key and not second.built
    stats = cache.statistics()
    assert (stats.entries, stats.builds, stats.hits, stats.pinned) == (1, 1, 1, 2)
    cache.release(first, "sb1")
    cache.release(first, "sb1")  # idempotent
    assert cache.statistics().pinned == 1
    cache.release_owner("sb2")
    cache.release_owner("sb2")
    assert cache.statistics().pinned == 0 and first.path.exists()  # unpinned, still cached


def test_a_non_empty_upper_gets_a_private_image_deleted_at_release(top, image_layers):
    cache = RootfsCache(f"{top}/cache", slot_bytes=16 * MiB, max_bytes=64 * MiB)
    upper, work = f"{top}/u", f"{top}/w"
    os.makedirs(f"{upper}/data")
    os.mkdir(work)
    with open(f"{upper}/data/volume", "w") as f:
        f.write("copied up by CRI")
    image = cache.acquire(overlay(image_layers, upper, work), "pod1")
    assert not image.cached and not image.upper_empty and image.path.stat().st_size == 16 * MiB
    with erofs_view(str(image.path), f"{top}/ef") as ef:
        assert open(f"{ef}/data/volume").read() == "copied up by CRI"
        assert open(f"{ef}/data/added").read().startswith("added")  # and the layers below
    assert cache.statistics().private == 1 and cache.statistics().entries == 0
    cache.release(image, "pod1")
    cache.release(image, "pod1")
    assert not image.path.exists() and cache.statistics().private == 0


def test_a_bind_source_gets_a_private_image_and_release_owner_deletes_it(top, image_layers):
    cache = RootfsCache(f"{top}/cache", slot_bytes=16 * MiB, max_bytes=64 * MiB)
    image = cache.acquire([SnapshotMount("bind", image_layers[1], ("rbind", "rw"))], "native")
    assert not image.cached
    with erofs_view(str(image.path), f"{top}/ef") as ef:
        assert open(f"{ef}/data/keep").read() == "kept\n"
    cache.release_owner("native")
    assert not image.path.exists()


def test_unsupported_mount_types_are_named(top):
    cache = RootfsCache(f"{top}/cache", slot_bytes=16 * MiB, max_bytes=64 * MiB)
    with pytest.raises(UnsupportedMount, match="'zfs'") as info:
        cache.acquire([SnapshotMount("zfs", "pool/x", ())], "sb")
    assert isinstance(info.value, errors.InvalidArgument)


def test_lru_eviction_spares_pinned_images(top, caplog):
    cache = RootfsCache(f"{top}/cache", slot_bytes=4 * MiB, max_bytes=4 * MiB)
    chains = {name: overlay([random_layer(f"{top}/{name}", int(1.5 * MiB))]) for name in "abcd"}
    a = cache.acquire(chains["a"], "o1")
    cache.release(a, "o1")
    time.sleep(0.05)
    b = cache.acquire(chains["b"], "o2")
    time.sleep(0.05)
    c = cache.acquire(chains["c"], "o3")  # 3 x 1.5 MiB > 4 MiB: the unpinned, least recently used one goes
    assert not a.path.exists() and b.path.exists() and c.path.exists()
    assert cache.statistics().evictions == 1
    with caplog.at_level(logging.WARNING, logger="rund.resources.rootfs"):
        d = cache.acquire(chains["d"], "o4")  # over the bound, but everything is in use: nothing goes
    assert all(i.path.exists() for i in (b, c, d)) and "in use" in caplog.text
    cache.release(c, "o3")
    time.sleep(0.05)
    cache.release(b, "o2")  # b was used more recently than c
    a = cache.acquire(chains["a"], "o1")  # rebuilt; c goes first, then b
    assert a.built and not c.path.exists() and not b.path.exists() and d.path.exists()
    assert cache.statistics().bytes <= 4 * MiB


def test_corrupt_entries_are_rebuilt_and_logged(top, image_layers, caplog):
    cache = RootfsCache(f"{top}/cache", slot_bytes=16 * MiB, max_bytes=64 * MiB)
    image = cache.acquire(overlay(image_layers), "sb")
    cache.release(image, "sb")
    with open(image.path, "r+b") as f:
        f.seek(1024)
        f.write(b"\0\0\0\0")
    with caplog.at_level(logging.WARNING, logger="rund.resources.rootfs"):
        again = cache.acquire(overlay(image_layers), "sb")
    assert again.built and "magic" in caplog.text
    cache.release(again, "sb")
    os.truncate(image.path, 8 * MiB)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rund.resources.rootfs"):
        again = cache.acquire(overlay(image_layers), "sb")
    assert again.built and "slot size" in caplog.text and again.path.stat().st_size == 16 * MiB
    cache.release(again, "sb")
    # A flipped data byte passes the hot path's check; verify() reads everything and drops the entry.
    with open(image.path, "r+b") as f:
        f.seek(8192)
        byte = f.read(1)
        f.seek(8192)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert cache.verify() == [image.key]
    assert cache.acquire(overlay(image_layers), "sb").built


def test_an_image_larger_than_its_slot_is_refused_and_leaves_nothing(top):
    cache = RootfsCache(f"{top}/cache", slot_bytes=2 * MiB, max_bytes=64 * MiB)
    with pytest.raises(ImageTooLarge) as info:
        cache.acquire(overlay([random_layer(f"{top}/big", 3 * MiB)]), "sb")
    assert isinstance(info.value, errors.ResourceExhausted)
    assert info.value.slot_bytes == 2 * MiB and info.value.image_bytes > 3 * MiB
    assert str(2 * MiB) in str(info.value)
    assert os.listdir(f"{top}/cache/images") == [] and os.listdir(f"{top}/cache/tmp") == []
    assert cache.statistics().pinned == 0


def test_a_full_disk_is_a_typed_error_and_leaves_nothing(top):
    os.makedirs(f"{top}/small")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", f"{top}/small"], check=True)
    try:
        cache = RootfsCache(f"{top}/small/cache", slot_bytes=16 * MiB, max_bytes=64 * MiB)
        with pytest.raises(DiskFull) as info:
            cache.acquire(overlay([random_layer(f"{top}/big", 6 * MiB)]), "sb")
        assert isinstance(info.value, errors.ResourceExhausted)
        assert os.listdir(f"{top}/small/cache/images") == [] and os.listdir(f"{top}/small/cache/tmp") == []
        assert os.statvfs(f"{top}/small").f_bfree * 4096 > 2 * MiB  # the half-written temp file is gone
    finally:
        subprocess.run(["umount", f"{top}/small"], check=True)


def test_racing_processes_build_once_and_share(top):
    layer = random_layer(f"{top}/layer", 24 * MiB)  # a build long enough for the racers to meet
    gate = f"{top}/go"
    script = textwrap.dedent(f"""
        import os, time
        from rund.resources.rootfs import RootfsCache, SnapshotMount
        cache = RootfsCache({top + '/cache'!r}, slot_bytes=32 << 20, max_bytes=256 << 20)
        while not os.path.exists({gate!r}):
            time.sleep(0.001)
        image = cache.acquire([SnapshotMount("overlay", "overlay", ("lowerdir={layer}",))], "racer" + str(os.getpid()))
        print(image.built, image.path)
    """)
    racers = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                               cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__)))) for _ in range(5)]
    time.sleep(1.0)
    open(gate, "w").close()
    results = [r.communicate(timeout=120)[0].split() for r in racers]
    assert all(r.returncode == 0 for r in racers)
    assert sorted(built for built, _ in results) == ["False"] * 4 + ["True"]
    assert len({path for _, path in results}) == 1
    assert len(os.listdir(f"{top}/cache/pins/{os.path.basename(results[0][1])[:-6]}")) == 5


def test_a_killed_build_takes_its_mkfs_and_mount_along_and_its_scratch_is_swept(top):
    layer = random_layer(f"{top}/layer", 64 * MiB)
    script = textwrap.dedent(f"""
        from rund.resources.rootfs import RootfsCache, SnapshotMount
        cache = RootfsCache({top + '/cache'!r}, slot_bytes=128 << 20, max_bytes=1 << 30)
        cache.acquire([SnapshotMount("overlay", "overlay", ("lowerdir={layer}",))], "victim")
    """)
    victim = subprocess.Popen([sys.executable, "-c", script],
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    deadline = time.monotonic() + 30
    while not builders(top):  # kill it while mkfs.erofs runs
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.002)
    victim.kill()
    victim.wait()
    time.sleep(0.3)
    assert not builders(top)
    with open("/proc/self/mountinfo") as f:
        assert top not in f.read()  # the merge mount lived in the build's private mount namespace only
    cache = RootfsCache(f"{top}/cache", slot_bytes=128 * MiB, max_bytes=1 << 30)  # sweeps dead scratch
    assert os.listdir(f"{top}/cache/images") == [] and os.listdir(f"{top}/cache/tmp") == []
    assert cache.acquire(overlay([layer]), "next").built


def builders(top: str) -> list[int]:
    """mkfs.erofs processes writing into this test's cache."""
    return [pid for pid, argv in argvs()
            if argv[0].endswith(b"mkfs.erofs") and any(top.encode() in arg for arg in argv)]


def _modes(root: str) -> dict[str, int]:
    out = {"": os.stat(root).st_mode & 0o7777}
    for top_dir, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top_dir, name)
            out[os.path.relpath(path, root)] = os.lstat(path).st_mode & 0o7777
    return out


def _nobody_can_read(path: str) -> bool:
    return subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", f"cat '{path}' >/dev/null"],
                          capture_output=True).returncode == 0


def test_the_cache_is_roots_alone(top, image_layers):
    cache = RootfsCache(f"{top}/cache", slot_bytes=16 * MiB, max_bytes=64 * MiB)
    image = cache.acquire(overlay(image_layers), "sb1")
    upper, work = f"{top}/u", f"{top}/w"
    os.makedirs(f"{upper}/data")
    os.mkdir(work)
    with open(f"{upper}/data/new", "w") as f:
        f.write("x")
    private = cache.acquire(overlay(image_layers, upper, work), "sb2")
    os.chmod(top, 0o755)                          # only the cache's own modes stand between nobody and the files
    modes = _modes(f"{top}/cache")
    assert modes[""] == 0o700
    for rel, mode in modes.items():
        assert mode & 0o077 == 0, f"{rel} is {oct(mode)}"
    assert modes[os.path.relpath(image.path, f"{top}/cache")] == 0o400
    assert modes[os.path.relpath(private.path, f"{top}/cache")] == 0o400
    assert modes[f"pins/{image.key}/sb1"] == 0o600
    assert not _nobody_can_read(str(image.path)) and not _nobody_can_read(str(private.path))


def test_a_world_readable_cache_from_before_is_tightened_on_open(top, image_layers):
    cache = RootfsCache(f"{top}/cache", slot_bytes=16 * MiB, max_bytes=64 * MiB)
    image = cache.acquire(overlay(image_layers), "sb1")
    for rel in _modes(f"{top}/cache"):            # as an older rund left it: 0755 dirs, 0644 pins, 0444 images
        path = os.path.join(f"{top}/cache", rel)
        os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)
    os.chmod(top, 0o755)
    assert _nobody_can_read(str(image.path))
    reopened = RootfsCache(f"{top}/cache", slot_bytes=16 * MiB, max_bytes=64 * MiB)
    assert all(mode & 0o077 == 0 for mode in _modes(f"{top}/cache").values())
    assert not _nobody_can_read(str(image.path))
    assert reopened.acquire(overlay(image_layers), "sb2").path == image.path   # still a hit after tightening
