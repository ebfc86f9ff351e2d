"""Figures the benchmarks share."""
from __future__ import annotations

import math


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..1 (with 10 samples, p99 is the maximum)."""
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]
