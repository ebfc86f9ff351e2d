"""`ctr run --rm <image> /bin/true` through rund (template clones) and through runc (Debian's
containerd-shim-runc-v2), side by side in one run against one private containerd.

    python3 hack/bench_ctr.py [--runs 10] [--parallel 10] [--rounds 1]

1. Sequential: --runs of each, alternating rund and runc, after one untimed warm-up each (the first rund
   sandbox may boot cold and build the template).
2. Parallel: --rounds rounds; in each, --parallel `ctr run`s of one runtime at once, then of the other
   (alternating which goes first); every run's own latency counts.
3. Where the time goes in rund: the shim logs one `trace create <id>` line per sandbox (rund/runtime/trace.py)
   with the start path's steps; their medians (sequential runs, and parallel runs) are printed.

Last line, one JSON object: {"rund_seq_ms_p50", "runc_seq_ms_p50", "ratio_seq", "rund_par_ms_p50",
"runc_par_ms_p50", "ratio_par", "rund_steps_ms_p50"} (steps of the sequential runs). Needs root.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hack.busybox_image import build  # noqa: E402
from hack.stats import percentile  # noqa: E402
from integration.containerd_daemon import PrivateContainerd  # noqa: E402

RUNTIMES = {"rund": "io.containerd.rund.v2", "runc": "io.containerd.runc.v2"}
TRACE = re.compile(r"trace create (\S+) total=([\d.]+)ms(.*?) logger=")
STEP = re.compile(r"(\S+)=([\d.]+)ms")


class Bench:
    def __init__(self, ctd: PrivateContainerd, image: str):
        self.ctd, self.image = ctd, image
        self.n = 0

    def run(self, kind: str) -> float:
        self.n += 1
        cid = f"bench-{kind}-{self.n}"
        start = time.monotonic()
        res = subprocess.run(["ctr", "--address", self.ctd.address, "run", "--rm", "--runtime", RUNTIMES[kind],
                              self.image, cid, "/bin/true"], capture_output=True, text=True, timeout=600)
        took = (time.monotonic() - start) * 1000
        if res.returncode != 0:
            raise SystemExit(f"{kind} run {cid} failed ({res.returncode}): {res.stderr}\n{self.ctd.log_tail()}")
        return took

    def parallel(self, kind: str, n: int) -> list[float]:
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(lambda _: self.run(kind), range(n)))


def steps_from_log(log: str) -> dict[str, list[float]]:
    steps: dict[str, list[float]] = {}
    for m in TRACE.finditer(log):
        steps.setdefault("total", []).append(float(m.group(2)))
        for name, ms in STEP.findall(m.group(3)):
            steps.setdefault(name, []).append(float(ms))
    return steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--parallel", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rund-bench-", dir="/tmp"))
    ctd = PrivateContainerd(work, path_prefix=[str(ROOT / ".venv" / "bin")], log_level="info")
    ctd.start()
    try:
        image = build(work / "busybox.tar")
        ctd.ctr("images", "import", str(work / "busybox.tar"))
        bench = Bench(ctd, image)
        for kind in RUNTIMES:
            print(f"warm-up {kind}: {bench.run(kind):.0f} ms", flush=True)
        warm_log_len = len(ctd.log_path.read_text(errors="replace"))
        seq: dict[str, list[float]] = {k: [] for k in RUNTIMES}
        for i in range(args.runs):
            for kind in (("rund", "runc") if i % 2 == 0 else ("runc", "rund")):
                seq[kind].append(bench.run(kind))
            print(f"sequential {i + 1}/{args.runs}: rund {seq['rund'][-1]:.0f} ms, runc {seq['runc'][-1]:.0f} ms",
                  flush=True)
        seq_log_len = len(ctd.log_path.read_text(errors="replace"))
        par: dict[str, list[float]] = {k: [] for k in RUNTIMES}
        for r in range(args.rounds):
            for kind in (("rund", "runc") if r % 2 == 0 else ("runc", "rund")):
                par[kind] += bench.parallel(kind, args.parallel)
                print(f"parallel round {r + 1}: {kind} {args.parallel} at once, p50 "
                      f"{statistics.median(par[kind][-args.parallel:]):.0f} ms", flush=True)
        log = ctd.log_path.read_text(errors="replace")
        steps = steps_from_log(log[warm_log_len:seq_log_len])
        par_steps = steps_from_log(log[seq_log_len:])
    finally:
        ctd.stop()

    print(f"\n{'':12} {'p50 ms':>9} {'p90 ms':>9} {'max ms':>9}   n")
    for label, data in (("sequential", seq), (f"{args.parallel} at once", par)):
        for kind in RUNTIMES:
            v = data[kind]
            print(f"{kind + ' ' + label:24} {statistics.median(v):9.0f} {percentile(v, 0.9):9.0f} {max(v):9.0f}"
                  f"   {len(v)}")
    print("\nrund start path (shim trace of Create, medians):   sequential   10 at once")
    step_p50 = {name: round(statistics.median(v), 1) for name, v in steps.items()}
    par_p50 = {name: round(statistics.median(v), 1) for name, v in par_steps.items()}
    for name, ms in sorted(step_p50.items(), key=lambda kv: -kv[1]):
        print(f"  {name:40} {ms:9.1f} ms {par_p50.get(name, float('nan')):9.1f} ms")
    result = {
        "rund_seq_ms_p50": round(statistics.median(seq["rund"]), 1),
        "runc_seq_ms_p50": round(statistics.median(seq["runc"]), 1),
        "rund_par_ms_p50": round(statistics.median(par["rund"]), 1),
        "runc_par_ms_p50": round(statistics.median(par["runc"]), 1),
    }
    result["ratio_seq"] = round(result["rund_seq_ms_p50"] / result["runc_seq_ms_p50"], 2)
    result["ratio_par"] = round(result["rund_par_ms_p50"] / result["runc_par_ms_p50"], 2)
    result["rund_steps_ms_p50"] = step_p50
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
