"""Per-step timings of the start path, logged as one line per operation (`hack/bench_ctr.py` reads them) and
appended to the node's metrics spool (rund/runtime/telemetry.py: one line, never fails)."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Callable

from rund.runtime import telemetry

log = logging.getLogger("rund.trace")


class StepTrace:
    def __init__(self, what: str):
        self.what = what
        self._start = time.monotonic()
        self.steps: list[tuple[str, float]] = []
        self.labels: list[tuple[str, str]] = []    # facts about the run, e.g. vm=clone
        # The VM's CPU time so far in ns (None: no VM yet), when the operation has one: each step then also logs
        # the CPU the VM used in it (`cpu.<step>`), the guest's cost, which wall time hides under load.
        self.vm_cpu: Callable[[], int | None] | None = None
        self.cpu_steps: list[tuple[str, float]] = []

    @contextmanager
    def step(self, name: str):
        t = time.monotonic()
        c0 = self.vm_cpu() if self.vm_cpu else None
        try:
            yield
        finally:
            self.steps.append((name, time.monotonic() - t))
            # None: the VM is gone; less than before: one of its threads ended and took its time along (schedstat)
            if c0 is not None and (c1 := self.vm_cpu()) is not None and c1 >= c0:
                self.cpu_steps.append((name, (c1 - c0) / 1e9))

    def add(self, name: str, seconds: float) -> None:
        self.steps.append((name, seconds))

    def label(self, name: str, value: str) -> None:
        self.labels.append((name, value))

    def done(self) -> None:
        total = time.monotonic() - self._start
        parts = " ".join([*(f"{name}={value}" for name, value in self.labels),
                          *(f"{name}={seconds * 1000:.1f}ms" for name, seconds in self.steps),
                          *(f"cpu.{name}={seconds * 1000:.1f}ms" for name, seconds in self.cpu_steps)])
        log.info("trace %s total=%.1fms %s", self.what, total * 1000, parts)
        telemetry.record_trace(self.what, total, self.steps, self.labels)
