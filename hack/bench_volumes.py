"""Volumes (issue 19): throughput of a host directory mounted in a pod's container through CRI, rund (virtio-9p from
the pod's share) vs runc (a bind mount), side by side in the same run.

    .venv/bin/python hack/bench_volumes.py [--runs 5] [--mib 64] [--files 300] [--runtime both|rund|runc]

One pod per runtime, one busybox container mounting a fresh host directory at /vol. Each operation runs in the
container (exec), timed inside it from /proc/uptime (10 ms resolution; every operation lasts far longer):
  write  dd 1 MiB blocks of zeros to a new file, conv=fsync
  read   dd the file back (from the host's page cache: a bind reads it directly, 9p through QEMU)
  meta   a small-file loop: create N files of 2 bytes, stat them all (ls -l), remove them
Each is also run on the container's own /tmp (its rootfs: the host's overlayfs for runc, the guest's tmpfs upper for
rund) as a local baseline: rund's local figures show what TCG costs before 9p adds anything.
Medians of --runs. Last line, one JSON object: {runtime: {op: {"volume_s", "local_s"}}, "ratio": {op: rund/runc}}.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hack.cri_bench import Env, provenance  # noqa: E402
from integration.cri.client import api, container_config, sandbox_config  # noqa: E402

CLOCK = "cut -d' ' -f1 /proc/uptime"


def timed(op: str) -> str:
    return f"a=$({CLOCK}); {op}; b=$({CLOCK}); echo $a $b"


def ops(base: str, mib: int, files: int) -> dict[str, tuple[str, str]]:
    """op -> (setup, timed command) on directory `base`."""
    return {
        "write": (f"rm -f {base}/f", f"dd if=/dev/zero of={base}/f bs=1048576 count={mib} conv=fsync 2>/dev/null"),
        "read": ("true", f"dd if={base}/f of=/dev/null bs=1048576 2>/dev/null"),
        "meta": (f"rm -rf {base}/m; mkdir {base}/m",
                 f"i=0; while [ $i -lt {files} ]; do echo x > {base}/m/f$i; i=$((i+1)); done; "
                 f"ls -l {base}/m > /dev/null; rm -r {base}/m"),
    }


def run_op(cri, cid: str, setup: str, op: str) -> float:
    res = cri.exec_sync(cid, ["sh", "-c", f"{setup}; {timed(op)}"], timeout=600)
    if res.exit_code != 0:
        raise RuntimeError(f"{op}: {res.stderr.decode(errors='replace')}")
    a, b = res.stdout.decode().split()
    return float(b) - float(a)


def bench(env: Env, handler: str, runs: int, mib: int, files: int) -> dict[str, dict[str, float]]:
    host = Path(tempfile.mkdtemp(prefix=f"rund-bench-vol-{handler}-", dir="/var/tmp"))
    cri = env.client(timeout=600)
    pod = sandbox_config(f"vol-{handler}", log_directory=str(env.log_root / f"vol-{handler}"))
    sid = cri.run_pod_sandbox(pod, handler)
    try:
        cfg = container_config("app", env.image, ["sh", "-c", "exec sleep 3600"],
                               mounts=[api.Mount(container_path="/vol", host_path=str(host))])
        cid = cri.create_container(sid, cfg, pod)
        cri.start_container(cid)
        places = (("volume", "/vol"), ("local", "/tmp"))
        samples: dict[tuple[str, str], list[float]] = {}
        for _ in range(runs):              # interleaved: a change of the host's load hits both places alike
            for where, base in places:
                for op, (setup, command) in ops(base, mib, files).items():
                    samples.setdefault((op, where), []).append(run_op(cri, cid, setup, command))
        out: dict[str, dict[str, float]] = {}
        for (op, where), values in samples.items():
            out.setdefault(op, {})[f"{where}_s"] = round(statistics.median(values), 3)
        return out
    finally:
        cri.remove_pod(sid)
        shutil.rmtree(host, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--files", type=int, default=300)
    p.add_argument("--runtime", choices=("both", "rund", "runc"), default="both")
    a = p.parse_args()
    handlers = ["runc", "rund"] if a.runtime == "both" else [a.runtime]
    print(provenance(), file=sys.stderr)
    env = Env.start(image_kind="busybox", prefix="rund-bench-vol-")
    try:
        result = {h: bench(env, h, a.runs, a.mib, a.files) for h in handlers}
    finally:
        env.stop()
    labels = {"write": f"seq write {a.mib} MiB (fsync)", "read": f"seq read {a.mib} MiB",
              "meta": f"{a.files} files: create, ls -l, rm"}
    print(f"{'operation':<30}" + "".join(f"{h + ' ' + w:>16}" for h in handlers for w in ("volume", "local"))
          + (f"{'rund/runc':>12}" if len(handlers) == 2 else ""))
    ratio = {}
    for op, label in labels.items():
        row = f"{label:<30}" + "".join(f"{result[h][op][w + '_s']:>15.3f}s" for h in handlers
                                        for w in ("volume", "local"))
        if len(handlers) == 2 and result["runc"][op]["volume_s"] > 0:
            ratio[op] = round(result["rund"][op]["volume_s"] / result["runc"][op]["volume_s"], 1)
            row += f"{ratio[op]:>11.1f}x"
        print(row)
    for h in handlers:
        mbps = {op: round(a.mib / result[h][op]["volume_s"], 1) for op in ("write", "read")}
        print(f"{h}: volume write {mbps['write']} MiB/s, read {mbps['read']} MiB/s, "
              f"{round(3 * a.files / result[h]['meta']['volume_s'])} metadata ops/s")
    print(json.dumps({**result, "ratio": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
