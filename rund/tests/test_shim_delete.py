"""`containerd-shim-rund-v2 ... delete` as containerd runs it after a shim died: a real subprocess of the shim binary
releasing what the dead shim's records name (rootfs pins in a real RootfsCache, the VMM pid, the state dir).

The VMM is stood in for by a `sleep` we start: only its pid and start time are bookkept, nothing else of QEMU.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from proto.gen.containerd.task.v2 import shim_pb2
from rund import config
from rund.resources.rootfs import RootfsCache, RootfsImage, SnapshotMount
from rund.runtime.resource_config import rootfs_cache
from rund.runtime.rootfs import owner_of
from rund.runtime.state import (
    BUNDLE_POINTER, ContainerRecord, SandboxDir, SandboxRecord, process_start_ticks, write_json_atomic,
)
from rund.shim.delete import KILLED_EXIT_STATUS

REPO = Path(__file__).resolve().parents[2]
SHIM = Path(sys.executable).parent / "containerd-shim-rund-v2"
NS = "ns"
MiB = 1 << 20



def needs_root(test):
    skip = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (rootfs images keep owners and modes)")
    return pytest.mark.root(skip(test))


def run_delete(container_id: str, bundle: Path) -> tuple[shim_pb2.DeleteResponse, subprocess.CompletedProcess]:
    proc = subprocess.run([str(SHIM), "-namespace", NS, "-address", "/x", "-publish-binary", "/bin/true",
                           "-id", container_id, "-bundle", str(bundle), "delete"],
                          capture_output=True, timeout=60, cwd=bundle)
    assert proc.returncode == 0, proc.stderr.decode()
    response = shim_pb2.DeleteResponse.FromString(proc.stdout)
    assert proc.stdout == response.SerializeToString(), "something besides the DeleteResponse on stdout"
    assert response.exit_status == KILLED_EXIT_STATUS == 137
    exited_at = response.exited_at.ToNanoseconds() / 1e9
    assert time.time() - 60 < exited_at <= time.time() + 1
    return response, proc


def alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


# ---- a dead shim's leftovers ---------------------------------------------------------------------------------------


@dataclass
class Leftovers:
    root: Path
    cfg: config.Config
    cache: RootfsCache
    sdir: SandboxDir
    vmm: subprocess.Popen
    images: dict[str, RootfsImage]
    bundles: dict[str, Path]

    def add_container(self, container_id: str, mounts: list[SnapshotMount]) -> None:
        """What SandboxRuntime.create leaves: the record, the bundle pointer, then the acquired pin."""
        bundle = self.root / "bundles" / container_id
        bundle.mkdir(parents=True)
        owner = owner_of(NS, container_id)
        self.sdir.write_container(ContainerRecord(container_id, str(bundle), owner))
        write_json_atomic(bundle / BUNDLE_POINTER, {
            "sandbox_dir": str(self.sdir.path), "sandbox_id": self.sdir.sandbox_id, "container_id": container_id,
            "config_path": self.cfg.source})
        self.images[container_id] = self.cache.acquire(mounts, owner)
        self.bundles[container_id] = bundle

    def pinned(self, container_id: str) -> bool:
        image = self.images[container_id]
        if image.cached:
            return Path(self.cache.layout.pin(image.key, owner_of(NS, container_id))).exists()
        return image.path.exists()


def layer(path: Path, text: str) -> Path:
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "hostname").write_text(text)
    return path


def bind(path: Path) -> list[SnapshotMount]:
    return [SnapshotMount("bind", str(path), ("rbind", "ro"))]


@pytest.fixture
def leftovers(tmp_path):
    """A sandbox `sb` whose shim died: its records, its bind-rootfs image pinned, its VMM (a sleep) still running."""
    conf = tmp_path / "rund.toml"
    conf.write_text(f'state_dir = "{tmp_path}/state"\n'
                    f'[rootfs]\ncache_dir = "{tmp_path}/cache"\nslot_mib = 16\ncache_max_mib = 64\n'
                    '[cgroups]\npool = false\n')
    cfg = config.load(conf)
    sdir = SandboxDir(cfg.state_dir, NS, "sb")
    sdir.create()
    vmm = subprocess.Popen(["sleep", "300"])
    sdir.write_sandbox(SandboxRecord(NS, "sb", shim_pid=999_999, qemu_pid=vmm.pid,
                                     qemu_start_ticks=process_start_ticks(vmm.pid)))
    world = Leftovers(tmp_path, cfg, rootfs_cache(cfg), sdir, vmm, {}, {})
    world.add_container("sb", bind(layer(tmp_path / "rootfs-sb", "sb\n")))
    yield world
    if alive(vmm):
        vmm.kill()
    vmm.wait()


def assert_all_released(world: Leftovers) -> None:
    assert world.vmm.wait(timeout=10) == -signal.SIGKILL
    for cid in world.images:
        assert not world.pinned(cid), f"{cid}'s rootfs is still pinned"
    stats = world.cache.statistics()
    assert stats.private == 0 and stats.pinned == 0
    assert not world.sdir.path.exists()
    assert not world.sdir.path.parent.exists()      # the namespace dir went with its last sandbox


# ---- tests ---------------------------------------------------------------------------------------------------------


def test_a_bundle_without_records_answers_137(tmp_path):
    response, proc = run_delete("never-created", tmp_path)
    assert response.pid == 0
    assert list(tmp_path.iterdir()) == []


@needs_root
def test_a_dead_sandbox_is_released(leftovers):
    assert leftovers.pinned("sb") and alive(leftovers.vmm)
    response, _ = run_delete("sb", leftovers.bundles["sb"])
    assert response.pid == leftovers.vmm.pid
    assert_all_released(leftovers)


@needs_root
def test_a_sandbox_served_by_a_live_shim_is_left_alone(leftovers):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from rund.runtime.state import SandboxDir; "
         "d = SandboxDir(*sys.argv[1:]); print(d.lock(), flush=True); sys.stdin.read()",
         str(leftovers.sdir.path.parent.parent), NS, "sb"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "True"
        record = leftovers.sdir.read_sandbox()      # the lock's holder is the recorded shim, alive
        leftovers.sdir.write_sandbox(SandboxRecord(**{**record.__dict__, "shim_pid": holder.pid}))
        before = sorted(p.relative_to(leftovers.sdir.path) for p in leftovers.sdir.path.rglob("*"))
        response, _ = run_delete("sb", leftovers.bundles["sb"])
        assert response.pid == 0
        assert alive(leftovers.vmm) and leftovers.pinned("sb")
        assert sorted(p.relative_to(leftovers.sdir.path) for p in leftovers.sdir.path.rglob("*")) == before
        assert leftovers.sdir.read_container("sb") is not None
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()
    # Once that shim is gone, delete does the work.
    run_delete("sb", leftovers.bundles["sb"])
    assert_all_released(leftovers)


@needs_root
def test_a_concurrent_delete_is_waited_for_not_taken_for_a_live_shim(leftovers, tmp_path):
    """After a shim crash containerd deletes the sandbox and its containers at once: the sandbox's delete, finding
    the lock held while the recorded shim is dead, waits for the member's delete, then releases everything."""
    leftovers.add_container("member", bind(layer(tmp_path / "rootfs-member", "member\n")))
    other_delete = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from rund.runtime.state import SandboxDir; "
         "d = SandboxDir(*sys.argv[1:]); print(d.lock(), flush=True); time.sleep(1)",
         str(leftovers.sdir.path.parent.parent), NS, "sb"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert other_delete.stdout.readline().strip() == "True"
        t0 = time.monotonic()
        response, _ = run_delete("sb", leftovers.bundles["sb"])
        assert time.monotonic() - t0 >= 0.5, "delete did not wait for the lock"
    finally:
        other_delete.wait(timeout=10)
        other_delete.stdout.close()
    assert response.pid == leftovers.vmm.pid
    assert_all_released(leftovers)


