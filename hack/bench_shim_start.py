"""The shim fork server (issues 17, 18): what it takes off a start and off each idle shim, on vs off in one run.

    .venv/bin/python hack/bench_shim_start.py [--runs 10] [--starts 20] [--settle 5]

Both settings are passed the way containerd passes a runtime class's config (--runtime-config-path: runtime
options on start's stdin), `[shim] fork_server = true` and `= false`, with rund's default state dir (so its fork
server). Runs alternate on/off (which goes first alternates too); medians are reported.
1. The shim's start until it serves, as containerd runs it: `containerd-shim-rund-v2 ... start` in a bundle (the
   environment containerd 1.6 sets, the options on stdin) until it printed the address and a Task.State call on
   that address is answered. No VM: this is the shim's own part of the path. --starts of each.
2. containerd's view: `ctr run --rm --runtime io.containerd.rund.v2 IMG id true` through a private containerd 1.6
   (VM clone, agent, container and all). --runs of each, after one untimed warm-up each.
3. Idle shim memory: one `ctr run -d ... sleep` per setting, after --settle s: the shim's PSS, USS (private) and RSS
   (/proc/<pid>/smaps_rollup), and the fork server's PSS (shared by every shim it forked: divide by the pods).
Last line, one JSON object: {"shim_start_ms_p50_on", "shim_start_ms_p50_off", "shim_start_ratio",
"ctr_run_ms_p50_on", "ctr_run_ms_p50_off", "ctr_run_ratio", "idle_shim_pss_mib_on", "idle_shim_pss_mib_off",
"idle_shim_uss_mib_on", "idle_shim_uss_mib_off", "fork_server_pss_mib"}. Needs root.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hack import procmem  # noqa: E402
from hack.busybox_image import build  # noqa: E402
from integration.containerd_daemon import PrivateContainerd  # noqa: E402
from rund.config import Config  # noqa: E402
from rund.shim import address, forkserver, peer  # noqa: E402

RUNTIME = "io.containerd.rund.v2"
SHIM = ROOT / ".venv" / "bin" / "containerd-shim-rund-v2"
MODES = ("on", "off")


def options_any(config_path: str) -> bytes:
    from google.protobuf import any_pb2
    from proto.gen.runtimeoptions.v1 import api_pb2
    return any_pb2.Any(type_url="runtimeoptions.v1.Options",
                       value=api_pb2.Options(config_path=config_path).SerializeToString()).SerializeToString()


def server_pid() -> int | None:
    return forkserver.server_pid(forkserver.paths(Config().state_dir)[0])


def wait_server(timeout: float = 60) -> int:
    try:
        return forkserver.wait_server(forkserver.paths(Config().state_dir)[0], timeout)
    except TimeoutError as e:
        raise SystemExit(f"no fork server came up: {e}") from None


async def _state(path: str) -> None:
    from proto import ttrpc
    from proto.gen.containerd.task.v2 import shim_pb2
    async with await ttrpc.Client.connect_unix(path) as client:
        task = ttrpc.Stub(client, shim_pb2.DESCRIPTOR.services_by_name["Task"])
        try:
            await task.State(shim_pb2.StateRequest(id="x"), timeout=10)
        except ttrpc.NotFound:
            pass


class ShimStarts:
    """`start` as containerd 1.6 runs it, without containerd: a fake address, a bundle with config.json."""

    def __init__(self, work: Path, configs: dict[str, Path]):
        self.work, self.configs, self.n = work, configs, 0
        self.ctd = f"/tmp/rund-bench-{os.urandom(4).hex()}/containerd.sock"
        self.daemons: list[int] = []

    def once(self, mode: str) -> float:
        self.n += 1
        cid = f"start-{mode}-{self.n}"
        bundle = self.work / cid
        bundle.mkdir()
        (bundle / "config.json").write_text('{"ociVersion": "1.0.2", "annotations": {}}')
        env = {**os.environ, "TTRPC_ADDRESS": self.ctd + ".ttrpc", "GRPC_ADDRESS": self.ctd, "NAMESPACE": "bench",
               "MAX_SHIM_VERSION": "2", "GOMAXPROCS": "2", "RUND_SHIM_IDLE_TIMEOUT": "60"}
        began = time.monotonic()
        res = subprocess.run([str(SHIM), "-namespace", "bench", "-address", self.ctd, "-publish-binary",
                              "/usr/bin/containerd", "-id", cid, "start"], cwd=bundle, env=env,
                             input=options_any(str(self.configs[mode])), capture_output=True, timeout=60)
        if res.returncode != 0:
            raise SystemExit(f"start {cid} failed: {res.stderr.decode()}")
        path = address.socket_path(res.stdout.decode())
        asyncio.run(_state(path))
        took = (time.monotonic() - began) * 1000
        if (shim := peer.probe(path)) is not None:
            self.daemons.append(shim.pid)
        return took

    def stop(self) -> None:
        for pid in self.daemons:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def ctr_run(ctd: PrivateContainerd, image: str, cid: str, config: Path, *args: str, detach: bool = False) -> float:
    began = time.monotonic()
    res = ctd.ctr("run", "-d" if detach else "--rm", "--runtime", RUNTIME, "--runtime-config-path", str(config),
                  image, cid, *args, check=False, timeout=600)
    took = (time.monotonic() - began) * 1000
    if res.returncode != 0:
        raise SystemExit(f"ctr run {cid} failed: {res.stderr.decode()}\n{ctd.log_tail()}")
    return took


def shim_of(ctd: PrivateContainerd, cid: str) -> int:
    shim = peer.probe(address.socket_path(address.socket_address(ctd.address, "default", cid)))
    if shim is None:
        raise SystemExit(f"no shim for {cid}")
    return shim.pid


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="ctr runs per setting")
    ap.add_argument("--starts", type=int, default=20, help="shim starts (no VM) per setting")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds before reading an idle shim's memory")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    work = Path(tempfile.mkdtemp(prefix="rund-bench-shim-", dir="/tmp"))
    configs = {"on": work / "fork-on.toml", "off": work / "fork-off.toml"}
    configs["on"].write_text("[shim]\nfork_server = true\n")
    configs["off"].write_text("[shim]\nfork_server = false\n")
    starts = ShimStarts(work / "bundles", configs)
    (work / "bundles").mkdir()
    result: dict = {}
    try:
        starts.once("on")                       # spawns the server if none runs
        server = wait_server()
        print(f"fork server: pid {server}", flush=True)
        got: dict[str, list[float]] = {m: [] for m in MODES}
        for i in range(args.starts):
            for mode in (MODES if i % 2 == 0 else MODES[::-1]):
                got[mode].append(starts.once(mode))
            print(f"shim start {i + 1}/{args.starts}: on {got['on'][-1]:.0f} ms, off {got['off'][-1]:.0f} ms",
                  flush=True)
        for mode in MODES:
            result[f"shim_start_ms_p50_{mode}"] = round(statistics.median(got[mode]), 1)
        result["shim_start_ratio"] = round(result["shim_start_ms_p50_on"] / result["shim_start_ms_p50_off"], 2)
    finally:
        starts.stop()

    ctd = PrivateContainerd(work / "ctd", path_prefix=[str(ROOT / ".venv" / "bin")], log_level="info")
    ctd.start()
    idle: dict[str, str] = {}
    try:
        image = build(work / "busybox.tar")
        ctd.ctr("images", "import", str(work / "busybox.tar"))
        for mode in MODES:
            print(f"warm-up {mode}: {ctr_run(ctd, image, f'warm-{mode}', configs[mode], 'true'):.0f} ms", flush=True)
        runs: dict[str, list[float]] = {m: [] for m in MODES}
        for i in range(args.runs):
            for mode in (MODES if i % 2 == 0 else MODES[::-1]):
                runs[mode].append(ctr_run(ctd, image, f"run-{mode}-{i}", configs[mode], "true"))
            print(f"ctr run {i + 1}/{args.runs}: on {runs['on'][-1]:.0f} ms, off {runs['off'][-1]:.0f} ms",
                  flush=True)
        for mode in MODES:
            result[f"ctr_run_ms_p50_{mode}"] = round(statistics.median(runs[mode]), 1)
        result["ctr_run_ratio"] = round(result["ctr_run_ms_p50_on"] / result["ctr_run_ms_p50_off"], 2)

        for mode in MODES:
            idle[mode] = f"idle-{mode}"
            ctr_run(ctd, image, idle[mode], configs[mode], "sleep", "3600", detach=True)
        time.sleep(args.settle)
        for mode in MODES:
            r = procmem.rollup(shim_of(ctd, idle[mode]))
            uss = r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)
            result[f"idle_shim_pss_mib_{mode}"] = mib(r["Pss"])
            result[f"idle_shim_uss_mib_{mode}"] = mib(uss)
            result[f"_idle_shim_rss_mib_{mode}"] = mib(r["Rss"])
        if (server := server_pid()) is not None:
            result["fork_server_pss_mib"] = mib(procmem.rollup(server)["Pss"])
    finally:
        for cid in idle.values():
            ctd.ctr("task", "kill", "-s", "KILL", cid, check=False)
            deadline = time.monotonic() + 30
            while ctd.ctr("task", "rm", cid, check=False).returncode != 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            ctd.ctr("containers", "rm", cid, check=False)
        ctd.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'':28} {'fork server on':>15} {'off':>10} {'ratio':>7}")
    print(f"{'shim start -> serving, ms':28} {result['shim_start_ms_p50_on']:15.0f} "
          f"{result['shim_start_ms_p50_off']:10.0f} {result['shim_start_ratio']:7.2f}")
    print(f"{'ctr run --rm true, ms':28} {result['ctr_run_ms_p50_on']:15.0f} {result['ctr_run_ms_p50_off']:10.0f} "
          f"{result['ctr_run_ratio']:7.2f}")
    for what in ("pss", "uss"):
        print(f"{'idle shim ' + what.upper() + ', MiB':28} {result[f'idle_shim_{what}_mib_on']:15.1f} "
              f"{result[f'idle_shim_{what}_mib_off']:10.1f}")
    print(f"{'idle shim RSS, MiB':28} {result['_idle_shim_rss_mib_on']:15.1f} {result['_idle_shim_rss_mib_off']:10.1f}")
    if "fork_server_pss_mib" in result:
        print(f"fork server PSS {result['fork_server_pss_mib']:.1f} MiB (shared by every shim it forked)")
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("_")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
