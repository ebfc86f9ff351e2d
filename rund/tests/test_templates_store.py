"""Template store without a VM: keys, digest cache, manifests, integrity checks, build locks, publish/remove.

Template files here are plain data files written by the test; the checks read them exactly as they read a real
template's RAM and state files.
"""
from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from rund import errors
from rund.hypervisor import Accel, Machine
from rund.templates.builder import shape_from_json, shape_to_json
from rund.templates.digests import DigestCache
from rund.templates.errors import TemplateBusy, TemplateCorrupt, TemplateMissing
from rund.templates.integrity import record_memory, record_state
from rund.templates.key import template_key
from rund.templates.lock import BuildLock
from rund.templates.manifest import MEMORY_CHUNK_BYTES, Manifest
from rund.templates.shape import SandboxShape
from rund.templates.store import TemplateStore, filesystem_type, mapped_templates
from rund.hypervisor.testing import scratch_dir

MiB = 1 << 20


@pytest.fixture
def shm():
    with scratch_dir(prefix="rund-tpl-unit-", parent="/dev/shm") as path:
        yield path


@pytest.fixture
def shape(tmp_path) -> SandboxShape:
    for name, data in (("vmlinux", b"kernel"), ("initrd", b"initrd"), ("rootfs.erofs", b"image" * 100)):
        (tmp_path / name).write_bytes(data)
    return SandboxShape(machine=Machine.Q35, accel=Accel.TCG, vcpus=1, memory_mib=256, tb_size_mib=16,
                        kernel=tmp_path / "vmlinux", initrd=tmp_path / "initrd", image=tmp_path / "rootfs.erofs",
                        image_bytes=500, kernel_params="", rootfs_slots=1, rootfs_slot_bytes=64 * MiB,
                        tsc_khz=2_000_000)


def make_template_files(directory: Path, memory_bytes: int = 4 * MiB) -> None:
    directory.mkdir(parents=True)
    with open(directory / "memory", "wb") as f:
        f.truncate(memory_bytes)              # sparse like a real RAM file
        f.seek(MiB + 17)
        f.write(b"guest data")
    (directory / "state").write_bytes(os.urandom(300_000))


def publish(store: TemplateStore, key: str, inputs: dict | None = None) -> Manifest:
    build = store.new_build_dir(key)
    os.rmdir(build)
    make_template_files(build)
    manifest = Manifest(key=key, inputs=inputs or {"test": True}, created_unix=time.time(),
                        state=record_state(build / "state"), memory=record_memory(build / "memory"))
    store.publish(build, manifest)
    return manifest


# ---- key ---------------------------------------------------------------------------------------

def test_key_is_stable_and_changes_with_every_input(shape, shm):
    digests = DigestCache(shm / "digests.json")
    base = template_key(shape, digests, warm=True).key
    assert template_key(shape, digests, warm=True).key == base
    assert template_key(shape, digests, warm=False).key != base
    for change in (dict(vcpus=2), dict(memory_mib=512), dict(rootfs_slots=2),
                   dict(rootfs_slot_bytes=128 * MiB), dict(kernel_params="x=1"), dict(tsc_khz=1),
                   dict(machine=Machine.MICROVM), dict(key_extra=("net",))):
        assert template_key(replace(shape, **change), digests, warm=True).key != base, change
    # the TCG buffer is QEMU's cache, not guest state: runtime classes that differ only there share a template
    assert template_key(replace(shape, tb_size_mib=4), digests, warm=True).key == base
    # nor is KSM's mem-merge (host-side madvise): a class that opts out shares the template too
    assert template_key(replace(shape, mem_merge=False), digests, warm=True).key == base
    # the binary's path does not count, its content does
    assert template_key(replace(shape, qemu_binary="/usr/bin/qemu-system-x86_64"), digests, warm=True).key == base


def test_the_guest_cmdline_carries_the_idle_params_and_the_class_params_last(shape):
    from rund.hypervisor.cmdline import IDLE_PARAMS, START_PARAMS
    words = replace(shape, kernel_params="psi=1 foo=bar").cmdline().split()
    for w in (*IDLE_PARAMS, *START_PARAMS):
        assert w in words
    assert words[-2:] == ["psi=1", "foo=bar"]          # later words win: a runtime class can take one back
    assert words.index("psi=0") < words.index("psi=1")
    hot = replace(shape, memory_hotplug_mib=512).cmdline().split()
    assert "memhp_default_state=online_movable" in hot and set(IDLE_PARAMS) <= set(hot)


def test_key_changes_with_the_agent_ports(shape, shm, monkeypatch):
    """virtio-serial's max_ports is in argv for every shape, guest-visible and checked by migration."""
    from rund.hypervisor import spec as hvspec
    digests = DigestCache(shm / "digests.json")
    base = template_key(shape, digests, warm=True).key
    monkeypatch.setattr(hvspec, "AGENT_MAX_PORTS", 31)
    assert template_key(shape, digests, warm=True).key != base