@needs_root
def test_a_reused_vmm_pid_is_not_killed(leftovers):
    record = leftovers.sdir.read_sandbox()
    leftovers.sdir.write_sandbox(SandboxRecord(**{**record.__dict__, "qemu_start_ticks": record.qemu_start_ticks + 1}))
    run_delete("sb", leftovers.bundles["sb"])
    time.sleep(0.1)
    assert alive(leftovers.vmm)
    assert not leftovers.pinned("sb") and not leftovers.sdir.path.exists()


@needs_root
def test_a_pod_member_takes_only_its_own_record_and_pin(leftovers, tmp_path):
    lower = layer(tmp_path / "layers" / "l1", "member\n")
    leftovers.add_container("member", [SnapshotMount("overlay", "overlay", (f"lowerdir={lower}",))])
    assert leftovers.images["member"].cached and leftovers.pinned("member")
    response, _ = run_delete("member", leftovers.bundles["member"])
    assert response.pid == leftovers.vmm.pid
    assert not leftovers.pinned("member") and leftovers.sdir.read_container("member") is None
    assert Path(leftovers.images["member"].path).exists()     # unpinned, still cached for the next user
    assert leftovers.pinned("sb") and leftovers.sdir.read_container("sb") is not None
    assert leftovers.sdir.read_sandbox() is not None and alive(leftovers.vmm)
    assert leftovers.sdir.lock(), "delete kept the lock of a sandbox it left in place"
    leftovers.sdir.unlock()
    run_delete("sb", leftovers.bundles["sb"])
    assert_all_released(leftovers)


