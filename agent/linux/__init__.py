"""Thin ctypes bindings for the Linux syscalls Python 3.11 does not wrap."""
