"""QEMU's process setup: its environment (allocator settings) and the child setup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rund.hypervisor.process import QEMU_ENV, qemu_environment, spawn

ROOT = Path(__file__).resolve().parents[2]


def test_qemu_environment_adds_the_allocator_settings():
    env = qemu_environment({"PATH": "/usr/bin"})
    assert env == {"PATH": "/usr/bin", "MALLOC_ARENA_MAX": "1", "G_SLICE": "always-malloc"}


def test_a_setting_in_the_owners_environment_wins():
    env = qemu_environment({"MALLOC_ARENA_MAX": "4"})
    assert env["MALLOC_ARENA_MAX"] == "4" and env["G_SLICE"] == QEMU_ENV["G_SLICE"]


def test_qemu_environment_defaults_to_the_owners(monkeypatch):
    monkeypatch.setenv("RUND_TEST_MARK", "x")
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    env = qemu_environment()
    assert env["RUND_TEST_MARK"] == "x" and env["MALLOC_ARENA_MAX"] == "1"


def test_the_spawned_process_sees_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("G_SLICE", raising=False)
    log = tmp_path / "log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        p = spawn(["/bin/sh", "-c", 'echo "$MALLOC_ARENA_MAX $G_SLICE"'], log_fd=fd)
        assert p.wait(timeout=10) == 0
    finally:
        os.close(fd)
    assert log.read_text() == "1 always-malloc\n"


@pytest.mark.skipif(not Path("/proc/self/ksm_stat").exists(), reason="no KSM in this kernel")
def test_qemu_does_not_inherit_its_owners_whole_process_merging(tmp_path):
    # a shim with [shim] merge_memory has PR_SET_MEMORY_MERGE, which fork and exec pass on (Linux >= 6.7): the
    # process it spawns takes it back (sh, and grep exec'd by it, read their own ksm_stat); no privilege needed
    log = tmp_path / "log"
    code = ("import os, sys\n"
            "from rund.hypervisor.process import set_memory_merge, spawn\n"
            "set_memory_merge()\n"
            "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)\n"
            "cmd = 'grep ksm_merge_any /proc/self/ksm_stat; exec grep ksm_merge_any /proc/self/ksm_stat'\n"
            "sys.exit(spawn(['/bin/sh', '-c', cmd], log_fd=fd).wait(timeout=10))\n")
    owner = subprocess.run([sys.executable, "-c", code, str(log)], cwd=ROOT, capture_output=True, timeout=30)
    assert owner.returncode == 0, owner.stderr
    assert log.read_text().split("\n") == ["ksm_merge_any: no", "ksm_merge_any: no", ""]
    # the same without the reset: both say yes (what the reset is for)
    plain = subprocess.run(["/bin/sh", "-c", "grep ksm_merge_any /proc/self/ksm_stat"], capture_output=True,
                           preexec_fn=_merge_in_child)
    assert plain.stdout == b"ksm_merge_any: yes\n"


def _merge_in_child() -> None:
    from rund.hypervisor.process import set_memory_merge
    set_memory_merge()
