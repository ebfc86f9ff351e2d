"""Cold boot of the guest image, side by side: q35 (root on virtio-pmem, DAX) vs microvm (root on virtio-blk).

Three stages per machine, each timed from QEMU exec:
  shell   kernel -> initramfs -> modules -> erofs root -> switch_root -> a shell prints a marker (the baseline)
  python  ... -> python3.11 imports google.protobuf and proto -> marker
  agent   ... -> the image's own /sbin/init -> the agent answers Health over virtio-serial ("agent-ready"), booted
          as rund boots a sandbox (rund's QEMU driver and wait_for_agent, through rund/tests/vm_factory.py); shell
          and python use guest/bootcheck.py's own QEMU argv
Guest-side stamps come from /init's rund.trace lines (/proc/uptime, 10 ms resolution).

    python3 hack/bench_guest_boot.py [--runs 5] [--machines q35,microvm] [--stages shell,python,agent]

Boots run one at a time (TCG, two cores). Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guest import bootcheck  # noqa: E402
from guest.build import ensure_built  # noqa: E402
from guest.progress import Progress  # noqa: E402
from rund.hypervisor import Machine  # noqa: E402
from rund.tests.vm_factory import VMFactory  # noqa: E402

SHELL_SCRIPT = f"echo {bootcheck.MARKER} {{}}; poweroff -f"
TRACE = re.compile(r"rund-init: ([\d.]+) (init started|modules loaded|root mounted)")


def one(art, machine: str, stage: str) -> tuple[float, dict[str, float]]:
    if stage == "agent":
        with VMFactory.scratch() as factory:
            guest = factory.booted(Machine(machine), trace=True)
            return guest.ready_s, _stamps(guest.console(tail=1 << 20))
    script = SHELL_SCRIPT if stage == "shell" else bootcheck.SMOKE_SH
    r = bootcheck.boot(art, machine, wait_modules=False, trace=True, script=script)
    stamps = _stamps(r.serial)
    if stage == "python":
        stamps["python done"] = r.report["uptime"]
    return r.seconds_to_marker, stamps


def _stamps(serial: str) -> dict[str, float]:
    return {name: float(t) for t, name in TRACE.findall(serial)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--machines", default="q35,microvm")
    p.add_argument("--stages", default="shell,python,agent")
    a = p.parse_args()
    machines, stages = a.machines.split(","), a.stages.split(",")
    art = ensure_built(progress=Progress())
    progress = Progress(prefix="bench")
    results: dict[tuple[str, str], list[float]] = {}
    guest: dict[tuple[str, str], dict[str, list[float]]] = {}
    for run in range(a.runs):  # interleaved, so load changes on the host hit every column alike
        for machine in machines:
            for stage in stages:
                wall, stamps = one(art, machine, stage)
                results.setdefault((machine, stage), []).append(wall)
                for k, v in stamps.items():
                    guest.setdefault((machine, stage), {}).setdefault(k, []).append(v)
                progress(f"run {run + 1}/{a.runs} {machine:8} {stage:7} {wall:6.2f} s  load {os.getloadavg()[0]:.2f}")

    print(f"\nguest {art.key}  kernel {art.kernel_release}  runs {a.runs}  (QEMU TCG; wall seconds from exec)")
    print(f"sizes: vmlinux {art.vmlinux.stat().st_size / 2**20:.1f} MiB, initrd {art.initrd.stat().st_size / 2**20:.1f} MiB,"
          f" rootfs {art.rootfs_size / 2**20:.1f} MiB padded ({art.rootfs_content_size / 2**20:.1f} MiB erofs)\n")
    print(f"{'stage':8}" + "".join(f"{m + ' median':>16}{'min-max':>14}" for m in machines))
    for stage in stages:
        row = f"{stage:8}"
        for m in machines:
            xs = results[(m, stage)]
            row += f"{statistics.median(xs):16.2f}{f'{min(xs):.2f}-{max(xs):.2f}':>14}"
        print(row)
    print("\nguest uptime at each step (median, s):")
    for stage in stages:
        for m in machines:
            stamps = guest.get((m, stage), {})
            print(f"  {stage:7} {m:8} " + "  ".join(f"{k} {statistics.median(v):.2f}" for k, v in stamps.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
