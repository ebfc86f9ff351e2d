"""FaaS cold start through CRI (issue 18): RunPodSandbox -> CreateContainer -> StartContainer -> the function's
`ready` in its container log, rund and runc side by side in one private containerd with the CRI plugin.

    .venv/bin/python hack/bench_coldstart.py [--single 20] [--bursts 10,50] [--handlers rund,runc]
                                             [--image function|busybox] [--timeout 300]
                                             [--gap 0] [--save-log FILE] [--rund-config FILE]
    .venv/bin/python hack/bench_coldstart.py --single 5 --bursts 10      # a quick run

The function: by default hack/function_image.py, a 256-byte static binary that writes `ready` and sleeps in
pause(2) (so the figure is the runtime's, not a shell's); `--image busybox` runs busybox
`sh -c 'echo ready; exec sleep 100000'` instead. Each pod is one pause sandbox plus that container, no limits.

A pod's latency is from just before RunPodSandbox to the timestamp containerd put on the `ready` record of the
container's CRI log (hack/cri_bench.py; not the poll's time). Rounds:
1. One untimed warm-up pod per handler (a template, image unpack, caches).
2. Single: --single pods per handler one after another, handlers interleaved; each pod removed (and checked gone)
   before the next starts, --gap s after it. p50/p99 (nearest rank: with 10 pods p99 is the maximum).
3. Bursts: for each size in --bursts and each handler (runc first), that many threads, each with its own CRI client
   and connected, released at once by one barrier; each pod's latency (p50/p99) and the burst's makespan (barrier
   release to the last pod ready or given up). After the round every pod is removed and checked gone.

Failures are counted, never hidden: an RPC error, no `ready` within --timeout s of RunPodSandbox (the pod is given
up and removed), or anything of a removed pod still there (CRI's pod, its shim process, and for rund its state dir,
QEMU, mounts or cgroup lease; integration/rund_leaks.py). Percentiles are over the pods that got ready; the table
shows n and failures next to them.

It also prints, from the rund shims' `trace` lines in containerd's log (rund/runtime/trace.py), the median of each
step of a rund pod's start (single round), and what is outside the shim: an RPC's time minus the shim's total for it
(containerd, CNI, the shim's process start, the snapshot and bundle).

Last line, one JSON object: {"rund_single_ms_p50", "runc_single_ms_p50", "rund_single_ms_p99",
"runc_single_ms_p99", "rund_burst10_ms_p99", "runc_burst10_ms_p99", "rund_burst50_ms_p99", "runc_burst50_ms_p99",
"rund_burst50_makespan_ms", "runc_burst50_makespan_ms", "failures"} plus, for every burst size N run,
"<handler>_burstN_ms_p50" and "<handler>_burstN_makespan_ms", and "rund_cold_boots": timed rund pods whose VM
booted cold instead of cloning a template (they should be 0: `rund templates build` runs before each rund round, but
code changed under a run changes the template key). A figure of a round not run (or with no pod ready) is null;
"failures" is the total count over all rounds. Needs root.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hack import procmem  # noqa: E402
from hack.cri_bench import (HANDLERS, Env, LogIndex, PodStart, cpu_ms, ensure_spares, ensure_template,  # noqa: E402
                            fmt_ms, labelled_pods, loadavg, median_steps, pod_processes, pod_steps, provenance,
                            remove_pod, start_pod)
from hack.spec import print_aims  # noqa: E402
from hack.stats import percentile  # noqa: E402

REMOVERS = 4        # pods removed this many at a time after a burst (not timed)


def host_busy_s() -> float:
    """CPU time every CPU of the host spent busy so far, in seconds: the round's work, others' and the kernel's, for
    what the pods' own processes do not show."""
    return procmem.host_cpu()[0] / procmem.CLK_TCK


def settle(most: float = 0.25, longest: float = 60.0) -> str:
    """Wait until the host is quiet (busy under `most` of its CPUs over a second) before a burst: the kernel's
    cleanup of the previous round's pods (network namespaces go asynchronously) and others' work would otherwise be
    charged to whichever runtime's burst comes next. Returns what it waited."""
    cpus = os.cpu_count() or 1
    t0 = time.monotonic()
    while True:
        b0 = host_busy_s()
        time.sleep(1.0)
        busy = (host_busy_s() - b0) / cpus
        if busy < most or time.monotonic() - t0 > longest:
            return f"host {busy:.0%} busy after {time.monotonic() - t0:.0f} s"


