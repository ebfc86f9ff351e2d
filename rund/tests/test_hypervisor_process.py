"""QEMU's process setup: its environment (allocator settings) and the child setup."""

from __future__ import annotations

import os

from rund.hypervisor.process import QEMU_ENV, qemu_environment, spawn


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