@needs_root
def test_deleting_the_sandbox_releases_its_remaining_members(leftovers, tmp_path):
    leftovers.add_container("member", bind(layer(tmp_path / "rootfs-member", "member\n")))
    run_delete("sb", leftovers.bundles["sb"])
    assert_all_released(leftovers)
    run_delete("member", leftovers.bundles["member"])      # its bundle still points at the gone state dir


@needs_root
def test_delete_twice_is_fine(leftovers, tmp_path):
    leftovers.add_container("member", bind(layer(tmp_path / "rootfs-member", "member\n")))
    run_delete("member", leftovers.bundles["member"])
    second, _ = run_delete("member", leftovers.bundles["member"])
    assert alive(leftovers.vmm) and leftovers.pinned("sb") and not leftovers.pinned("member")
    run_delete("sb", leftovers.bundles["sb"])
    again, _ = run_delete("sb", leftovers.bundles["sb"])
    assert again.pid == 0
    assert_all_released(leftovers)


@pytest.mark.parametrize("text", ["{half", "[1]", '{"sandbox_id": "sb"}', '{"sandbox_dir": 7}',
                                  '{"sandbox_dir": "/nonexistent/ns/sb", "config_path": ["a"]}'],
                         ids=["syntax", "list", "no-sandbox-dir", "sandbox-dir-int", "config-path-list"])
def test_an_unreadable_pointer_is_nothing_to_clean(tmp_path, text):
    (tmp_path / BUNDLE_POINTER).write_text(text)
    response, proc = run_delete("c1", tmp_path)
    assert response.pid == 0 and b"unreadable" in proc.stderr


def test_a_pointer_to_a_gone_state_dir_is_nothing_to_clean(tmp_path):
    write_json_atomic(tmp_path / BUNDLE_POINTER, {"sandbox_dir": str(tmp_path / "state" / NS / "sb"),
                                                  "sandbox_id": "sb", "container_id": "c1", "config_path": ""})
    response, _ = run_delete("c1", tmp_path)
    assert response.pid == 0
    assert json.loads((tmp_path / BUNDLE_POINTER).read_text())["sandbox_id"] == "sb"


