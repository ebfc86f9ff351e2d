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
from dataclasses import dataclass
from typing import Callable

from rund.resources import reclaim

log = logging.getLogger("rund.runtime.idle_reclaim")

IDLE_SHARE = 0.01          # of a core, over the period: an idle pod's VM used 0.05% here, a start 30-100%
MAX_PRESSURE = 10.0        # PSI memory some avg10, percent
REGROWN_KIB = 1024         # resident anonymous memory back since the last page-out worth another (walking the
                           # mappings costs the shim ~10 ms; an idle VM faults back a few hundred KiB a minute)


@dataclass
class Statistics:
    rounds: int = 0         # periods looked at
    paged_out: int = 0      # periods whose VM was paged out
    busy: int = 0           # skipped: the VM was not idle
    pressure: int = 0       # skipped: the host stalled on memory
    resident: int = 0       # skipped: next to nothing came back since the last page-out
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
    """One per sandbox with a VM: run() until cancelled (the sandbox's stop)."""

    def __init__(self, sandbox_id: str, period_s: float, vm_pid: Callable[[], int | None],
                 vm_cpu_ns: Callable[[], int | None]):
        self.sandbox_id = sandbox_id
        self.period_s = period_s
        self._pid = vm_pid
        self._cpu_ns = vm_cpu_ns
        self.stats = Statistics()

    def statistics(self) -> Statistics:
        return self.stats

    async def run(self) -> None:
        if not reclaim.supported() or reclaim.swap_total_kib() == 0:
            log.info("sandbox %s: no swap on this host (or no process_madvise): idle VMs are not paged out",
                     self.sandbox_id)
            return
        before = self._cpu_ns()
        left: int | None = None        # resident anonymous KiB just after the last page-out
        while True:
            await asyncio.sleep(self.period_s)
            now, pid = self._cpu_ns(), self._pid()
            if now is None or pid is None or before is None:
                return                                  # the VM is gone
            used, before = (now - before) / 1e9, now
            self.stats.rounds += 1
            try:
                regrown = None if left is None else reclaim.resident_anon_kib(pid) - left
                why = should_page_out(used, self.period_s, reclaim.memory_pressure(), regrown)
                if why is not None:
                    setattr(self.stats, why, getattr(self.stats, why) + 1)
                    continue
                self.stats.advised_bytes = await asyncio.to_thread(reclaim.page_out, pid)
                left = reclaim.resident_anon_kib(pid)
            except ProcessLookupError:
                return
            except OSError as e:
                log.warning("sandbox %s: paging out its idle VM: %s; not trying again", self.sandbox_id, e)
                return
            self.stats.paged_out += 1
            before = self._cpu_ns()     # the next period starts now (the page-out's CPU is the shim's, not the VM's)
            log.debug("sandbox %s: idle VM paged out (%d MiB of mappings advised)", self.sandbox_id,
                      self.stats.advised_bytes >> 20)
