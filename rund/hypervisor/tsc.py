"""The host TSC rate, which a TCG guest needs on its command line (tsc_early_khz).

Under TCG the guest's TSC ticks at the host's raw rate, so the host's figure is the right one.
Only hosts without usable KVM need it; those are virtual machines, where /proc/cpuinfo's
"cpu MHz" is the TSC rate the host kernel was given (no frequency scaling inside a VM).
"""

from __future__ import annotations

import functools
from pathlib import Path

from rund.hypervisor.errors import HypervisorError


class TscUnknown(HypervisorError):
    """The host's TSC rate could not be read."""


def parse_tsc_khz(cpuinfo_text: str) -> int:
    """kHz from the first "cpu MHz" line of /proc/cpuinfo ("2299.998" -> 2299998)."""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            try:
                khz = round(float(value) * 1000)
            except ValueError:
                break
            if khz > 0:
                return khz
            break
    raise TscUnknown("no usable 'cpu MHz' line in /proc/cpuinfo")


@functools.cache
def host_tsc_khz(sysfs: Path = Path("/sys/devices/system/cpu/cpu0/tsc_freq_khz"),
                 cpuinfo: Path = Path("/proc/cpuinfo")) -> int:
    """Prefer the kernel's exact figure where it exports one (some kernels do), else cpuinfo."""
    try:
        return int(sysfs.read_text())
    except (OSError, ValueError):
        pass
    try:
        return parse_tsc_khz(cpuinfo.read_text())
    except OSError as exc:
        raise TscUnknown(f"cannot read {cpuinfo}: {exc}") from exc
