"""What `rund metrics serve` costs the pods' start path: `ctr run --rm <image> true` through rund with the metrics
endpoint scraped every second, and with no daemon at all, side by side in one run against one private containerd.

    python3 hack/bench_metrics.py [--runs 8] [--background 3] [--interval 1.0]

--background sandboxes keep running (`sleep`) so that each scrape has sandboxes to read (records, /proc PSS and
CPU). Runs alternate scraped / not scraped (after one untimed warm-up), so drift on a shared host hits both alike.
Also reported: what one scrape costs the daemon (its own rund_metrics_collect_seconds, and its CPU per scrape).

Last line, one JSON object: {"unscraped_ms_p50", "scraped_ms_p50", "ratio", "scrape_ms_p50", "daemon_cpu_ms_per_scrape",
"sandboxes"}. Needs root.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hack.busybox_image import build  # noqa: E402
from integration.containerd_daemon import PrivateContainerd  # noqa: E402

RUNTIME = "io.containerd.rund.v2"


def scrape(sock: Path) -> str:
    conn = http.client.HTTPConnection("localhost", timeout=30)
    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.sock.connect(str(sock))
    conn.request("GET", "/metrics")
    return conn.getresponse().read().decode()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        rest = f.read().rsplit(b")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


class Scraper(threading.Thread):
    def __init__(self, sock: Path, interval: float):
        super().__init__(daemon=True)
        self.sock, self.interval = sock, interval
        self.on = threading.Event()
        self.stop = threading.Event()
        self.collect: list[float] = []
        self.scrapes = 0

    def run(self):
        while not self.stop.is_set():
            if self.on.is_set():
                body = scrape(self.sock)
                self.scrapes += 1
                for line in body.splitlines():
                    if line.startswith("rund_metrics_collect_seconds "):
                        self.collect.append(float(line.split()[1]))
            self.stop.wait(self.interval)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--background", type=int, default=3)
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rund-benchm-", dir="/tmp"))
    ctd = PrivateContainerd(work, path_prefix=[str(ROOT / ".venv" / "bin")], log_level="info")
    ctd.start()
    daemon = None
    try:
        image = build(work / "busybox.tar")
        ctd.ctr("images", "import", str(work / "busybox.tar"))
        config = work / "rund.toml"
        config.write_text(f'state_dir = "{work / "state"}"\n[cgroups]\npool = false\n')

        def ctr_run(cid: str, *argv: str, detach: bool = False) -> float:
            t = time.monotonic()
            ctd.ctr("run", "-d" if detach else "--rm", "--runtime", RUNTIME, "--runtime-config-path", str(config),
                    image, cid, *argv, timeout=600)
            return time.monotonic() - t

        for i in range(args.background):
            ctr_run(f"bg{i}", "sleep", "3600", detach=True)
        sock = work / "metrics.sock"
        daemon = subprocess.Popen([sys.executable, "-m", "rund.cli", "--config", str(config), "metrics", "serve",
                                   "--listen", f"unix:{sock}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True)
        daemon.stdout.readline()
        scraper = Scraper(sock, args.interval)
        scraper.start()
        ctr_run("warmup", "true")
        times: dict[str, list[float]] = {"unscraped": [], "scraped": []}
        cpu0 = cpu_seconds(daemon.pid)
        for n in range(args.runs):
            for mode in (("scraped", "unscraped") if n % 2 else ("unscraped", "scraped")):
                if mode == "scraped":
                    scraper.on.set()
                    time.sleep(args.interval)          # the scraper is at work before the run starts
                else:
                    scraper.on.clear()
                    time.sleep(args.interval)
                times[mode].append(ctr_run(f"{mode[0]}{n}", "true"))
        scraper.on.clear()
        scraper.stop.set()
        cpu = cpu_seconds(daemon.pid) - cpu0
        un, sc = statistics.median(times["unscraped"]), statistics.median(times["scraped"])
        scrape_ms = statistics.median(scraper.collect) * 1000 if scraper.collect else 0.0
        print(f"{'mode':<10} {'runs':>4} {'p50 ms':>8} {'min ms':>8} {'max ms':>8}")
        for mode, ts in times.items():
            print(f"{mode:<10} {len(ts):>4} {statistics.median(ts) * 1000:>8.0f} {min(ts) * 1000:>8.0f} "
                  f"{max(ts) * 1000:>8.0f}")
        print(f"scrapes: {scraper.scrapes}, collect p50 {scrape_ms:.1f} ms, daemon CPU "
              f"{cpu / max(1, scraper.scrapes) * 1000:.1f} ms per scrape, {args.background + 1} sandboxes at most")
        print(json.dumps({"unscraped_ms_p50": round(un * 1000), "scraped_ms_p50": round(sc * 1000),
                          "ratio": round(sc / un, 3), "scrape_ms_p50": round(scrape_ms, 1),
                          "daemon_cpu_ms_per_scrape": round(cpu / max(1, scraper.scrapes) * 1000, 1),
                          "sandboxes": args.background}))
        return 0
    finally:
        for i in range(args.background):
            ctd.ctr("task", "kill", "-s", "KILL", f"bg{i}", check=False)
        time.sleep(1)
        for i in range(args.background):
            ctd.ctr("task", "rm", f"bg{i}", check=False)
            ctd.ctr("container", "rm", f"bg{i}", check=False)
        if daemon is not None:
            daemon.terminate()
            daemon.wait()
        ctd.stop()


if __name__ == "__main__":
    sys.exit(main())
