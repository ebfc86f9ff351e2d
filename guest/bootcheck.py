"""Boot the built guest in QEMU with a smoke script as PID 1 and read its verdict off the serial console.

Used by guest/tests (vm) and hack/bench_guest_boot.py. Deliberately independent of rund's QEMU driver: a small argv
per machine, QEMU's serial on a pipe, the process killed by its pid if it outlives the check. Only the kernel command
line comes from rund (rund.hypervisor.cmdline, its one spelling). Booting the agent is the VM factory's job
(rund/tests/vm_factory.py): it waits for the agent as the runtime does.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from dataclasses import dataclass

from guest.artifacts import GuestArtifacts
from guest.errors import BootError
from rund.hypervisor import Machine, cmdline
from rund.hypervisor.tsc import host_tsc_khz

MACHINES = ("q35", "microvm")
MARKER = "RUND-GUEST-OK"
MODULES_MARKER = "RUND-MODULES-DONE"

# Runs in the guest's python3.11 right after switch_root. No single quotes: it is wrapped in '...' for sh.
# "stale" lists imported modules whose on-disk .pyc does not match the source's mtime/size (should be empty).
SMOKE_PY = """
import json,os,sys,struct,google.protobuf as g,proto.ttrpc,proto.gen.rund.agent.v1.agent_pb2
from google.protobuf.internal import api_implementation as a
def ok(m):
 f=getattr(m,"__file__",None) or "";c=getattr(m,"__cached__",None)
 if not f.endswith(".py") or not c:return 1
 h=open(c,"rb").read(16);s=os.stat(f);return struct.unpack("<3I",h[4:16])==(0,int(s.st_mtime),s.st_size)
r=[l.split() for l in open("/proc/mounts") if l.split()[1]=="/"][-1]
d="/sys/block/pmem0/queue/dax"
print("MARKER",json.dumps(dict(uptime=float(open("/proc/uptime").read().split()[0]),root=r[0],fs=r[2],opts=r[3],
 dax=open(d).read().strip() if os.path.exists(d) else None,protobuf=g.__version__,upb=a.Type(),
 python=sys.version.split()[0],modules=len(sys.modules),stale=[n for n,m in list(sys.modules.items()) if m and not ok(m)])),flush=True)
""".replace("MARKER", MARKER).strip()

# PID 1 after switch_root: the python check, then load /etc/rund/modules.list in order as the agent will (skipping
# what the initramfs loaded already: virtio_blk on microvm).
SMOKE_SH = f"""/usr/bin/python3.11 -I -c '{SMOKE_PY}'
d=/lib/modules/$(uname -r);f=0;while read -r m;do n=${{m##*/}};grep -q "^${{n%.ko}} " /proc/modules||insmod $d/$m||f=$((f+1));done</etc/rund/modules.list
echo {MODULES_MARKER} failed=$f
poweroff -f"""


@dataclass(frozen=True)
class BootResult:
    machine: str
    seconds_to_marker: float  # from QEMU exec to the marker line on the serial console
    report: dict  # what the guest printed after the marker
    modules_failed: int | None  # insmod failures for modules.list (None if the script stopped before)
    serial: str  # the whole console output


def qemu_argv(art: GuestArtifacts, machine: str, append: str, memory_mib: int = 256) -> list[str]:
    argv = ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", "stdio", "-accel", "tcg,tb-size=16", "-cpu", "qemu64,+arat",
            "-kernel", str(art.vmlinux), "-initrd", str(art.initrd), "-append", append]
    if machine == "q35":
        return argv + [
            "-M", "q35", "-m", f"{memory_mib}M,slots=2,maxmem=4G",
            "-object", f"memory-backend-file,id=rootfs,mem-path={art.rootfs},size={art.rootfs_size},"
                       "share=on,readonly=on",
            "-device", "virtio-pmem-pci,memdev=rootfs,id=rootfs0",
        ]
    if machine == "microvm":
        return argv + [
            "-M", "microvm,acpi=on,pcie=off,rtc=on,isa-serial=on", "-m", f"{memory_mib}M",
            "-global", "virtio-mmio.force-legacy=false",
            "-drive", f"id=rootfs,file={art.rootfs},format=raw,if=none,readonly=on",
            "-device", "virtio-blk-device,drive=rootfs",
        ]
    raise ValueError(f"unknown machine {machine!r}; expected one of {MACHINES}")


def root_params(machine: str) -> tuple[str, str]:
    return cmdline.guest_root(Machine(machine))


def smoke_cmdline(machine: str, script: str = SMOKE_SH, trace: bool = False) -> str:
    root, flags = root_params(machine)
    return cmdline.kernel_cmdline(root=root, rootflags=flags, initcmd=script, tsc_khz=host_tsc_khz(),
                                  trace=trace)


def boot(art: GuestArtifacts, machine: str, timeout: float = 90.0, wait_modules: bool = True,
         trace: bool = False, script: str = SMOKE_SH) -> BootResult:
    """Boot once; return when the guest has powered off (or, with wait_modules=False, at the marker)."""
    argv = qemu_argv(art, machine, smoke_cmdline(machine, script, trace=trace))
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    serial = bytearray()
    at_marker = None
    report: dict = {}
    modules_failed = None
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        pending = b""
        while True:
            left = start + timeout - time.monotonic()
            if left <= 0:
                raise BootError(f"{machine}: no {'power-off' if at_marker else MARKER} within {timeout:.0f} s:\n"
                                + serial.decode(errors="replace")[-3000:])
            if not sel.select(left):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break  # QEMU exited (the guest powered off)
            serial += chunk
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").strip()
                if line.startswith(MARKER + " ") and at_marker is None:
                    at_marker = time.monotonic() - start
                    report = json.loads(line[len(MARKER) + 1:])
                elif line.startswith(MODULES_MARKER):
                    modules_failed = int(line.rsplit("=", 1)[1])
            if at_marker is not None and not wait_modules:
                break
        sel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    if at_marker is None:
        raise BootError(f"{machine}: QEMU exited {proc.returncode} before {MARKER}:\n"
                        + serial.decode(errors="replace")[-3000:])
    return BootResult(machine, at_marker, report, modules_failed, serial.decode(errors="replace"))