def test_key_follows_file_content(shape, shm):
    digests = DigestCache(shm / "digests.json")
    before = template_key(shape, digests, warm=True).key
    time.sleep(0.01)
    shape.image.write_bytes(b"other image")   # same path, new content (new mtime and size)
    assert template_key(shape, DigestCache(shm / "digests.json"), warm=True).key != before


def test_digest_cache_survives_processes_and_rehashes_on_change(tmp_path, shm):
    f = tmp_path / "blob"
    f.write_bytes(b"a" * 1000)
    cache = DigestCache(shm / "d.json")
    first = cache.sha256(f)
    entry = json.loads((shm / "d.json").read_text())[str(f)]
    assert entry["sha256"] == first
    # a new process trusts the cache while the identity holds: prove it by poisoning the stored digest
    entry["sha256"] = "cached"
    (shm / "d.json").write_text(json.dumps({str(f): entry}))
    assert DigestCache(shm / "d.json").sha256(f) == "cached"
    f.write_bytes(b"b" * 1001)
    assert DigestCache(shm / "d.json").sha256(f) not in ("cached", first)


def test_damaged_digest_cache_only_costs_a_rehash(tmp_path, shm):
    f = tmp_path / "blob"
    f.write_bytes(b"x")
    (shm / "d.json").write_text("{not json")
    assert len(DigestCache(shm / "d.json").sha256(f)) == 64


# ---- manifest and integrity --------------------------------------------------------------------

def test_publish_then_get_verifies(shm):
    store = TemplateStore(shm / "t")
    publish(store, "k1")
    t = store.get("k1")
    assert t.memory.stat().st_mode & 0o777 == 0o444 and t.state.stat().st_mode & 0o777 == 0o444
    assert len(t.manifest.memory.chunks) == 4 and t.manifest.memory.chunk_bytes == MEMORY_CHUNK_BYTES
    store.get("k1", samples=None)
    assert store.keys() == ["k1"]
    assert not list(store.root.glob(".build-*"))


def test_missing_template(shm):
    with pytest.raises(TemplateMissing) as e:
        TemplateStore(shm / "t").get("nope")
    assert isinstance(e.value, errors.NotFound)


@pytest.mark.parametrize("damage", ["state_byte", "state_truncate", "memory_write", "memory_replace",
                                    "manifest_garbage", "manifest_gone"])
def test_damage_is_detected(shm, damage):
    store = TemplateStore(shm / "t")
    publish(store, "k1")
    d = store.path("k1")
    for p in d.iterdir():
        os.chmod(p, 0o644)
    if damage == "state_byte":
        st = os.stat(d / "state")
        with open(d / "state", "r+b") as f:
            f.seek(1000)
            b = f.read(1)
            f.seek(1000)
            f.write(bytes([b[0] ^ 1]))
        os.utime(d / "state", ns=(st.st_atime_ns, st.st_mtime_ns))   # even with the mtime put back
    elif damage == "state_truncate":
        os.truncate(d / "state", 10)
    elif damage == "memory_write":
        with open(d / "memory", "r+b") as f:
            f.write(b"x")
    elif damage == "memory_replace":
        data = (d / "memory").read_bytes()
        (d / "memory").unlink()
        (d / "memory").write_bytes(data)
    elif damage == "manifest_garbage":
        (d / "manifest.json").write_text("{}")
    elif damage == "manifest_gone":
        (d / "manifest.json").unlink()
    with pytest.raises(TemplateCorrupt) as e:
        store.get("k1")
    assert isinstance(e.value, errors.FailedPrecondition)


