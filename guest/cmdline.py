"""The kernel command line the guest understands: what the initramfs /init reads, plus the flags this guest
kernel needs under QEMU (see reference/qemu-on-this-machine.md). Pure, except host_tsc_khz()."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

from guest.errors import CmdlineError

MAX_LENGTH = 2047  # x86 COMMAND_LINE_SIZE is 2048 including the NUL

PMEM_ROOT = "/dev/pmem0"  # q35 + virtio-pmem-pci: mount with DAX
BLK_ROOT = "/dev/vda"  # microvm + read-only virtio-blk-device
DAX_FLAGS = "dax=always"


def host_tsc_khz(cpuinfo: Path = Path("/proc/cpuinfo")) -> int:
    """The host TSC rate in kHz: without tsc_early_khz the guest's PIT calibration fails at random under TCG."""
    for line in cpuinfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            return round(float(value) * 1000)
    raise CmdlineError(f"no 'cpu MHz' in {cpuinfo}")


def kernel_cmdline(*, root: str, rootflags: str = "", init: str | None = None, initcmd: str | None = None,
                   tsc_khz: int | None = None, console: str = "ttyS0", quiet: bool = True, trace: bool = False,
                   extra: Sequence[str] = ()) -> str:
    """root: PMEM_ROOT (with rootflags=DAX_FLAGS) or BLK_ROOT. initcmd: a shell script that replaces /sbin/init."""
    words = [f"console={console}" if console else "", "panic=-1"]
    if tsc_khz:
        words += [f"tsc_early_khz={tsc_khz}", "tsc=reliable"]
    if quiet:
        words.append("quiet")
    words.append(f"rund.root={_word(root)}")
    if rootflags:
        words.append(f"rund.rootflags={_word(rootflags)}")
    if init:
        words.append(f"rund.init={_word(init)}")
    if initcmd:
        words.append("rund.initcmd=" + base64.b64encode(initcmd.encode()).decode())
    if trace:
        words.append("rund.trace=1")
    words += [_word(w) for w in extra]
    line = " ".join(w for w in words if w)
    if len(line) > MAX_LENGTH:
        raise CmdlineError(f"kernel command line is {len(line)} bytes, the limit is {MAX_LENGTH}")
    return line


def _word(value: str) -> str:
    if not value or any(c.isspace() or c == '"' for c in value):
        raise CmdlineError(f"{value!r} cannot be a kernel command line word")
    return value
