"""The shim's on-disk state (rund.runtime.state): records, atomic writes, the lifetime lock, start ticks. No root."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rund.runtime.state import (
    ContainerRecord, CorruptRecord, SandboxDir, SandboxRecord, process_start_ticks, write_json_atomic,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sdir(tmp_path) -> SandboxDir:
    d = SandboxDir(tmp_path / "state", "default", "sb1")
    d.create()
    yield d
    d.unlock()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ---- records ---------------------------------------------------------------------------------------------------


def test_records_round_trip(sdir):
    assert sdir.path.is_dir() and sdir.containers.is_dir()
    assert sdir.read_sandbox() is None and sdir.read_container("c1") is None
    sandbox = SandboxRecord("default", "sb1", shim_pid=123, qemu_pid=456, qemu_start_ticks=789, cgroup_leased=True)
    sdir.write_sandbox(sandbox)
    assert sdir.read_sandbox() == sandbox
    c1, c2 = ContainerRecord("c1", "/run/bundle/c1", "default:c1"), ContainerRecord("c0", "/run/bundle/c0")
    sdir.write_container(c1)
    sdir.write_container(c2)
    assert sdir.read_container("c1") == c1 and sdir.read_container("c0") == c2
    assert sdir.container_ids() == ["c0", "c1"]
    sdir.remove_container("c1")
    sdir.remove_container("c1")     # idempotent
    assert sdir.container_ids() == ["c0"] and sdir.read_container("c1") is None
    assert leftovers(sdir.path) == [] and leftovers(sdir.containers) == []


def test_a_rewrite_replaces_the_record(sdir):
    sdir.write_sandbox(SandboxRecord("default", "sb1", shim_pid=1))
    sdir.write_sandbox(SandboxRecord("default", "sb1", shim_pid=1, qemu_pid=2, qemu_start_ticks=3))
    assert sdir.read_sandbox().qemu_pid == 2


def test_container_ids_of_a_missing_dir_is_empty(tmp_path):
    assert SandboxDir(tmp_path, "ns", "never-created").container_ids() == []


@pytest.mark.parametrize("text", ["{not json", "", '["a list"]', '{"namespace": "ns"}',
                                  '{"namespace": "ns", "sandbox_id": "sb1", "shim_pid": 1, "unknown": 2}'],
                         ids=["syntax", "empty", "list", "missing-field", "unknown-field"])
def test_a_corrupt_record_raises_corrupt_record(sdir, text):
    (sdir.path / "sandbox.json").write_text(text)
    (sdir.containers / "c1.json").write_text(text)
    with pytest.raises(CorruptRecord):
        sdir.read_sandbox()
    with pytest.raises(CorruptRecord):
        sdir.read_container("c1")


# ---- atomic writes -----------------------------------------------------------------------------------------------


def test_write_json_atomic_leaves_no_temp_file(tmp_path):
    target = tmp_path / "record.json"
    write_json_atomic(target, {"a": 1})
    assert target.read_text() == '{"a": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_a_failed_write_leaves_the_old_record_and_no_temp_file(tmp_path):
    target = tmp_path / "record.json"
    write_json_atomic(target, {"a": 1})
    # json writes the first keys before it meets the object it cannot serialize: a partial temp file existed.
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": 2, "b": object()})
    assert target.read_text() == '{"a": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "record.json", {"b": {1, 2}})
    assert list(tmp_path.iterdir()) == []


# ---- the lifetime lock --------------------------------------------------------------------------------------------

HOLDER = """
import sys
from rund.runtime.state import SandboxDir
d = SandboxDir(sys.argv[1], sys.argv[2], sys.argv[3])
print("locked" if d.lock() else "busy", flush=True)
sys.stdin.read()        # hold until the test closes our stdin
"""


def holder(sdir: SandboxDir) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(sdir.path.parent.parent), sdir.namespace,
                             sdir.sandbox_id], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_live_holder_in_another_process_keeps_the_lock(sdir):
    proc = holder(sdir)
    try:
        other = SandboxDir(sdir.path.parent.parent, "default", "sb1")
        assert not other.lock()
        assert not other.lock()     # a refused attempt leaks no fd and changes nothing
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    assert other.lock()             # the holder exited: the kernel dropped its flock
    other.unlock()


def test_a_holder_killed_with_sigkill_releases_the_lock(sdir):
    proc = holder(sdir)
    assert not sdir.lock()
    proc.kill()
    proc.wait(timeout=10)
    proc.stdin.close()
    proc.stdout.close()
    assert sdir.lock()


def test_the_lock_excludes_a_second_object_in_this_process_and_unlock_frees_it(sdir):
    other = SandboxDir(sdir.path.parent.parent, "default", "sb1")
    assert sdir.lock()
    assert not other.lock()
    sdir.unlock()
    sdir.unlock()                   # idempotent
    assert other.lock()
    other.unlock()


def test_the_lock_fd_is_not_inherited_by_children(sdir):
    # A VMM spawned by the shim must not keep the sandbox "live" after the shim died.
    assert sdir.lock()
    child = subprocess.Popen(["sleep", "30"], close_fds=False)   # only O_CLOEXEC keeps it out
    try:
        sdir.unlock()
        other = SandboxDir(sdir.path.parent.parent, "default", "sb1")
        assert other.lock()
        other.unlock()
    finally:
        child.kill()
        child.wait()


# ---- remove -------------------------------------------------------------------------------------------------------


def test_remove_takes_the_namespace_dir_once_empty(tmp_path):
    a, b = SandboxDir(tmp_path, "ns", "a"), SandboxDir(tmp_path, "ns", "b")
    for d in (a, b):
        d.create()
        d.write_sandbox(SandboxRecord("ns", d.sandbox_id, shim_pid=1))
    assert a.lock()
    a.remove()
    assert not a.path.exists() and b.path.exists()          # another sandbox keeps the namespace dir
    b.remove()
    assert not (tmp_path / "ns").exists() and tmp_path.exists()
    b.remove()                                              # idempotent


def test_remove_releases_the_lock(tmp_path):
    a = SandboxDir(tmp_path, "ns", "a")
    a.create()
    assert a.lock()
    a.remove()
    a.create()
    assert SandboxDir(tmp_path, "ns", "a").lock()


# ---- process start ticks ------------------------------------------------------------------------------------------


def stat_starttime(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[19])


def test_start_ticks_of_self():
    ticks = process_start_ticks(os.getpid())
    assert ticks == stat_starttime(os.getpid()) and ticks > 0


def test_start_ticks_survive_a_command_name_with_spaces_and_parentheses(tmp_path):
    odd = tmp_path / "a) b (c"
    shutil.copy("/bin/sleep", odd)
    proc = subprocess.Popen([str(odd), "30"])
    try:
        assert process_start_ticks(proc.pid) == stat_starttime(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_start_ticks_differ_between_processes_started_apart():
    first = process_start_ticks(os.getpid())
    time.sleep(0.05)                # > 1 tick (USER_HZ 100)
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert process_start_ticks(proc.pid) > first
    finally:
        proc.kill()
        proc.wait()


def test_start_ticks_of_a_dead_pid_is_none():
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert process_start_ticks(proc.pid) is None
    assert process_start_ticks(2 ** 22 + 1) is None        # above pid_max's ceiling: never a process


def test_start_ticks_of_a_zombie_is_none():
    proc = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        assert process_start_ticks(proc.pid) is None
    finally:
        proc.wait()
