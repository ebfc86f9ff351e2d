"""trim.py: malloc_trim through ctypes, False (not an error) where the C library has none."""
from __future__ import annotations

from rund.shim import trim


def test_malloc_trim_runs():
    blocks = [bytearray(200_000) for _ in range(50)]       # above glibc's mmap threshold? some; freed either way
    del blocks
    assert trim.malloc_trim() in (True, False)
    assert trim._malloc_trim is not None


def test_no_malloc_trim_is_false(monkeypatch):
    monkeypatch.setattr(trim, "_malloc_trim", False)
    assert trim.malloc_trim() is False
