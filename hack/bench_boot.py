"""Cold boot vs template clone, side by side: time to agent-ready and private memory per VM.

    python3 hack/bench_boot.py [--runs 10] [--settle 5] [--no-tuning] [--no-warm-compare]

1. Builds a template (warmed: one container run before the save) in a private tmpfs dir.
2. Cold: `--runs` sandbox VMs booted one after another (TCG), each timed from QEMU exec to agent Health; all left
   running, then after `--settle` s Private (Private_Clean + Private_Dirty) and Pss from /proc/PID/smaps_rollup.
3. Clone: the same for `--runs` clones (restore, Health, PostRestore), all running at once when measured.
4. Tuning (clones only): TCG tb-size as configured vs 4 MiB, QEMU's allocator settings (process.QEMU_ENV) vs glibc's
   and GLib's defaults (THP is always off for QEMU: process.py).
5. Warm compare: the first container in a clone of a warmed vs an unwarmed template (one more template build).

The shape is the configured sandbox shape (q35, 256 MiB, rootfs on pmem with DAX by default). Not a test.
Last line: {"cold_ready_ms_p50", "clone_ready_ms_p50", "speedup", "cold_private_mib", "clone_private_mib",
"memory_ratio"} (speedup = cold/clone, memory_ratio = clone/cold, memory medians over the running VMs).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hack.spec import print_aims  # noqa: E402
from hack.stats import percentile  # noqa: E402
from rund import config  # noqa: E402
from rund.agent import LayeredRootfs, StdioConfig  # noqa: E402
from rund.templates import LaunchRequest, Launcher, shape_from_config  # noqa: E402
from rund.templates.clone import clone_vm  # noqa: E402

PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
# Overrides process.QEMU_ENV back to the allocators' own behaviour: an arena per thread (QEMU has 4 on a 1-vCPU TCG
# clone, below glibc's 8 per core) and GLib's slice allocator (no G_SLICE flags).
ALLOCATOR_DEFAULTS = {"MALLOC_ARENA_MAX": "8", "G_SLICE": ""}


def smaps(pid: int) -> dict[str, float]:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:", "Private_Clean:", "Private_Dirty:"):
                out[parts[0][:-1]] = int(parts[1]) / 1024
    out["Private"] = out["Private_Clean"] + out["Private_Dirty"]
    return out


class Bench:
    def __init__(self, base: Path, shm: Path, settle: float):
        self.cfg = config.load()
        self.shape = shape_from_config(self.cfg)
        self.base, self.shm, self.settle = base, shm, settle
        self.n = 0

    def launcher(self, shape=None, warm: bool = True, store: str = "templates") -> Launcher:
        return Launcher(shape or self.shape, work_dir=self.base / "work", templates_dir=self.shm / store,
                        warm_templates=warm, build_templates=False)

    def request(self) -> LaunchRequest:
        self.n += 1
        d = self.base / f"vm{self.n}"
        d.mkdir()
        return LaunchRequest(name=f"vm{self.n}", dir=d, hostname=f"vm{self.n}")

    async def series(self, label: str, runs: int, start) -> tuple[list[float], list[dict]]:
        """Start `runs` VMs one after another, keep them all running, then measure their memory."""
        running, ready = [], []
        try:
            for _ in range(runs):
                launched = await start()
                running.append(launched)
                ready.append(launched.timings["ready"] * 1000)
                print(f"  {label:<14} ready {ready[-1]:9.1f} ms  {fmt_timings(launched.timings)}", flush=True)
            await asyncio.sleep(self.settle)
            mems = [smaps(l.vm.pid) for l in running]
        finally:
            for launched in running:
                await launched.agent.close()
                await launched.vm.stop(timeout=2.0)
        return ready, mems

    async def interleaved(self, variants: list, rounds: int) -> dict[str, tuple[list[float], list[dict]]]:
        """Round-robin over the variants so that changes in host load hit each alike; measured all at once."""
        running: dict[str, list] = {label: [] for label, _ in variants}
        try:
            for _ in range(rounds):
                for label, start in variants:
                    launched = await start()
                    running[label].append(launched)
                    print(f"  {label:<18} ready {launched.timings['ready'] * 1000:9.1f} ms  "
                          f"{fmt_timings(launched.timings)}", flush=True)
            await asyncio.sleep(self.settle)
            return {label: ([l.timings["ready"] * 1000 for l in vms], [smaps(l.vm.pid) for l in vms])
                    for label, vms in running.items()}
        finally:
            for vms in running.values():
                for launched in vms:
                    await launched.agent.close()
                    await launched.vm.stop(timeout=2.0)

    async def first_container_ms(self, launcher: Launcher) -> float:
        launched = await launcher.launch(self.request())
        try:
            assert launched.how == "clone", launched.how
            agent = launched.agent
            rootfs = LayeredRootfs(base_device="/dev/pmem0" if self.shape.dax else "/dev/vda", base_fstype="erofs",
                                   dax=self.shape.dax, upper_size_bytes=4 << 20)
            spec = {"ociVersion": "1.0.2", "hostname": "b",
                    "process": {"args": ["/bin/sh", "-c", "echo hi"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                                "env": [PATH_ENV]},
                    "linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")]}}
            t0 = time.monotonic()
            await agent.create_container("c", spec, rootfs, StdioConfig())
            await agent.start_container("c")
            await agent.wait_process("c")
            elapsed = (time.monotonic() - t0) * 1000
            await agent.remove_container("c")
            return elapsed
        finally:
            await launched.agent.close()
            await launched.vm.stop(timeout=2.0)


def fmt_timings(t: dict) -> str:
    return " ".join(f"{k}={v * 1000:.0f}" for k, v in t.items() if k != "ready")


def summary(label: str, ready: list[float], mems: list[dict]) -> dict:
    row = {"ready_p50": statistics.median(ready), "ready_p99": percentile(ready, 0.99),
           "private": statistics.median(m["Private"] for m in mems), "pss": statistics.median(m["Pss"] for m in mems),
           "rss": statistics.median(m["Rss"] for m in mems)}
    print(f"{label:<26} {row['ready_p50']:10.1f} {row['ready_p99']:10.1f} {row['private']:9.1f} "
          f"{row['pss']:9.1f} {row['rss']:9.1f}   (n={len(ready)})")
    return row


async def run(a, base: Path, shm: Path) -> dict:
    b = Bench(base, shm, a.settle)
    launcher = b.launcher()
    t0 = time.monotonic()
    outcome, template = await launcher.ensure_template()
    print(f"template {template.key}: {outcome} in {time.monotonic() - t0:.1f} s {template.manifest.build}; "
          f"RAM file {template.memory.stat().st_blocks * 512 / 2**20:.0f} MiB allocated, "
          f"state {template.manifest.state.size / 1024:.0f} KiB")

    print(f"cold boots ({a.runs}, one after another, all kept running):")
    cold = await b.series("cold", a.runs, lambda: launcher.cold_boot(b.request()))
    print(f"clones ({a.runs}, one after another, all kept running):")
    clone = await b.series("clone", a.runs, lambda: launcher.launch(b.request()))

    rows = {}
    tuning = {}
    if a.tuning:
        def clone_with(shape, env: dict):
            async def start():
                saved = {k: os.environ.get(k) for k in env}
                os.environ.update(env)   # QEMU inherits the environment at exec
                try:
                    req = b.request()
                    vm, agent, timings = await clone_vm(shape, template, req.name, req.dir, (),
                                                        launcher.placeholder(), hostname=req.hostname)
                finally:
                    for k, v in saved.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v
                from rund.templates.launch import LaunchedVM
                return LaunchedVM(vm, agent, "clone", (), shape.dax, timings)
            return start
        tb = f"tb{b.shape.tb_size_mib}"
        variants = [(f"clone {tb}", b.shape, {}),
                    ("clone tb4", replace(b.shape, tb_size_mib=4), {}),
                    (f"clone {tb} malloc defaults", b.shape, ALLOCATOR_DEFAULTS),
                    ("clone tb4 malloc defaults", replace(b.shape, tb_size_mib=4), ALLOCATOR_DEFAULTS)]
        print("tuning (clones of the same template, variants interleaved, all kept running):")
        tuning = await b.interleaved([(label, clone_with(shape, env)) for label, shape, env in variants],
                                     a.tuning_runs)

    warm_cmp = None
    if a.warm_compare:
        print("first container in a clone: warmed template vs unwarmed template")
        cold_launcher = b.launcher(warm=False, store="templates-unwarmed")
        t0 = time.monotonic()
        await cold_launcher.ensure_template()
        print(f"  unwarmed template built in {time.monotonic() - t0:.1f} s")
        warm_cmp = {"warm": [await b.first_container_ms(launcher) for _ in range(3)],
                    "unwarmed": [await b.first_container_ms(cold_launcher) for _ in range(3)]}

    print(f"\n{'':<26} {'ready p50':>10} {'ready p99':>10} {'Private':>9} {'Pss':>9} {'Rss':>9}   (ms, MiB)")
    rows["cold"] = summary("cold boot", *cold)
    rows["clone"] = summary(f"clone (tb{b.shape.tb_size_mib})", *clone)
    for label, (ready, mems) in tuning.items():
        summary(label, ready, mems)
    if warm_cmp:
        print(f"first container (create+start+wait, ms): warmed template "
              f"{' '.join(f'{x:.0f}' for x in warm_cmp['warm'])}, unwarmed "
              f"{' '.join(f'{x:.0f}' for x in warm_cmp['unwarmed'])}")
    return {
        "cold_ready_ms_p50": round(rows["cold"]["ready_p50"], 1),
        "clone_ready_ms_p50": round(rows["clone"]["ready_p50"], 1),
        "speedup": round(rows["cold"]["ready_p50"] / rows["clone"]["ready_p50"], 1),
        "cold_private_mib": round(rows["cold"]["private"], 1),
        "clone_private_mib": round(rows["clone"]["private"], 1),
        "memory_ratio": round(rows["clone"]["private"] / rows["cold"]["private"], 3),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--tuning-runs", type=int, default=5)
    p.add_argument("--settle", type=float, default=5.0)
    p.add_argument("--no-tuning", dest="tuning", action="store_false")
    p.add_argument("--no-warm-compare", dest="warm_compare", action="store_false")
    a = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="rund-bench-", dir="/tmp"))
    shm = Path(tempfile.mkdtemp(prefix="rund-bench-", dir="/dev/shm"))
    try:
        result = asyncio.run(run(a, base, shm))
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    print_aims("boot", result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
