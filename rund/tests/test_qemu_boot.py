"""Boot the real guest kernel (built by guest/) under QEMU and read its console log.

Uses the guest init's documented hook rund.initcmd (guest/init.sh) to print a marker and power off, so QEMU exits
on its own. VMs come from the `vm_factory` fixture (rund/tests/vm_fixtures.py), at its first stage: not started.
"""

from __future__ import annotations

import pytest

from rund.hypervisor import Machine

pytestmark = pytest.mark.vm

MARKER = "RUND-HV-BOOT-OK"
SCRIPT = f"echo {MARKER}; cat /proc/mounts; poweroff -f"


def boot_until_poweroff(vm_factory, machine: Machine) -> str:
    guest = vm_factory.vm(machine, initcmd=SCRIPT, quiet=False)
    assert guest.run_to_exit(120) == 0  # the guest powered off
    assert not guest.spec.runtime_dir.exists()
    return guest.console(tail=1 << 20)


def test_microvm_boots_the_guest_kernel_and_logs_its_console(vm_factory):
    console = boot_until_poweroff(vm_factory, Machine.MICROVM)
    assert "Linux version" in console
    assert "Run /init as init process" in console
    assert MARKER in console
    assert "/dev/vda / erofs ro" in console


def test_q35_mounts_the_root_from_a_pinned_pmem_slot_with_dax(vm_factory):
    console = boot_until_poweroff(vm_factory, Machine.Q35)
    assert MARKER in console
    assert "erofs: DAX enabled" in console
    assert "/dev/pmem0 / erofs ro" in console and "dax=always" in console
