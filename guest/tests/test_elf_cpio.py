"""ELF DT_NEEDED on real host binaries; the newc writer checked by the host's cpio."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from guest import elf
from guest.cpio import CpioWriter
from guest.errors import ElfError


def test_needed_libraries_of_debians_python():
    needed = elf.needed_libraries(Path("/usr/bin/python3.11").read_bytes())
    assert {"libc.so.6", "libm.so.6", "libz.so.1", "libexpat.so.1"} <= set(needed)


def test_a_static_binary_needs_nothing():
    assert elf.needed_libraries(Path("/bin/busybox").read_bytes()) == []


def test_not_an_elf_is_an_error():
    with pytest.raises(ElfError):
        elf.sections(b"#!/bin/sh\necho hi\n" * 10)
    assert not elf.is_elf(b"#!/b")


def test_cpio_archive_extracts_with_the_host_cpio(tmp_path):
    w = CpioWriter(mtime=1_700_000_000)
    w.directory("bin")
    w.directory("dev")
    w.char_device("dev/console", 5, 1)
    w.file("bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
    w.file("data", b"x" * 4097)
    w.symlink("bin/sh", "tool")
    archive = w.finish()
    assert len(archive) % 4 == 0

    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=archive, cwd=out, check=True)
    assert (out / "bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE((out / "bin/tool").stat().st_mode) == 0o755
    assert (out / "data").read_bytes() == b"x" * 4097
    assert os.readlink(out / "bin/sh") == "tool"
    assert int((out / "data").stat().st_mtime) == 1_700_000_000
    if os.geteuid() == 0:  # only root can create the device node
        st = (out / "dev/console").lstat()
        assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (5, 1)


def test_cpio_is_deterministic_and_refuses_duplicates():
    def make():
        w = CpioWriter()
        w.file("a", b"1")
        w.file("b", b"22")
        return w.finish()

    assert make() == make()
    w = CpioWriter()
    w.file("a", b"1")
    with pytest.raises(ValueError):
        w.file("/a", b"2")
