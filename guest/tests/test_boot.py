"""Boot the built guest under QEMU (TCG): initramfs -> modules -> erofs root -> switch_root -> python3.11.

One boot per machine (TCG on two cores is slow): q35 with the root on virtio-pmem mounted with DAX, microvm with
the root on a read-only virtio-blk. Each boot also loads /etc/rund/modules.list in order, as the agent will. These
smoke boots use guest/bootcheck.py's own QEMU argv, independent of rund's driver; the agent's boot is the session's
`booted` guest (rund/tests/vm_fixtures.py), started as rund starts a sandbox.
"""

from __future__ import annotations

import subprocess

import pytest

from guest import bootcheck, wheel
from rund.hypervisor import cmdline
from rund.hypervisor.tsc import host_tsc_khz

pytestmark = pytest.mark.vm


def _assert_python_ran_from_the_image(report):
    assert report["fs"] == "erofs" and report["opts"].startswith("ro,")
    assert report["python"].startswith("3.11.")
    assert report["protobuf"] == wheel.host_version()
    assert report["upb"] == "upb"  # the C extension (and libstdc++) loaded
    assert report["stale"] == []  # every imported .pyc matched its source: no recompiling on a read-only root


def test_q35_boots_from_virtio_pmem_with_dax(built):
    r = bootcheck.boot(built, "q35", trace=True)
    assert r.report["root"] == "/dev/pmem0"
    assert "dax=always" in r.report["opts"].split(",")
    assert r.report["dax"] == "1"  # the block device really does DAX, not just the mount option
    _assert_python_ran_from_the_image(r.report)
    assert r.modules_failed == 0
    assert "rund-init:" in r.serial and "root mounted" in r.serial


def test_microvm_boots_from_read_only_virtio_blk(built):
    r = bootcheck.boot(built, "microvm")
    assert r.report["root"] == "/dev/vda"
    assert r.report["dax"] is None
    _assert_python_ran_from_the_image(r.report)
    assert r.modules_failed == 0


def test_init_reports_a_bad_root_and_powers_off(built):
    append = cmdline.kernel_cmdline(root="/dev/sdz", tsc_khz=host_tsc_khz())
    proc = subprocess.run(bootcheck.qemu_argv(built, "microvm", append), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=120)
    console = proc.stdout.decode(errors="replace")
    assert "rund-init: FATAL: unsupported root device /dev/sdz" in console
    assert "Kernel panic" not in console
    assert proc.returncode == 0  # QEMU exited because the guest powered off


async def test_the_images_own_init_starts_the_agent_and_it_answers_health(built, booted):
    async with await booted.connect() as client:
        health = await client.health()
    assert health.kernel_release == built.kernel_release
    assert health.uptime_ns > 0
