"""Density (issue 17): N idle pods through CRI, and what they cost the host per pod, rund and runc side by side.

    .venv/bin/python hack/bench_density.py [--pods 20] [--runtime rund|runc|both] [--idle-seconds 60]
                                           [--settle 10] [--image function|busybox] [--timeout 300]
                                           [--rund-config PATH] [--allow-many] [--reserve-gib 2]

Each pod is a pause sandbox plus one container of hack/function_image.py (prints `ready`, then sleeps in pause(2);
`--image busybox`: `sh -c 'echo ready; exec sleep ...'`), no memory limit, started one after another through a private
containerd with the CRI plugin (hack/cri_bench.py). For each runtime (rund first under `both`):
1. MemAvailable before; the pods started one by one, each timed from RunPodSandbox to `ready` in its log. Starting
   stops early when MemAvailable falls below --reserve-gib: how many pods fit is then the figure (pods_running).
2. After --settle s: the processes that exist because of the pods. rund: each pod's shim and QEMU from its state
   record (/run/rund/k8s.io/<sid>/sandbox.json: shim_pid, qemu_pid) and all their descendants. runc: each pod's
   containerd-shim-runc-v2 (found by its argv: this containerd's address and `-id <sid>`) and all its descendants
   (pause, the function). containerd itself is not counted (it exists without pods); its growth is shown apart.
3. Idle CPU: utime+stime (/proc/<pid>/stat) of those processes over --idle-seconds, per pod, in % of one core.
4. PSS (/proc/<pid>/smaps_rollup) of those processes after the idle window, summed and divided by the pods
   running; and, from /proc/<pid>/smaps, the median pod's PSS by mapping category per process kind (hack/procmem.py:
   QEMU's guest RAM CoW copies and template share, TCG buffer, heap, ...; the shim's heap and anonymous maps).
5. MemAvailable with the pods running (after the window); then every pod removed, checked gone (CRI, shim, rund's
   state dir, QEMU, mounts, cgroup lease), and MemAvailable after.
6. Where the start's growth goes, first 10 pods against the last 10: the host while they started (busy, load, the
   commands that used its CPU) and each step's median from containerd's log and the shims' trace lines.
--rund-config: the rund handler's ConfigPath (a runtime class's config file, e.g. one tuned for density); the template
it needs is built with `rund --config PATH templates build` before the round.
MemAvailable is the whole host's: other work on the machine moves it too; PSS and CPU count only the pods' processes.

Last line, one JSON object. With one runtime: {"pods_running", "pss_mib_per_pod", "idle_cpu_pct_per_pod",
"start_ms_p50_first10", "start_ms_p50_last10", "mem_available_gib": {"before", "running", "after"},
"pss_mib_per_pod_by_kind": {...}, "failures"}. With `--runtime both` the same object nested per runtime:
{"rund": {...}, "runc": {...}}. Needs root. More than 100 rund pods needs --allow-many; the CRI network then
spans as many /24s as the pods need (integration/cri/network.py).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hack import procmem  # noqa: E402
from hack.cri_bench import (Env, LogIndex, PodStart, ensure_template, fmt_ms, labelled_pods, loadavg,  # noqa: E402
                            median_steps, pod_processes, pod_steps, provenance, remove_pod, start_pod)
from hack.spec import print_aims  # noqa: E402
from hack.stats import percentile  # noqa: E402
from integration.cri.client import api  # noqa: E402
from rund.procfs import argvs  # noqa: E402

MAX_RUND_PODS = 100
MIB_PER_POD_GUARD = 150          # refuse to start when MemAvailable < reserve + min(N, 10) x this (a pod: ~90 MiB)
REMOVERS = 4


def gib(kib: int) -> float:
    return round(kib / 1024 / 1024, 2)


def ticks(pids: list[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        try:
            out[pid] = procmem.cpu_ticks(pid)
        except OSError:
            pass
    return out


def pss_kib(pids: dict[int, str]) -> dict[int, dict[str, int]]:
    out = {}
    for pid in pids:
        try:
            out[pid] = procmem.rollup(pid)
        except OSError:
            pass
    return out


KSM = Path("/sys/kernel/mm/ksm")
# /proc/meminfo's kernel-side fields: memory the pods cost that no process's PSS shows (host-wide deltas, so others'
# work moves them too)
KERNEL_FIELDS = ("PageTables", "KernelStack", "SUnreclaim", "SReclaimable", "VmallocUsed", "Percpu")


def ksm_state() -> dict | None:
    """KSM's counters (None: no KSM in this kernel) and ksmd's CPU ticks: merging is host-wide, so with KSM on
    its scanner's CPU belongs to the pods' cost (it scans QEMU's guest RAM, which QEMU marks mergeable)."""
    try:
        state = {k: int((KSM / k).read_text()) for k in ("run", "pages_shared", "pages_sharing", "full_scans",
                                                         "pages_to_scan", "sleep_millisecs")}
    except OSError:
        return None
    state["ksmd_ticks"] = sum(procmem.cpu_ticks(pid) for pid in _pids_named("ksmd"))
    return state


def _pids_named(name: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if procmem.comm(int(entry.name)) == name:
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


def run_runtime(env: Env, handler: str, n: int, settle: float, window: float, timeout: float,
                reserve_kib: int = 2 << 20) -> dict:
    cri = env.client(timeout)
    labels = {"rund-bench": f"density-{handler}"}
    ctd_pid = env.ctd.proc.pid
    res: dict = {"handler": handler}
    info_before = procmem.meminfo()
    mem_before = info_before["MemAvailable"]
    ctd_before = procmem.rollup(ctd_pid)["Pss"]
    cswap_before = compressed_swap_kib()
    pods: list[PodStart] = []
    t_start = time.monotonic()
    res["_stopped"] = None
    windows: dict[str, Window] = {}
    for i in range(n):
        if (avail := procmem.meminfo()["MemAvailable"]) < reserve_kib:
            res["_stopped"] = f"after {i} pods: MemAvailable {gib(avail)} GiB < the {gib(reserve_kib)} GiB reserve"
            print(f"  {handler}: stopped {res['_stopped']}", flush=True)
            break
        for label, first in (("first 10", 0), ("last 10", max(0, n - 10))):
            if i == first:
                windows[label] = Window.open()
        p = start_pod(cri, env, handler, f"density-{handler}-{i}", timeout, labels)
        pods.append(p)
        for label, last in (("first 10", min(n, 10) - 1), ("last 10", n - 1)):
            if i == last:
                windows[label].close()
        if (i + 1) % 5 == 0 or not p.ok or i == n - 1:
            print(f"  {handler}: {i + 1}/{n} started, last {fmt_ms(p.ready_ms)} ms"
                  + (f" FAILED {p.error}" if not p.ok else ""), flush=True)
    res["_start_s"] = time.monotonic() - t_start
    print(f"  {handler}: settling {settle:.0f} s", flush=True)
    time.sleep(settle)

    running = {c.pod_sandbox_id for c in cri.list_containers(label_selector=labels)
               if c.state == api.CONTAINER_RUNNING}
    ready_pods = {s.id for s in cri.list_pod_sandboxes(label_selector=labels) if s.state == api.SANDBOX_READY}
    sids = sorted(running & ready_pods)
    procs = pod_processes(handler, env.address, sids)
    allp = {pid: kind for ps in procs.values() for pid, kind in ps.items()}
    if handler == "rund":           # the shim fork server exists because of the pods too: its share per pod counts
        allp.update({pid: "shim fork server" for pid in fork_servers()})
    print(f"  {handler}: {len(sids)} pods running, {len(allp)} processes; idle CPU over {window:.0f} s", flush=True)
    starts = {}
    for pid in allp:
        try:
            starts[pid] = procmem.start_ticks(pid)
        except OSError:
            pass
    load0 = loadavg()
    cpu0, host0, t0 = ticks(list(allp)), procmem.host_cpu(), time.monotonic()
    ctd_cpu0 = procmem.cpu_ticks(ctd_pid)
    ksm0 = ksm_state()
    time.sleep(window)
    cpu1, host1, elapsed = ticks(list(allp)), procmem.host_cpu(), time.monotonic() - t0
    ctd_cpu1 = procmem.cpu_ticks(ctd_pid)
    ksm1 = ksm_state()
    gone = sorted(set(cpu0) - set(cpu1))
    pss = pss_kib(allp)
    info_running = procmem.meminfo()
    mem_running = info_running["MemAvailable"]
    ctd_running = procmem.rollup(ctd_pid)["Pss"]
    cswap_running = compressed_swap_kib()
    spares_waiting = spare_pool()   # measured with the pods (the removal below reuses no name of it)

    # by mapping: each kind's categories per pod (the median pod), from full smaps
    by_map: dict[str, dict[str, list[float]]] = {}
    pods_of_kind: dict[str, int] = {}
    sharers: dict[int, int] = {}            # a group shim serves several pods: each gets its share
    for ps in procs.values():
        for pid in ps:
            sharers[pid] = sharers.get(pid, 0) + 1
    for sid, ps in procs.items():
        per_kind: dict[str, dict[str, float]] = {}
        for pid, kind in ps.items():
            try:
                cats = procmem.breakdown(pid)
            except (OSError, ValueError) as e:
                print(f"  no breakdown of {kind} {pid}: {e}", flush=True)
                continue
            for cat, c in cats.items():
                per_kind.setdefault(kind, {}).setdefault(cat, 0.0)
                per_kind[kind][cat] += c["pss"] / 1024 / sharers[pid]
        for kind, cats in per_kind.items():
            pods_of_kind[kind] = pods_of_kind.get(kind, 0) + 1
            for cat, v in cats.items():
                by_map.setdefault(kind, {}).setdefault(cat, []).append(v)

    # removal, checked
    print(f"  {handler}: removing {len(pods)} pods", flush=True)
    leftover: dict[str, dict] = {}
    all_sids = sorted({p.sid for p in pods if p.sid} | set(labelled_pods(cri, labels)))

    def remove(sid: str) -> None:
        if left := remove_pod(cri, env.address, sid):
            leftover[sid] = left

    with ThreadPoolExecutor(REMOVERS) as pool:
        list(pool.map(remove, all_sids))
    if still := labelled_pods(cri, labels):
        leftover.update({sid: {"cri pod": sid} for sid in still})
    alive = [pid for pid in allp if allp[pid] != "shim fork server" and _alive(pid, starts.get(pid))]
    time.sleep(2)
    mem_after = procmem.meminfo()["MemAvailable"]
    cri.close()

    n_run = len(sids)
    ready = [p.ready_ms for p in pods if p.ok]
    first = [p.ready_ms for p in pods[:10] if p.ok]
    last = [p.ready_ms for p in pods[-10:] if p.ok]
    kinds = sorted({k for k in allp.values()})
    pss_by_kind = {k: sum(pss[pid]["Pss"] for pid in pss if allp[pid] == k) / 1024 / max(1, n_run) for k in kinds}
    swap_pss = sum(v.get("SwapPss", 0) for v in pss.values()) / 1024 / max(1, n_run)
    if cswap_before is not None and (cswap_running or 0) > cswap_before:
        # Paged out to zram or zswap ([hypervisor] idle_reclaim_s): in no PSS, held compressed in RAM by the kernel.
        pss_by_kind["compressed swap (zram, zswap)"] = (cswap_running - cswap_before) / 1024 / max(1, n_run)
    rss_total = sum(v["Rss"] for v in pss.values()) / 1024 / max(1, n_run)
    cpu_by_kind = {k: sum(cpu1[pid] - cpu0[pid] for pid in cpu1 if pid in cpu0 and allp[pid] == k)
                   / procmem.CLK_TCK / elapsed * 100 / max(1, n_run) for k in kinds}
    failures = [f"{p.name}: {p.error}" for p in pods if not p.ok]
    failures += [f"{p.name} ({p.sid[:12]}) not running at measurement" for p in pods if p.ok and p.sid not in sids]
    failures += [f"{sid[:12]}: left after removal: {left}" for sid, left in leftover.items()]
    failures += [f"process {pid} ({allp[pid]}) still alive after removal" for pid in alive]
    busy = (host1[0] - host0[0]) / max(1, host1[1] - host0[1]) * 100
    res.update({
        "pods_running": n_run,
        "pss_mib_per_pod": round(sum(pss_by_kind.values()), 1),
        "idle_cpu_pct_per_pod": round(sum(cpu_by_kind.values()), 3),
        "start_ms_p50_first10": round(statistics.median(first), 1) if first else None,
        "start_ms_p50_last10": round(statistics.median(last), 1) if last else None,
        "mem_available_gib": {"before": gib(mem_before), "running": gib(mem_running), "after": gib(mem_after)},
        "pss_mib_per_pod_by_kind": {k: round(v, 1) for k, v in pss_by_kind.items()},
        "_swap_pss_mib_per_pod": round(swap_pss, 1),
        "idle_cpu_pct_per_pod_by_kind": {k: round(v, 3) for k, v in cpu_by_kind.items()},
        "failures": len(failures),
        # the rest: printed, not in the JSON
        "_rss_mib_per_pod": rss_total,
        "_start_p50": statistics.median(ready) if ready else None,
        "_start_p99": percentile(ready, 0.99) if ready else None,
        "_failures": failures, "_gone_in_window": gone, "_host_busy_pct": busy, "_load": (load0, loadavg()), "_window_s": elapsed,
        "_ctd_pss_mib": (ctd_before / 1024, ctd_running / 1024),
        "_ctd_cpu_pct": (ctd_cpu1 - ctd_cpu0) / procmem.CLK_TCK / elapsed * 100,
        # a pod without a category (only cold-booted pods have anonymous guest RAM) counts 0 in its median
        "_by_map": {k: {c: statistics.median(v + [0.0] * (pods_of_kind[k] - len(v))) for c, v in cats.items()}
                    for k, cats in by_map.items()},
        "_n_started": len(pods), "_procs_per_pod": len(allp) / max(1, n_run),
        "_template_mib": _template_mib(allp) if handler == "rund" else None,
        "_ksm": _ksm_figures(ksm0, ksm1, elapsed),
        "_spare_pool": spares_waiting,
        "_kernel_kib_per_pod": {k: (info_running.get(k, 0) - info_before.get(k, 0)) / max(1, n_run)
                                for k in KERNEL_FIELDS},
        "_windows": windows, "_pods": pods,
    })
    return res


@dataclass
class Window:
    """The host while the first (or last) 10 pods started: how busy, the load, and which commands used the CPU.
    The start ratio follows how busy the host is; this says with what."""
    t0: float
    cpu0: tuple[int, int]
    snap0: dict
    load0: float
    seconds: float = 0.0
    busy_pct: float = 0.0               # of the whole host (2 cores: 100% = both)
    load: tuple[float, float] = (0.0, 0.0)
    busiest: list = field(default_factory=list)

    @classmethod
    def open(cls) -> "Window":
        return cls(time.monotonic(), procmem.host_cpu(), procmem.cpu_snapshot(), loadavg())

    def close(self) -> None:
        cpu1, snap1 = procmem.host_cpu(), procmem.cpu_snapshot()
        self.seconds = time.monotonic() - self.t0
        self.busy_pct = (cpu1[0] - self.cpu0[0]) / max(1, cpu1[1] - self.cpu0[1]) * 100
        self.load = (self.load0, loadavg())
        self.busiest = procmem.busiest(self.snap0, snap1, self.seconds)


def fork_servers() -> list[int]:
    """The shim fork server that forked these pods' shims (rund/shim/forkserver.py: one per state dir and containerd
    cgroup; ours, since the private containerd runs in this process's cgroups), if one runs."""
    import os
    from rund.config import Config
    from rund.shim import forkserver, peer
    path = forkserver.paths(Config().state_dir)[0]
    try:
        server = peer.probe(path) if os.path.exists(path) else None
    except OSError:
        server = None
    return [server.pid] if server is not None else []


def _ksm_figures(k0: dict | None, k1: dict | None, elapsed: float) -> dict | None:
    if not k0 or not k1 or not k1["run"]:
        return None
    page = 4096 / 2**20
    return {"saved_mib": round(k1["pages_sharing"] * page, 1), "shared_mib": round(k1["pages_shared"] * page, 1),
            "full_scans_in_window": k1["full_scans"] - k0["full_scans"],
            "ksmd_cpu_pct": round((k1["ksmd_ticks"] - k0["ksmd_ticks"]) / procmem.CLK_TCK / elapsed * 100, 3),
            "pages_to_scan": k1["pages_to_scan"], "sleep_millisecs": k1["sleep_millisecs"]}


def _alive(pid: int, start: int | None) -> bool:
    """Still running (a zombie waiting for its parent's wait() is not; nor is a new process with a reused pid)."""
    try:
        f = procmem.stat_fields(pid)
    except OSError:
        return False
    return f[0] != "Z" and (start is None or int(f[19]) == start)


def _template_mib(allp: dict[int, str]) -> float | None:
    """The size of the template RAM file the clones map (tmpfs: memory, once for all pods)."""
    for pid, kind in allp.items():
        if kind != "qemu":
            continue
        try:
            files, _, _ = procmem._qemu_objects(procmem.cmdline(pid))
        except OSError:
            continue
        for f in files:
            try:
                return Path(f).stat().st_blocks * 512 / 2**20
            except OSError:
                continue
    return None


def compressed_swap_kib() -> int | None:
    """Memory the host's compressed swap holds, or None without any: zram devices (compressed pages and their
    metadata, mm_stat's mem_used_total) and zswap's pool in front of a swap device (/proc/meminfo's Zswap). Where an
    idle pod's paged-out memory went."""
    used = None
    for dev in Path("/sys/block").glob("zram*"):
        try:
            if (dev / "initstate").read_text().strip() == "1":
                used = (used or 0) + int((dev / "mm_stat").read_text().split()[2]) // 1024
        except (OSError, IndexError, ValueError):
            continue
    try:
        if Path("/sys/module/zswap/parameters/enabled").read_text().strip() == "Y":
            used = (used or 0) + procmem.meminfo().get("Zswap", 0)
    except OSError:
        pass
    return used


def spare_pool() -> dict | None:
    """The spare VM keepers and their waiting spares at measurement (a class with `[templates] spare_vms`): a cost
    of the node, not of any pod, so outside the per-pod figures. None when no keeper runs."""
    keepers = [pid for pid, argv in argvs() if b"rund.runtime.spares" in argv]
    if not keepers:
        return None
    kids = procmem.children()
    spares = [p for p in procmem.with_descendants(set(keepers), kids) if p not in keepers and procmem.is_qemu(p)]

    def mib(pids: list[int]) -> float:
        return round(sum(r.get("Pss", 0) for r in pss_kib(dict.fromkeys(pids, "")).values()) / 1024, 1)
    return {"keepers": len(keepers), "spares": len(spares), "keeper_pss_mib": mib(keepers),
            "spares_pss_mib": mib(spares)}


def report(r: dict) -> None:
    h, n = r["handler"], r["pods_running"]
    print(f"\n{h}: {r['_n_started']} pods started in {r['_start_s']:.0f} s, {n} running at measurement, "
          f"{r['_procs_per_pod']:.1f} host processes per pod, {r['failures']} failures")
    if r["_stopped"]:
        print(f"  starting stopped {r['_stopped']}")
    print(f"  start (RunPodSandbox -> ready) ms: p50 first 10 {fmt_ms(r['start_ms_p50_first10'])}, last 10 "
          f"{fmt_ms(r['start_ms_p50_last10'])}; all: p50 {fmt_ms(r['_start_p50'])}, p99 {fmt_ms(r['_start_p99'])}")
    kinds = r["pss_mib_per_pod_by_kind"]
    print(f"  PSS per pod: {r['pss_mib_per_pod']:.1f} MiB (" + ", ".join(f"{k} {v:.1f}" for k, v in kinds.items())
          + f"); RSS {r['_rss_mib_per_pod']:.1f} MiB" + (f"; swapped out {r['_swap_pss_mib_per_pod']:.1f} MiB (its "
          "proportional share, uncompressed)" if r["_swap_pss_mib_per_pod"] else ""))
    cpu = r["idle_cpu_pct_per_pod_by_kind"]
    print(f"  idle CPU per pod over {r['_window_s']:.0f} s: {r['idle_cpu_pct_per_pod']:.3f}% of a core ("
          + ", ".join(f"{k} {v:.3f}" for k, v in cpu.items()) + f"); the whole host was {r['_host_busy_pct']:.0f}% "
          f"busy (all processes, others' too; load average {r['_load'][0]:.1f} -> {r['_load'][1]:.1f})")
    m = r["mem_available_gib"]
    drop = (m["before"] - m["running"]) * 1024 / max(1, n)
    print(f"  MemAvailable: {m['before']} GiB before, {m['running']} running ({drop:.0f} MiB per pod, host-wide), "
          f"{m['after']} after removal")
    kern = r["_kernel_kib_per_pod"]
    print("  kernel, host-wide growth per pod (KiB; /proc/meminfo, not in any PSS): "
          + ", ".join(f"{k} {v:.0f}" for k, v in kern.items()) + f"; {sum(kern.values()) / 1024:.1f} MiB in all")
    c0, c1 = r["_ctd_pss_mib"]
    print(f"  containerd (not counted above): PSS {c0:.1f} -> {c1:.1f} MiB ({(c1 - c0) / max(1, n):.2f} per pod), "
          f"{r['_ctd_cpu_pct']:.2f}% of a core while the pods idled")
    if pool := r["_spare_pool"]:
        print(f"  spare VM pool (not counted above): {pool['spares']} waiting spares {pool['spares_pss_mib']} MiB PSS"
              f" ({pool['spares_pss_mib'] / max(1, pool['spares']):.1f} each), {pool['keepers']} keeper(s) "
              f"{pool['keeper_pss_mib']} MiB")
    if k := r["_ksm"]:
        print(f"  KSM on (pages_to_scan {k['pages_to_scan']}, sleep {k['sleep_millisecs']} ms): {k['saved_mib']} MiB "
              f"saved host-wide ({k['saved_mib'] / max(1, n):.1f} per pod; PSS above already counts it), ksmd "
              f"{k['ksmd_cpu_pct']:.2f}% of a core ({k['ksmd_cpu_pct'] / max(1, n):.3f} per pod), "
              f"{k['full_scans_in_window']} full scans in the window")
    if r["_template_mib"] is not None:
        print(f"  the template's RAM file: {r['_template_mib']:.1f} MiB on tmpfs, once for all clones (its pages the "
              f"clones map are in their PSS share)")
    for kind, cats in r["_by_map"].items():
        tot = sum(cats.values())
        print(f"  {kind} by mapping, median pod (MiB PSS; total of medians {tot:.1f}):")
        for cat, v in sorted(cats.items(), key=lambda kv: -kv[1]):
            if v >= 0.05:
                print(f"    {cat:32} {v:7.1f}")
    if r["_gone_in_window"]:
        print(f"  processes gone during the idle window: {r['_gone_in_window']}")
    report_start_growth(r)
    for f in r["_failures"]:
        print(f"  FAILURE: {f}")


def report_start_growth(r: dict) -> None:
    """Where a start's time went, first 10 pods against the last 10: the host meanwhile (busy, load, the commands
    that used its CPU) and each step's median (containerd's log and the shims' trace lines, hack/cri_bench.py)."""
    wins = {k: w for k, w in r["_windows"].items() if w.seconds}
    if not wins:
        return
    print("  the host while the first and the last 10 pods started (% of one core by command; 200 = both cores):")
    for label, w in wins.items():
        print(f"    {label}: {w.seconds:.0f} s, host {w.busy_pct * 2:.0f}% busy, load {w.load[0]:.1f} -> {w.load[1]:.1f}; "
              + ", ".join(f"{name} {pct:.1f} ({n})" for name, pct, n in w.busiest))
    pods = r["_pods"]
    groups = {"first 10": [p for p in pods[:10] if p.steps], "last 10": [p for p in pods[-10:] if p.steps]}
    if not all(groups.values()):
        return
    meds = {k: median_steps(v) for k, v in groups.items()}
    print(f"  start step by step, medians (ms; they do not add up), pods with steps {len(groups['first 10'])} / "
          f"{len(groups['last 10'])}:")
    print(f"    {'':66} {'first 10':>9} {'last 10':>9} {'growth':>8}")
    for name in dict.fromkeys([*meds["first 10"], *meds["last 10"]]):
        a, b = meds["first 10"].get(name), meds["last 10"].get(name)
        grow = f"{b - a:+8.0f}" if a is not None and b is not None else ""
        print(f"    {name[:66]:66} {fmt_ms(a):>9} {fmt_ms(b):>9} {grow}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=20)
    ap.add_argument("--runtime", choices=("rund", "runc", "both"), default="both")
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--settle", type=float, default=10.0, help="seconds between the last start and measuring")
    ap.add_argument("--image", choices=("function", "busybox"), default="function")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds for one pod to get ready")
    ap.add_argument("--rund-config", default=None, help="the rund runtime class's config file (ConfigPath)")
    ap.add_argument("--allow-many", action="store_true", help=f"allow more than {MAX_RUND_PODS} rund pods")
    ap.add_argument("--reserve-gib", type=float, default=2.0,
                    help="stop starting pods when MemAvailable falls below this (how many fit is then the figure)")
    args = ap.parse_args()
    handlers = ["rund", "runc"] if args.runtime == "both" else [args.runtime]
    if "rund" in handlers and args.pods > MAX_RUND_PODS and not args.allow_many:
        ap.error(f"more than {MAX_RUND_PODS} rund pods: pass --allow-many (and mind the host)")
    avail = procmem.meminfo()["MemAvailable"] / 1024
    reserve = args.reserve_gib * 1024
    if avail < reserve + min(args.pods, 10) * MIB_PER_POD_GUARD:
        ap.error(f"MemAvailable {avail:.0f} MiB is short of the {reserve:.0f} MiB reserve + {min(args.pods, 10)} x "
                 f"{MIB_PER_POD_GUARD} MiB")

    env = Env.start(args.image, prefix="rund-density-", rund_config=args.rund_config, pods=args.pods)
    print(f"private containerd {env.address}; function image {env.image} {' '.join(env.command)}", flush=True)
    print(provenance() + (f"; rund config {args.rund_config}" if args.rund_config else ""), flush=True)
    results = {}
    try:
        warm_cri = env.client(args.timeout)
        if "rund" in handlers:
            print(f"rund template: {ensure_template(config=args.rund_config)}", flush=True)
        for h in handlers:                  # a template, the image unpacked: not in the figures
            p = start_pod(warm_cri, env, h, f"density-warm-{h}", args.timeout, {"rund-bench": "density-warm"})
            print(f"warm-up {h}: {fmt_ms(p.ready_ms)} ms {p.error}", flush=True)
            for sid in {p.sid} - {""} | set(labelled_pods(warm_cri, {"rund-bench": "density-warm"})):
                remove_pod(warm_cri, env.address, sid)
        warm_cri.close()
        for h in handlers:
            print(f"{h}: {args.pods} pods", flush=True)
            if h == "rund":
                print(f"rund template: {ensure_template(config=args.rund_config)}", flush=True)
            results[h] = run_runtime(env, h, args.pods, args.settle, args.idle_seconds, args.timeout,
                                     int(reserve * 1024))
    finally:
        log_text = env.ctd.log_path.read_text(errors="replace") if env.ctd.log_path.exists() else ""
        env.stop()
    idx = LogIndex.parse(log_text)
    for r in results.values():
        for p in r["_pods"]:
            if p.ok:
                p.steps = pod_steps(p, idx)
        report(r)
    public = {h: {k: v for k, v in r.items() if not k.startswith("_") and k != "handler"} for h, r in results.items()}
    if "rund" in public:
        print_aims("density", public["rund"])
    print(json.dumps(public if len(public) > 1 else next(iter(public.values()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
