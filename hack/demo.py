"""`make demo`: what rund can do today, end to end on this host.

1. `rund check`: what the host offers (KVM or TCG, vsock, cgroups, QEMU, guest image).
2. Cold-boot a sandbox VM from the guest build (microvm, erofs root on virtio-blk) with the QEMU driver, reach
   the in-guest agent over virtio-serial with our ttrpc, and ask it who it is.
The container path through containerd (`ctr run --runtime io.containerd.rund.v2`) joins this demo when the
VM-backed task runtime lands.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rund import config
from rund.agent.client import AgentClient
from rund.hypervisor import BlockDevice, Machine, QemuVM, host_tsc_khz
from rund.hypervisor.spec import Accel, SerialChannel, VMSpec


async def boot_and_greet(guest: Path, work: Path) -> None:
    spec = VMSpec(
        name="demo", machine=Machine.MICROVM, accel=Accel.TCG, vcpus=1, memory_mib=256,
        runtime_dir=work / "run", console_log=work / "console.log", qemu_log=work / "qemu.log",
        agent=SerialChannel(), kernel=guest / "vmlinux", initrd=guest / "initrd.cpio",
        cmdline="console=ttyS0 quiet panic=-1 rund.root=/dev/vda", tsc_khz=host_tsc_khz(),
        disks=(BlockDevice(guest / "rootfs.erofs", serial="root"),))
    vm = QemuVM(spec)
    t0 = time.monotonic()
    await vm.start()
    try:
        health = None
        while health is None and time.monotonic() - t0 < 120:
            try:
                async with await AgentClient.connect_unix(str(vm.agent_address.path)) as agent:
                    health = await agent.health(timeout=5)
            except Exception:  # the guest is still booting: the port answers once the agent listens
                await asyncio.sleep(0.2)
        if health is None:
            raise SystemExit(f"agent did not answer in 120 s; console:\n{spec.console_log.read_text()[-2000:]}")
        print(f"VM pid {vm.pid}: agent {health.agent_version} on Linux {health.kernel_release} "
              f"answered {time.monotonic() - t0:.2f} s after QEMU exec (TCG cold boot)")
    finally:
        await vm.stop()


def main() -> int:
    print("$ rund check")
    subprocess.run([sys.executable, "-m", "rund.cli", "check"])
    guest = config.load().guest.resolved_dir().resolve()
    print(f"\nbooting a sandbox VM from {guest}")
    with tempfile.TemporaryDirectory(prefix="rund-demo-") as tmp:
        asyncio.run(boot_and_greet(guest, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