def test_in_place_memory_change_that_keeps_mtime_is_caught_by_chunks(shm):
    """A shared-mmap write need not touch mtime: the full check (and, by chance, the per-clone sample) finds it."""
    store = TemplateStore(shm / "t")
    publish(store, "k1")
    mem = store.path("k1") / "memory"
    os.chmod(mem, 0o644)
    st = os.stat(mem)
    with open(mem, "r+b") as f:
        f.seek(3 * MiB + 5)
        f.write(b"!")
    os.utime(mem, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(TemplateCorrupt, match="chunk 3"):
        store.get("k1", samples=None)
    caught = 0
    for _ in range(40):   # 2 of 4 chunks per check: found about half the time
        try:
            store.get("k1")
        except TemplateCorrupt:
            caught += 1
    assert 0 < caught < 40


def test_manifest_for_another_key_is_corrupt(shm):
    store = TemplateStore(shm / "t")
    publish(store, "k1")
    os.rename(store.path("k1"), store.path("k2"))
    with pytest.raises(TemplateCorrupt, match="manifest is for key k1"):
        store.get("k2")


def test_remove_is_atomic_and_keeps_open_files_readable(shm):
    store = TemplateStore(shm / "t")
    publish(store, "k1")
    with open(store.path("k1") / "memory", "rb") as held:   # a clone maps it
        assert store.remove("k1", reason="test")
        assert not store.path("k1").exists() and store.keys() == []
        held.seek(MiB + 17)
        assert held.read(10) == b"guest data"
    assert not store.remove("k1")
    assert not list(store.root.glob(".trash-*"))


def test_templates_dir_must_be_tmpfs(tmp_path, shm):
    assert filesystem_type(shm) == "tmpfs"
    if filesystem_type(tmp_path) in ("tmpfs", "hugetlbfs"):
        pytest.skip("tmp_path is on tmpfs here")
    with pytest.raises(errors.FailedPrecondition, match="tmpfs"):
        TemplateStore(tmp_path / "t").ensure_root()


# ---- locks -------------------------------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from rund.templates.lock import BuildLock
lock = BuildLock(Path(sys.argv[1]))
assert lock.try_acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_build_lock_excludes_other_processes_and_dies_with_its_holder(shm):
    path = shm / "k.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        lock = BuildLock(path)
        assert not lock.try_acquire()
        with pytest.raises(TemplateBusy):
            with lock:
                pass
        holder.kill()   # the kernel drops a dead holder's flock
        holder.wait()
        assert lock.try_acquire() and lock.held
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


async def test_build_lock_wait_times_out_typed(shm):
    first, second = BuildLock(shm / "k.lock"), BuildLock(shm / "k.lock")
    assert first.try_acquire()   # flock is per open file description: a second open in this process conflicts
    with pytest.raises(TemplateBusy):
        await second.acquire(timeout=0.3)
    first.release()
    await second.acquire(timeout=1.0)
    second.release()


def test_stale_build_dirs_are_removed_by_the_next_builder(shm):
    store = TemplateStore(shm / "t")
    store.ensure_root()
    stale = store.root / ".build-k1-99999"
    stale.mkdir()
    (stale / "memory").write_bytes(b"half")
    fresh = store.new_build_dir("k1")
    assert not stale.exists() and fresh.is_dir()


# ---- builder request ---------------------------------------------------------------------------

def test_shape_round_trips_through_the_builder_request(shape):
    back = shape_from_json(json.loads(json.dumps(shape_to_json(shape))))
    assert back == shape


def test_a_rebuilt_shape_prunes_the_templates_it_supersedes(shm):
    store = TemplateStore(shm)
    small, big = {"machine": "q35", "memory_mib": 256}, {"machine": "q35", "memory_mib": 512}
    publish(store, "old", {"shape": small, "warm": True, "image_sha256": "a"})
    publish(store, "other", {"shape": big, "warm": True, "image_sha256": "a"})
    publish(store, "cold", {"shape": small, "warm": False, "image_sha256": "a"})
    held = store.lock("busy")
    publish(store, "busy", {"shape": small, "warm": True, "image_sha256": "b"})
    assert held.try_acquire()                # a build of it is running elsewhere: it stays
    try:
        new = publish(store, "new", {"shape": small, "warm": True, "image_sha256": "c"})
        assert store.prune_superseded(new) == ["old"]
    finally:
        held.release()
    assert store.keys() == ["busy", "cold", "new", "other"]


def test_a_class_with_spare_vms_has_a_rootfs_hotplug_slot_more_for_their_warm_up():
    """A spare VM's warm-up takes the first rootfs hotplug slot (rund/runtime/spares.py): the pod keeps as many as
    its class's [rootfs] hotplug_slots."""
    from rund.config import Config, TemplateConfig
    from rund.errors import FailedPrecondition
    from rund.templates import shape_from_config
    try:
        plain = shape_from_config(Config())
    except FailedPrecondition as e:
        pytest.skip(str(e))                         # no guest image built
    with_spares = shape_from_config(Config(templates=TemplateConfig(spare_vms=2)))
    assert plain.rootfs_hotplug_slots == Config().rootfs.hotplug_slots
    assert with_spares.rootfs_hotplug_slots == plain.rootfs_hotplug_slots + 1


def test_prune_unused_removes_what_no_launch_cloned_for_long_and_no_process_maps(shm):
    store = TemplateStore(shm / "t")
    for key in ("old", "recent", "kept", "mapped"):
        publish(store, key)
    day = 24 * 3600
    now = time.time()
    for key in ("old", "kept", "mapped"):
        os.utime(store.path(key), (now - 2 * day, now - 2 * day))
    store.mark_used(store.load("recent"))
    assert now - store.last_used("recent") < 60
    with open(store.path("mapped") / "memory", "rb") as f:
        m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)   # a clone of it runs
        try:
            assert "mapped" in mapped_templates(store.root)
            removed = store.prune_unused(day, keep={"kept"})
        finally:
            m.close()
    assert [k for k, _ in removed] == ["old"] and removed[0][1] > 0
    assert sorted(store.keys()) == ["kept", "mapped", "recent"]
    assert store.prune_unused(day, keep={"kept"}) == [("mapped", removed[0][1])]     # once no process maps it
