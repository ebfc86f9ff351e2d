"""A sandbox's idle VM paged out to the host's swap (`[hypervisor] idle_reclaim_s`), TMO's idea per pod.

Every period the sandbox looks at its QEMU's CPU time over the period: a VM that used less than IDLE_SHARE of a
core ran nothing but timers and the odd Stats call, so its private memory goes to swap (rund/resources/reclaim.py;
zram keeps it compressed in RAM). A busy VM is left alone: paging out its working set would only make it fault the
pages back. The host's memory pressure is the other input: while tasks stall on memory (PSI `some avg10` at or
above MAX_PRESSURE), reclaiming more would add to the stalls of the pods that fault pages back, so it waits.

The decision (`should_page_out`) does no I/O; the loop reads /proc and pages out in a thread.
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Callable

from rund.resources import reclaim

log = logging.getLogger("rund.runtime.idle_reclaim")

IDLE_SHARE = 0.01          # of a core, over the period: an idle pod's VM used 0.05% here, a start 30-100%
MAX_PRESSURE = 10.0        # PSI memory some avg10, percent
# Resident anonymous memory back since the last page-out that is worth another. An idle guest keeps touching a
# small working set (its timers, the agent's loop: ~3 MiB back within 30 s here); paging that out again every period
# only makes QEMU fault it back (measured with 1 MiB and 15 s: the pod's idle CPU 0.036 -> 0.139% of a core). Past
# this, the VM did real work since, and idles again.
REGROWN_KIB = 8 << 10
# The shim's own resident anonymous KiB just after its last page-out, by pid: shared by the sandboxes of one shim (a
# group shim serves several pods), so its memory goes out with whichever VM idles first and not again with each.
_shim_left: dict[int, int] = {}


@dataclass
class Statistics:
    rounds: int = 0         # periods looked at
    paged_out: int = 0      # periods whose VM was paged out
    busy: int = 0           # skipped: the VM was not idle
    pressure: int = 0       # skipped: the host stalled on memory
    resident: int = 0       # skipped: next to nothing came back since the last page-out
    shim_paged_out: int = 0  # periods that paged out the shim itself too
    advised_bytes: int = 0  # last page-out's advised bytes


def should_page_out(cpu_seconds: float, period_s: float, pressure: float | None, regrown_kib: int | None = None
                    ) -> str | None:
    """None to page out; else why not ("busy", "pressure", "resident"). regrown_kib: resident anonymous memory
    gained since the last page-out (None: none yet)."""
    if cpu_seconds >= IDLE_SHARE * period_s:
        return "busy"
    if pressure is not None and pressure >= MAX_PRESSURE:
        return "pressure"
    if regrown_kib is not None and regrown_kib < REGROWN_KIB:
        return "resident"
    return None


class IdleReclaim:
    """One per sandbox with a VM: run() until cancelled (the sandbox's stop). With `also_self`, the shim's own
    private memory goes out with its idle VM, once REGROWN_KIB came back since any of its sandboxes last paged it
    out (a shim of one pod idles when its VM does; a group shim serving a busy pod faults back what it uses)."""

    def __init__(self, sandbox_id: str, period_s: float, vm_pid: Callable[[], int | None],
                 vm_cpu_ns: Callable[[], int | None], also_self: bool = False):
        self.sandbox_id = sandbox_id
        self.period_s = period_s
        self._pid = vm_pid
        self._cpu_ns = vm_cpu_ns
        self._also_self = also_self
        self.stats = Statistics()

    def statistics(self) -> Statistics:
        return self.stats

    async def run(self) -> None:
        if not reclaim.supported() or reclaim.swap_total_kib() == 0:
            log.info("sandbox %s: no swap on this host (or no process_madvise): idle VMs are not paged out",
                     self.sandbox_id)
            return
        before = self._cpu_ns()
        left: dict[int, int] = {}       # pid -> resident anonymous KiB just after its last page-out
        while True:
            await asyncio.sleep(self.period_s)
            now, vm = self._cpu_ns(), self._pid()
            if now is None or vm is None or before is None:
                return                                  # the VM is gone
            used, before = (now - before) / 1e9, now
            self.stats.rounds += 1
            shim = os.getpid()
            pids = [vm, shim] if self._also_self else [vm]
            try:
                regrown: dict[int, int | None] = {}
                for pid in pids:
                    was = _shim_left.get(pid) if pid == shim else left.get(pid)
                    regrown[pid] = None if was is None else reclaim.resident_anon_kib(pid) - was
                pressure = reclaim.memory_pressure()
                whys = {pid: should_page_out(used, self.period_s, pressure, regrown[pid]) for pid in pids}
                if whys[vm] in ("busy", "pressure"):
                    setattr(self.stats, whys[vm], getattr(self.stats, whys[vm]) + 1)
                    continue
                due = [pid for pid in pids if whys[pid] is None]
                if not due:
                    self.stats.resident += 1
                    continue
                if shim in due:     # claimed before any await: the shim's other sandboxes see it taken
                    _shim_left[shim] = reclaim.resident_anon_kib(shim)
                for pid in due:
                    self.stats.advised_bytes = await asyncio.to_thread(reclaim.page_out, pid)
                    (_shim_left if pid == shim else left)[pid] = reclaim.resident_anon_kib(pid)
                    self.stats.shim_paged_out += pid == shim
            except ProcessLookupError:
                return
            except OSError as e:
                log.warning("sandbox %s: paging out its idle VM: %s; not trying again", self.sandbox_id, e)
                return
            self.stats.paged_out += 1
            before = self._cpu_ns()     # the next period starts now (the page-out's CPU is the shim's, not the VM's)
            log.debug("sandbox %s: idle VM paged out (%s)", self.sandbox_id, ", ".join(map(str, due)))