class Round:
    def __init__(self, handler: str, kind: str, size: int):
        self.handler, self.kind, self.size = handler, kind, size
        self.pods: list[PodStart] = []
        self.makespan_ms: float | None = None
        self.leftover: dict[str, dict] = {}       # sid -> what was left after removal
        self.remove_ms: list[float] = []
        self.load: list[float] = []               # the host's 1-min load average at each pod's (burst's) start
        self.ctd_cpu_ms: list[tuple[float, float]] = []   # containerd's CPU, its reaped children's, per pod started
        self.host_busy_s: float | None = None     # a burst: the whole host's busy CPU time meanwhile (/proc/stat)

    @property
    def label(self) -> str:
        return f"{self.handler} {self.kind}"

    @property
    def ready(self) -> list[float]:
        return [p.ready_ms for p in self.pods if p.ok and p.ready_ms is not None]

    @property
    def failures(self) -> list[str]:
        out = [f"{p.name} ({p.sid[:12] or 'no id'}): {p.error}" for p in self.pods if not p.ok]
        out += [f"{sid[:12]}: left after removal: {left}" for sid, left in self.leftover.items()]
        return out

    def pct(self, q: float) -> float | None:
        return round(percentile(self.ready, q), 1) if self.ready else None


class Bench:
    def __init__(self, env: Env, timeout: float):
        self.env, self.timeout = env, timeout
        self.cri = env.client(timeout)
        self.ctd_pid = env.ctd.proc.pid

    def pod_cpu(self, p: PodStart, before: dict[int, float]) -> None:
        """The pod's processes' CPU until now, less what those that existed before its start had used (a spare VM
        restored and warmed before the pod took it: that work was not the pod's start)."""
        if p.ok:
            for pid, kind in pod_processes(p.handler, self.env.address, [p.sid])[p.sid].items():
                p.cpu_ms[kind] = p.cpu_ms.get(kind, 0.0) + cpu_ms([pid]) - before.get(pid, 0.0)

    @staticmethod
    def qemu_cpu() -> dict[int, float]:
        """Every QEMU's CPU so far (the spare VMs a pod may take among them)."""
        out = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if procmem.is_qemu(int(d.name)):
                        out[int(d.name)] = cpu_ms([int(d.name)])
                except OSError:
                    continue
        return out

    def ctd_cpu(self) -> tuple[float, float]:
        return cpu_ms([self.ctd_pid]), cpu_ms([self.ctd_pid], children=True)

    def remove(self, rnd: Round, sid: str) -> None:
        t = time.monotonic()
        left = remove_pod(self.cri, self.env.address, sid)
        rnd.remove_ms.append((time.monotonic() - t) * 1000)
        if left:
            rnd.leftover[sid] = left

    def sweep(self, rnd: Round, labels: dict[str, str], sids: set[str]) -> None:
        """Remove every pod of the round: those we know and any CRI lists under the round's label (a RunPodSandbox
        that timed out on our side may have made one)."""
        sids = sids | set(labelled_pods(self.cri, labels))
        with ThreadPoolExecutor(REMOVERS) as pool:
            list(pool.map(lambda s: self.remove(rnd, s), sorted(sids)))
        if late := labelled_pods(self.cri, labels):
            for sid in late:
                self.remove(rnd, sid)
            if still := labelled_pods(self.cri, labels):
                rnd.leftover.update({sid: {"cri pod": sid} for sid in still})

    def one(self, rnd: Round, name: str) -> PodStart:
        labels = {"rund-bench": name}
        rnd.load.append(loadavg())
        before = self.qemu_cpu()
        ctd0 = self.ctd_cpu()
        p = start_pod(self.cri, self.env, rnd.handler, name, self.timeout, labels)
        self.pod_cpu(p, before)
        ctd1 = self.ctd_cpu()
        rnd.ctd_cpu_ms.append((ctd1[0] - ctd0[0], ctd1[1] - ctd0[1]))
        rnd.pods.append(p)
        self.sweep(rnd, labels, {p.sid} if p.sid else set())
        return p

    def burst(self, rnd: Round, tag: str) -> None:
        labels = {"rund-bench": tag}
        rnd.load.append(loadavg())
        clients = [self.env.client(self.timeout) for _ in range(rnd.size)]
        barrier = threading.Barrier(rnd.size + 1)
        results: list[PodStart | None] = [None] * rnd.size
        before = self.qemu_cpu()

        def worker(i: int) -> None:
            barrier.wait()
            results[i] = p = start_pod(clients[i], self.env, rnd.handler, f"{tag}-{i}", self.timeout, labels)
            self.pod_cpu(p, before)

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(rnd.size)]
        for t in threads:
            t.start()
        ctd0 = self.ctd_cpu()
        busy0 = host_busy_s()
        barrier.wait()
        released = time.monotonic()
        for t in threads:
            t.join()
        rnd.host_busy_s = host_busy_s() - busy0
        ctd1 = self.ctd_cpu()
        rnd.ctd_cpu_ms = [((ctd1[0] - ctd0[0]) / rnd.size, (ctd1[1] - ctd0[1]) / rnd.size)] * rnd.size
        for c in clients:
            c.close()
        rnd.pods = [p for p in results if p is not None]
        rnd.makespan_ms = round((max(p.end_mono for p in rnd.pods) - released) * 1000, 1)
        self.sweep(rnd, labels, {p.sid for p in rnd.pods if p.sid})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--single", type=int, default=20, help="sequential pods per handler (default 20)")
    ap.add_argument("--bursts", default="10,50", help="burst sizes, comma-separated ('' or 0: none)")
    ap.add_argument("--handlers", default="rund,runc", help="runtime handlers to measure (default rund,runc)")
    ap.add_argument("--image", choices=("function", "busybox"), default="function")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds from RunPodSandbox to `ready` before a "
                    "pod is given up as a failure (default 300)")
    ap.add_argument("--gap", type=float, default=0.0, help="seconds between single pods (default 0: back to back); "
                    "arrivals spaced apart, as a FaaS node sees them, leave rund's spare VMs time to refill")
    ap.add_argument("--save-log", metavar="FILE", help="keep containerd's log (with the shims' lines) in FILE")
    ap.add_argument("--rund-config", help="the rund runtime class's config file (ConfigPath; default: rund's "
                    "default config)")
    args = ap.parse_args()
    handlers = [h for h in args.handlers.split(",") if h]
    if unknown := set(handlers) - set(HANDLERS):
        ap.error(f"unknown handlers {unknown}")
    bursts = [int(b) for b in args.bursts.split(",") if b.strip() and int(b) > 0]

    from rund import config
    spares_wanted = "rund" in handlers and config.load(args.rund_config).templates.spare_vms > 0
    env = Env.start(args.image, prefix="rund-coldstart-", rund_config=args.rund_config)
    print(f"private containerd {env.address}; function image {env.image} {' '.join(env.command)}", flush=True)
    print(provenance(), flush=True)
    rounds: list[Round] = []
    log_text = ""
    try:
        bench = Bench(env, args.timeout)

        def template() -> None:
            if "rund" in handlers:
                print(f"rund template: {ensure_template(config=args.rund_config)}", flush=True)
                if spares_wanted:       # a node warmed before traffic: the class's pool full before a round
                    print(f"rund {ensure_spares(config=args.rund_config)}", flush=True)

        template()
        for h in handlers:
            warm = Round(h, "warm-up", 1)
            rounds.append(warm)
            p = bench.one(warm, f"warm-{h}")
            print(f"warm-up {h}: {fmt_ms(p.ready_ms)} ms {p.error}", flush=True)
        singles = {h: Round(h, "single", 1) for h in handlers}
        if args.single > 0:
            rounds += singles.values()
            template()
        for i in range(args.single):
            order = handlers if i % 2 == 0 else handlers[::-1]
            line = []
            for h in order:
                time.sleep(args.gap)
                p = bench.one(singles[h], f"single-{h}-{i}")
                line.append(f"{h} {fmt_ms(p.ready_ms)} ms" + (f" FAILED {p.error}" if not p.ok else ""))
            print(f"single {i + 1}/{args.single}: " + ", ".join(line), flush=True)
        for n in bursts:
            for h in sorted(handlers, key=lambda h: h != "runc"):
                rnd = Round(h, f"burst{n}", n)
                rounds.append(rnd)
                if h == "rund":
                    template()
                print(f"before the burst of {n} {h}: {settle()}", flush=True)
                bench.burst(rnd, f"burst{n}-{h}")
                print(f"burst of {n} {h}: p50 {fmt_ms(rnd.pct(0.5))} ms, p99 {fmt_ms(rnd.pct(0.99))} ms, makespan "
                      f"{fmt_ms(rnd.makespan_ms)} ms, {len(rnd.failures)} failures", flush=True)
                time.sleep(2)           # let the removed pods' processes go before the next burst
        bench.cri.close()
    finally:
        log_text = env.ctd.log_path.read_text(errors="replace") if env.ctd.log_path.exists() else ""
        if args.save_log:
            Path(args.save_log).write_text(log_text)
        env.stop()

    idx = LogIndex.parse(log_text)
    for rnd in rounds:
        for p in rnd.pods:
            if p.ok:
                p.steps = pod_steps(p, idx)

    print(f"\n{'':16} {'n ready':>7} {'fail':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'makespan':>9}"
          f" {'remove p50':>10} {'load':>5}")
    for rnd in rounds:
        r = rnd.ready
        print(f"{rnd.label:16} {len(r):7} {len(rnd.failures):5} {fmt_ms(rnd.pct(0.5)):>8} {fmt_ms(rnd.pct(0.99)):>8}"
              f" {fmt_ms(max(r) if r else None):>8} {fmt_ms(rnd.makespan_ms):>9}"
              f" {fmt_ms(statistics.median(rnd.remove_ms) if rnd.remove_ms else None):>10}"
              f" {statistics.median(rnd.load) if rnd.load else 0:5.1f}")
    print("(load: the host's 1-minute load average when the round's pods started, median; 2 cores)")

    print("\nthe client's view, medians over the ready pods (ms): the RunPodSandbox, CreateContainer and "
          "StartContainer calls, then to `ready`; poll lag = when the poll saw `ready` minus the record's time")
    for rnd in rounds:
        ok = [p for p in rnd.pods if p.ok]
        if not ok:
            continue
        med = {k: statistics.median([getattr(p, k) for p in ok]) for k in ("run_ms", "create_ms", "start_ms")}
        to_ready = statistics.median([p.ready_ms - p.run_ms - p.create_ms - p.start_ms for p in ok])
        lag = statistics.median([p.seen_ms - p.ready_ms for p in ok])
        print(f"  {rnd.label:16} run {med['run_ms']:6.0f}  create {med['create_ms']:6.0f}  start "
              f"{med['start_ms']:6.0f}  ->ready {to_ready:6.0f}   poll lag {lag:4.0f}")

    print("\nhost CPU per pod start (ms, medians): the pod's own processes until just after `ready` by kind (rund: "
          "shim, QEMU; runc: shim, pause, function), containerd itself, and its reaped children (`shim start` runs, "
          "CNI plugins, runc); the round's total in core-seconds and the least time 2 cores need for it")
    for rnd in rounds:
        own = [p.cpu_ms for p in rnd.pods if p.cpu_ms]
        if not own:
            continue
        kinds = sorted({k for c in own for k in c}, key=lambda k: (k not in ("shim", "qemu"), k))
        parts = "  ".join(f"{k} {statistics.median([c.get(k, 0.0) for c in own]):6.0f}" for k in kinds)
        total_s = (sum(sum(c.values()) for c in own) + sum(a + b for a, b in rnd.ctd_cpu_ms)) / 1000
        print(f"  {rnd.label:16} {parts}   containerd {statistics.median([a for a, _ in rnd.ctd_cpu_ms]):5.0f}"
              f"  children {statistics.median([b for _, b in rnd.ctd_cpu_ms]):5.0f}"
              f"   round {total_s:6.1f} core-s (>= {total_s / 2:5.1f} s on 2 cores)"
              + (f", host busy {rnd.host_busy_s:5.1f} core-s in the burst" if rnd.host_busy_s is not None else ""))

    for h in handlers:
        cols = {rnd.kind: rnd for rnd in rounds if rnd.handler == h and any(p.steps for p in rnd.pods)}
        if not cols:
            continue
        single = cols.get("single")
        typical = None
        if single is not None:
            with_steps = sorted((p for p in single.pods if p.steps), key=lambda p: p.ready_ms)
            typical = with_steps[(len(with_steps) - 1) // 2] if with_steps else None
        meds = {k: median_steps(p for p in rnd.pods if p.ok) for k, rnd in cols.items()}
        print(f"\n{h} start, step by step (ms), from containerd's log and the shims' trace lines: the median pod of "
              f"the single round ({typical.name if typical else '-'}, its segments add up to its total), then "
              f"each round's medians per segment (medians do not add up)")
        if h == "rund":
            for how in ("clone", "spare"):
                n = {k: sum(1 for p in rnd.pods if p.ok and idx.traces.get(("create", p.sid), {})
                            .get("labels", {}).get("vm") == how) for k, rnd in cols.items()}
                if how == "clone" or any(n.values()):
                    what = "a template clone" if how == "clone" else "a spare VM (clone made ahead)"
                    print(f"  {f'(pods whose VM was {what})':62} {'':>8}" + "".join(f"{n[k]:>10}" for k in cols))
        print(f"  {'':62} {'median':>8}" + "".join(f"{k:>10}" for k in cols))
        print(f"  {'':62} {'pod':>8}")
        names = list(dict.fromkeys([*(typical.steps if typical else {}), *(k for m in meds.values() for k in m)]))
        for name in names:
            own = typical.steps.get(name) if typical else None
            print(f"  {name:62} {fmt_ms(own) if own is None else f'{own:8.1f}':>8}"
                  + "".join(f"{meds[k].get(name, float('nan')):10.1f}" for k in cols))
        if typical:
            print(f"  {'total (RunPodSandbox call -> ready)':62} {typical.ready_ms:8.1f}"
                  + "".join(f"{cols[k].pct(0.5) or float('nan'):10.1f}" for k in cols))

    cold = {rnd.label: sum(1 for p in rnd.pods if p.ok and idx.traces.get(("create", p.sid), {})
                           .get("labels", {}).get("vm", "clone") not in ("clone", "spare"))
            for rnd in rounds if rnd.handler == "rund" and rnd.kind != "warm-up"}
    if any(cold.values()):
        print("\nWARNING: rund pods whose VM booted cold (no template: the runtime's code or config changed under "
              "the run, or a template was being built), their times are not clone starts: "
              + ", ".join(f"{k} {v}" for k, v in cold.items() if v))

    fails = [(rnd.label, f) for rnd in rounds for f in rnd.failures]
    if fails:
        print(f"\n{len(fails)} failures:")
        for label, f in fails:
            print(f"  {label}: {f}")

    by = {(rnd.handler, rnd.kind): rnd for rnd in rounds}

    def fig(h: str, kind: str, what: str) -> float | None:
        rnd = by.get((h, kind))
        if rnd is None:
            return None
        return rnd.makespan_ms if what == "makespan" else rnd.pct(0.5 if what == "p50" else 0.99)

    result: dict[str, object] = {}
    for what in ("p50", "p99"):
        for h in HANDLERS:
            result[f"{h}_single_ms_{what}"] = fig(h, "single", what)
    for n in sorted({10, 50, *bursts}):
        for h in HANDLERS:
            result[f"{h}_burst{n}_ms_p99"] = fig(h, f"burst{n}", "p99")
        for h in HANDLERS:
            result[f"{h}_burst{n}_ms_p50"] = fig(h, f"burst{n}", "p50")
        for h in HANDLERS:
            result[f"{h}_burst{n}_makespan_ms"] = fig(h, f"burst{n}", "makespan")
    result["failures"] = len(fails)
    result["rund_cold_boots"] = sum(cold.values())
    print_aims("coldstart", result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
