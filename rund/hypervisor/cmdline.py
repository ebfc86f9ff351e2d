"""The guest kernel command line, spelled in this one place: what the guest's /init (guest/init.sh, see
guest/README.md) reads, plus the flags this guest kernel needs under QEMU (reference/qemu-on-this-machine.md).

The runtime (templates/shape.py), the driver (argv.py adds the TCG flags) and the guest build's own smoke boots
(guest/bootcheck.py) all build it here. Pure.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from rund.hypervisor.errors import InvalidSpec
from rund.hypervisor.spec import Machine

MAX_LENGTH = 2047  # x86 COMMAND_LINE_SIZE is 2048 including the NUL

PMEM_ROOT = "/dev/pmem0"  # q35 + virtio-pmem-pci: mount with DAX
BLK_ROOT = "/dev/vda"  # microvm + read-only virtio-blk-device
DAX_FLAGS = "dax=always"
# Hotplugged memory (virtio-mem) comes online by itself, in ZONE_MOVABLE so that it can always be unplugged again
# (measured: with the auto-movable policy it landed in ZONE_NORMAL and the last block would not unplug).
MEMORY_HOTPLUG_PARAMS = ("memhp_default_state=online_movable",)
# An idle sandbox VM should not wake up: every guest timer that fires wakes QEMU's vCPU and main-loop threads on the
# host (under TCG each wakeup runs translated kernel code). The Debian cloud kernel is tickless when idle, yet an idle
# pod's guest still woke several times a second; tracing the guest's timers (hrtimer/timer/workqueue events) named
# these periodic jobs. Measured, QEMU's CPU per idle VM in % of a host core: bare clones of a q35 template 0.47-0.52
# with none of these words, 0.13 with the first three, 0.0-0.025 with the first four; CRI pods (NIC, share, a
# container) 0.10-0.175 with the first four, 0.05-0.10 with all (hack/bench_density.py has the pod figures):
#   nowatchdog                          the soft-lockup detector's 4 s hrtimer (and the NMI one); under TCG a stalled
#                                       guest is the host's business, not the guest's
#   sysctl.vm.compaction_proactiveness=0  kcompactd's proactive check every 500 ms (huge pages matter little in a VM
#                                       that the host backs with 4 KiB pages)
#   sysctl.vm.stat_interval=30          per-CPU VM statistics folded every 30 s instead of every second (vmstat_shepherd)
#   psi=0                               pressure-stall accounting: its averaging work ran every 2 s while anything ran,
#                                       and it is charged on every task switch; nothing in the guest reads it
#   sysctl.vm.dirty_writeback_centisecs=3000  the flusher of each backing device every 30 s instead of 5 s. The
#                                       trade: buffered writes to a raw block device (linux.devices) reach the host
#                                       up to ~60 s after they were made instead of ~35 s, unless the writer syncs
#                                       (volumes are 9p with cache=mmap: written through; uppers are tmpfs)
#   sysctl.net.ipv{4,6}.neigh.default.interval_probe_time_ms=60000  the neighbour tables' probe of "managed"
#                                       entries (a routing daemon's feature, unused in a pod) ran every 5 s per table
# Not reachable by a word: the memory cgroup's stats flush (every 2 s, memcg is needed for container limits), the
# NIC's TX watchdog (5 s) and RCU's grace periods after activity.
# A runtime class that needs one back appends it in [guest] kernel_params (later words win: `psi=1`).
IDLE_PARAMS = ("nowatchdog", "sysctl.vm.compaction_proactiveness=0", "sysctl.vm.stat_interval=30", "psi=0",
               "sysctl.vm.dirty_writeback_centisecs=3000",
               "sysctl.net.ipv4.neigh.default.interval_probe_time_ms=60000",
               "sysctl.net.ipv6.neigh.default.interval_probe_time_ms=60000")

# Grace periods off the start path: a pod's start waits on synchronize_rcu() in the guest's kernel workers (virtio-mem
# onlining a memory block and the pmem probe take the memory-hotplug lock, whose writer waits for a grace period;
# more in the block and driver core), and a normal grace period on the guest's one vCPU took 11-19 ms each, time
# the vCPU spent idle or on other work while the plug or the probe it was part of waited (function_graph of a clone's
# pod start: three such waits, 11.0, 11.8 and 18.8 ms). Expedited, each is over in well under a millisecond: an
# expedited grace period interrupts every other CPU at once instead of waiting for each to pass a quiescent state,
# and a one-vCPU guest has none. Costs nothing while idle (nothing calls synchronize_rcu then; call_rcu() is
# unchanged); a VM with several vCPUs pays an IPI per vCPU per synchronous grace period.
START_PARAMS = ("rcupdate.rcu_expedited=1",)


class CmdlineError(InvalidSpec):
    """A value cannot be put on the kernel command line (whitespace, quotes, too long)."""


def guest_root(machine: Machine) -> tuple[str, str]:
    """(root device, mount flags) of the guest OS image: pmem slot 0 with DAX on q35, the first disk on microvm."""
    return (PMEM_ROOT, DAX_FLAGS) if machine is Machine.Q35 else (BLK_ROOT, "")


def tsc_params(tsc_khz: int) -> list[str]:
    """Under TCG the guest's PIT calibration of the TSC fails at random and the guest hangs: hand it the rate."""
    return [f"tsc_early_khz={tsc_khz}", "tsc=reliable"]


def kernel_cmdline(*, root: str, rootflags: str = "", init: str | None = None, initcmd: str | None = None,
                   tsc_khz: int | None = None, console: str = "ttyS0", quiet: bool = True, trace: bool = False,
                   extra: Sequence[str] = ()) -> str:
    """root: PMEM_ROOT (with rootflags=DAX_FLAGS) or BLK_ROOT. initcmd: a shell script that replaces /sbin/init.
    tsc_khz: only for a QEMU started without rund's driver (build_argv adds the flags itself)."""
    words = [f"console={console}" if console else "", "panic=-1"]
    if tsc_khz:
        words += tsc_params(tsc_khz)
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
