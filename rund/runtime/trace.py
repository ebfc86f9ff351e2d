"""Per-step timings of the start path, logged as one line per operation (`hack/bench_ctr.py` reads them) and
appended to the node's metrics spool (rund/runtime/telemetry.py: one line, never fails)."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager

from rund.runtime import telemetry

log = logging.getLogger("rund.trace")


class StepTrace:
    def __init__(self, what: str):
        self.what = what
        self._start = time.monotonic()
        self.steps: list[tuple[str, float]] = []
        self.labels: list[tuple[str, str]] = []    # facts about the run, e.g. vm=clone

    @contextmanager
    def step(self, name: str):
        t = time.monotonic()
        try:
            yield
        finally:
            self.steps.append((name, time.monotonic() - t))

    def add(self, name: str, seconds: float) -> None:
        self.steps.append((name, seconds))

    def label(self, name: str, value: str) -> None:
        self.labels.append((name, value))

    def done(self) -> None:
        total = time.monotonic() - self._start
        parts = " ".join([*(f"{name}={value}" for name, value in self.labels),
                          *(f"{name}={seconds * 1000:.1f}ms" for name, seconds in self.steps)])
        log.info("trace %s total=%.1fms %s", self.what, total * 1000, parts)
        telemetry.record_trace(self.what, total, self.steps, self.labels)
