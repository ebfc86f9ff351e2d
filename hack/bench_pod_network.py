"""What pod networking adds to RunPodSandbox, runc and rund side by side, through CRI.

For each handler: N RunPodSandbox calls of a pod with its own network (CNI, and for rund the tap + redirect and the
guest's addresses) and N of a hostNetwork pod (no CNI, no NIC wiring); medians, and the difference. Then, with
--leak-pods M, M rund pods started and removed in turn, and a check that no netns, tap, bridge port, QEMU or state
dir is left. Last line: one JSON object.

    .venv/bin/python -m hack.bench_pod_network [--runs 10] [--leak-pods 100]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

from hack.cri_bench import Env
from integration.cri.client import CriClient, api, sandbox_config
from integration.rund_leaks import leftovers


def run_pod_ms(cri: CriClient, handler: str, name: str, network: int, log_dir: Path) -> float:
    pod = sandbox_config(name, log_directory=str(log_dir / name), network=network,
                         hostname="" if network == api.NODE else None)
    t0 = time.monotonic()
    sid = cri.run_pod_sandbox(pod, handler)
    took = (time.monotonic() - t0) * 1000
    cri.remove_pod(sid)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--leak-pods", type=int, default=0)
    args = ap.parse_args()
    env = Env.start("busybox", prefix="bench-net-")
    d, work = env.ctd, env.work
    result: dict[str, object] = {}
    try:
        with CriClient(d.address) as cri:
            for handler in ("runc", "rund"):
                run_pod_ms(cri, handler, f"warm-{handler}", api.POD, work)       # a template, caches
                times = {"network": [], "host": []}
                for i in range(args.runs):                                       # interleaved: same noise
                    times["network"].append(run_pod_ms(cri, handler, f"n{i}-{handler}", api.POD, work))
                    times["host"].append(run_pod_ms(cri, handler, f"h{i}-{handler}", api.NODE, work))
                net, host = statistics.median(times["network"]), statistics.median(times["host"])
                print(f"{handler}: RunPodSandbox median {net:.0f} ms with a pod network, {host:.0f} ms hostNetwork: "
                      f"networking adds {net - host:.0f} ms")
                result[f"{handler}_network_ms_p50"] = round(net, 1)
                result[f"{handler}_hostnet_ms_p50"] = round(host, 1)
            if args.leak_pods:
                left = []
                t0 = time.monotonic()
                for i in range(args.leak_pods):
                    pod = sandbox_config(f"leak{i}", log_directory=str(work / "leak"))
                    sid = cri.run_pod_sandbox(pod, "rund")
                    cri.remove_pod(sid)
                    if leftovers(sid, "k8s.io"):
                        left.append(sid)
                ports, netns = d.network.ports(), d.network.pod_netns()
                taps = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.count("tap0_rund")
                print(f"{args.leak_pods} rund pods started and removed in {time.monotonic() - t0:.0f} s: "
                      f"{len(left)} with leftovers, {len(ports)} bridge ports, {len(netns)} netns, {taps} taps left")
                result.update(leak_pods=args.leak_pods, leak_leftovers=len(left), leak_ports=len(ports),
                              leak_netns=len(netns), leak_taps=taps)
    finally:
        env.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