# ---- hostile input: ids and pointers never become paths unchecked ---------------------------------------------------


@pytest.mark.parametrize("bad", ["../x", ".", "..", "a/b", "a\x01b", "x" * 77], ids=["dotdot-x", "dot", "dotdot",
                                                                                      "slash", "control", "long"])
@pytest.mark.parametrize("flag", ["-id", "-namespace"])
def test_a_bad_id_or_namespace_is_refused_before_anything_is_touched(tmp_path, bad, flag):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    write_json_atomic(tmp_path / BUNDLE_POINTER, {"sandbox_dir": str(victim), "container_id": bad})
    argv = {"-namespace": NS, "-id": "c1", flag: bad}
    proc = subprocess.run([str(SHIM), "-namespace", argv["-namespace"], "-address", "/x", "-publish-binary",
                           "/bin/true", "-id", argv["-id"], "-bundle", str(tmp_path), "delete"],
                          capture_output=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == b""
    assert b"not a valid identifier" in proc.stderr or b"characters long" in proc.stderr, proc.stderr
    assert (victim / "keep").exists() and (tmp_path / BUNDLE_POINTER).exists()


@pytest.mark.parametrize("sandbox_dir", ["{victim}/../victim/ns/sb", "{victim}/ns/..", "{victim}/../ns", "ns/sb",
                                         "{victim}/ns/sb/"],
                         ids=["dotdot-inside", "dotdot-sandbox", "dotdot-namespace", "relative", "trailing-slash"])
def test_a_pointer_with_a_bad_sandbox_dir_is_nothing_to_clean(tmp_path, sandbox_dir):
    victim = tmp_path / "victim"
    (victim / "ns" / "sb" / "containers").mkdir(parents=True)
    (victim / "ns" / "sb" / "containers" / "c1.json").write_text("{}")
    write_json_atomic(tmp_path / BUNDLE_POINTER, {"sandbox_dir": sandbox_dir.format(victim=victim),
                                                  "container_id": "c1", "config_path": ""})
    response, proc = run_delete("c1", tmp_path)
    assert response.pid == 0 and b"nothing to clean" in proc.stderr, proc.stderr
    assert (victim / "ns" / "sb" / "containers" / "c1.json").exists()


def test_a_pointer_outside_the_state_dir_is_nothing_to_clean(tmp_path):
    """A well-formed sandbox_dir that is not in the configuration's state dir and holds no record of its own."""
    victim = tmp_path / "victim" / "ns" / "sb"
    (victim / "containers").mkdir(parents=True)
    (victim / "data").write_text("keep me")
    conf = tmp_path / "rund.toml"
    conf.write_text(f'state_dir = "{tmp_path}/state"\n')
    write_json_atomic(tmp_path / BUNDLE_POINTER, {"sandbox_dir": str(victim), "sandbox_id": "sb",
                                                  "container_id": "c1", "config_path": str(conf)})
    response, proc = run_delete("c1", tmp_path)
    assert response.pid == 0 and b"not in the state dir" in proc.stderr, proc.stderr
    assert (victim / "data").read_text() == "keep me" and not (victim / "shim.lock").exists()


@pytest.mark.parametrize("field, value", [("sandbox_id", "other"), ("container_id", "c2"), ("sandbox_id", 7)])
def test_a_pointer_that_contradicts_itself_is_nothing_to_clean(tmp_path, field, value):
    victim = tmp_path / "state" / "ns" / "sb"
    victim.mkdir(parents=True)
    write_json_atomic(tmp_path / BUNDLE_POINTER, {"sandbox_dir": str(victim), "sandbox_id": "sb",
                                                  "container_id": "c1", "config_path": "", field: value})
    response, proc = run_delete("c1", tmp_path)
    assert response.pid == 0 and b"nothing to clean" in proc.stderr, proc.stderr
    assert victim.exists() and not (victim / "shim.lock").exists()
