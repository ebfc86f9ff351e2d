"""Helpers for tests that run real QEMU (this package's and its users', e.g. templates).

Unix socket paths are limited to 107 bytes, so VM directories live under a short /tmp prefix
rather than pytest's long tmp_path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rund.hypervisor.paths import VMPaths
from rund.hypervisor.spec import Accel, Machine, SerialChannel, VMSpec


VMDirs = VMPaths   # the name tests use


@contextmanager
def scratch_dir(prefix: str = "rund-hv-", parent: str = "/tmp") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def minimal_spec(dirs: VMDirs, machine: Machine = Machine.MICROVM, name: str = "test", **overrides: Any) -> VMSpec:
    """A firmware-only VM (no kernel: SeaBIOS/qboot runs and idles) with the agent port; TCG, 64 MiB."""
    fields: dict[str, Any] = dict(
        name=name, machine=machine, accel=Accel.TCG, vcpus=1, memory_mib=64,
        runtime_dir=dirs.run, console_log=dirs.console_log, qemu_log=dirs.qemu_log,
        agent=SerialChannel(),
    )
    fields.update(overrides)
    return VMSpec(**fields)


def process_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def qemu_pids() -> set[int]:
    """This process's qemu-system-* children, zombies included, to prove a test left none behind.

    Only our own children: other engineers and tests may run QEMU on the same host at the same time.
    """
    me = os.getpid()
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == me and comm.startswith("qemu-system"):
            pids.add(int(entry))
    return pids


@contextmanager
def leak_checked_dirs(with_shm: bool = False) -> Iterator[tuple[Path, Path | None]]:
    """A scratch dir (and one on tmpfs for template RAM when asked) for a test that runs QEMU; on exit, fail
    if the test left one of its own QEMU children behind."""
    before = qemu_pids()
    with scratch_dir() as base:
        if with_shm:
            with scratch_dir(parent="/dev/shm") as shm:
                yield base, shm
        else:
            yield base, None
    assert qemu_pids() <= before, "a QEMU process was left behind"

