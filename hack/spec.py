"""The numbers the benchmarks check: each issue's aim for a benchmark's JSON figures, kept in one place (as
Firecracker's tests keep theirs). A benchmark prints its `aims` block right before its JSON line.

The block reports and never fails a run: this host is shared and noisy, and one run is no verdict (quote the
medians of several). A figure the run did not produce (a round not run, a null) shows as `n/a`.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Figures = Mapping[str, object]

_OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge, "==": operator.eq}


@dataclass(frozen=True)
class Figure:
    """A figure of the JSON line (`key`), or the ratio of two (`key` / `per`)."""
    key: str
    per: str | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,) if self.per is None else (self.key, self.per)

    def of(self, figures: Figures) -> float | None:
        a = _number(figures.get(self.key))
        if self.per is None or a is None:
            return a
        b = _number(figures.get(self.per))
        return a / b if b else None


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def fig(key: str) -> Figure:
    return Figure(key)


def ratio(key: str, per: str) -> Figure:
    return Figure(key, per)


@dataclass(frozen=True)
class Aim:
    label: str
    figure: Figure
    op: str                 # "<=", ">=" or "=="
    bound: float

    def check(self, figures: Figures) -> tuple[float | None, bool | None]:
        """(the figure, whether it meets the aim); (None, None) when the run has no such figure."""
        v = self.figure.of(figures)
        return (None, None) if v is None else (v, _OPS[self.op](v, self.bound))


# benchmark -> (where the aims come from, the aims)
SPEC: dict[str, tuple[str, tuple[Aim, ...]]] = {
    "ttrpc": ("issue 2", (
        Aim("ttrpc / grpc round trips per second", fig("ratio"), ">=", 1),
    )),
    "boot": ("issue 4", (
        Aim("agent ready, cold boot / clone", fig("speedup"), ">=", 20),
        Aim("private memory, clone / cold boot", fig("memory_ratio"), "<=", 0.15),
    )),
    "rootfs": ("issue 6", (
        Aim("rootfs preparation p50, ms", fig("prep_ms_p50"), "<=", 1),
        Aim("bytes written per sandbox", fig("bytes_written_per_sandbox"), "<=", 64 * 1024),
        Aim("guest page cache growth with DAX / bytes read", fig("dax_cache_growth_ratio"), "<=", 0.01),
    )),
    "cgroups": ("issue 7", (
        Aim("pool acquire p99, ms", fig("pool_p99_ms"), "<=", 1),
        Aim("p99, mkdir / pool", fig("speedup_p99"), ">=", 10),
        Aim("dying cgroups grown by the pool", fig("dying_growth_pool"), "<=", 0),
    )),
    "density": ("issue 17", (
        Aim("rund pods running", fig("pods_running"), ">=", 1000),
        Aim("PSS per pod, MiB", fig("pss_mib_per_pod"), "<=", 20),
        Aim("idle CPU per pod, % of a core", fig("idle_cpu_pct_per_pod"), "<=", 0.1),
        Aim("start p50, last 10 / first 10", ratio("start_ms_p50_last10", "start_ms_p50_first10"), "<=", 1.5),
    )),
    "coldstart": ("issue 18", (
        Aim("single p50, rund / runc", ratio("rund_single_ms_p50", "runc_single_ms_p50"), "<=", 3),
        Aim("burst of 50 p99, rund / runc", ratio("rund_burst50_ms_p99", "runc_burst50_ms_p99"), "<=", 3),
        Aim("failed pods", fig("failures"), "==", 0),
    )),
}


def aims_block(bench: str, figures: Figures) -> list[str]:
    source, aims = SPEC[bench]
    lines = [f"aims ({source}; one run, noisy host: compare medians of several runs)"]
    for aim in aims:
        value, met = aim.check(figures)
        shown = "n/a" if value is None else f"{value:.4g}"
        verdict = "" if met is None else ("met" if met else "NOT met")
        lines.append(f"  {aim.label:48} {shown:>10}  {aim.op} {aim.bound:<8g} {verdict}")
    return lines


def print_aims(bench: str, figures: Figures) -> None:
    print("\n".join(aims_block(bench, figures)), flush=True)
