"""What hack/bench_coldstart.py and hack/bench_density.py share: a private containerd with CRI and the images, one
pod's start timed from RunPodSandbox to the function's `ready` in its container log, removal checked gone, and the
shims' `trace` lines read back from containerd's log.

The start of a pod (`start_pod`):

    t0 ─ RunPodSandbox ─ CreateContainer ─ StartContainer ─ … ─ `ready` record in the CRI log
          run_ms          create_ms         start_ms             ready_ms = log record's time − t0

`ready_ms` is taken from the timestamp containerd writes on the log record (RFC 3339, when containerd read the line
from the container's stdout), not from when the benchmark noticed the file change, so the polling interval does not
add to it; `seen_ms` (when the poll saw it) is kept to show the difference. Both clocks are the host's wall clock.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from hack import procmem
from hack.busybox_image import build as build_busybox
from hack.function_image import READY
from hack.function_image import build as build_function
from hack.pause_image import build as build_pause
from integration.containerd_daemon import CRI_NAMESPACE, PrivateContainerd
from integration.cri.client import CriClient, api, container_config, log_lines, parse_log, sandbox_config
from integration.rund_leaks import STATE_DIR, leftovers
from rund.procfs import argvs
from rund.shim import address as address_mod

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
HANDLERS = ("rund", "runc")
BUSYBOX_FUNCTION = ["sh", "-c", f"echo {READY}; exec sleep 100000"]
POLL_S = 0.01


# ---- the environment


def provenance() -> str:
    """The code measured: commit, and the runtime's files changed in the working tree (shims and the guest run from
    it), plus the host's load, which moves every figure on a shared machine."""
    import subprocess
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.rstrip("\n")
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "rund", "agent", "guest", "proto").splitlines()]
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return (f"commit {git('rev-parse', '--short', 'HEAD')}"
            + (f" with {len(dirty)} changed runtime files ({', '.join(dirty[:6])}{', ...' if len(dirty) > 6 else ''})"
               if dirty else " (clean)") + f"; load average {load}")


def ensure_template(timeout: float = 900, config: str | None = None) -> str:
    """`rund templates build`: the template the shims' config needs is there (or built now, waiting), so a timed
    rund pod clones instead of booting cold. Others sharing the working tree change the runtime's code, and with it
    the template key: call it right before a timed round. Returns its answer ("present <key>" or "built <key>")."""
    import subprocess
    t = time.monotonic()
    argv = [str(VENV_BIN / "rund"), *(["--config", config] if config else []), "templates", "build"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    out = (res.stdout.strip().splitlines() or ["?"])[-1]
    if res.returncode != 0:
        return f"FAILED ({res.returncode}): {res.stderr.strip()[-300:]}"
    return out + (f" in {time.monotonic() - t:.0f} s" if not out.startswith("present") else "")


def ensure_spares(timeout: float = 900, config: str | None = None) -> str:
    """`rund templates spares --wait`: the class's spare VM pool full before a timed round, as on a node warmed
    before it takes traffic (a burst then finds as many spares as the class keeps). Returns its answer."""
    import subprocess
    t = time.monotonic()
    argv = [str(VENV_BIN / "rund"), *(["--config", config] if config else []), "templates", "spares",
            "--wait", str(timeout)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 60)
    out = (res.stdout.strip().splitlines() or ["?"])[-1]
    failed = "" if res.returncode == 0 else f" FAILED: {res.stderr.strip()[-300:]}"
    return out + f" (waited {time.monotonic() - t:.0f} s)" + failed


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


@dataclass
class Env:
    """A private containerd serving CRI (handlers runc and rund), with the pause, function and busybox images."""
    ctd: PrivateContainerd
    work: Path
    image: str                  # the function's image
    command: list[str]          # its command ([] for the function image's own entrypoint)

    @classmethod
    def start(cls, image_kind: str = "function", prefix: str = "rund-bench-", rund_config: str | None = None,
              pods: int = 0) -> "Env":
        """rund_config: the rund handler's ConfigPath (a runtime class's config); None: rund's default config.
        pods: how many pods may run at once (the CRI network's size; 0: one /24's worth)."""
        work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        pause_tar, fn_tar, bb_tar = work / "pause.tar", work / "function.tar", work / "busybox.tar"
        pause_image = build_pause(pause_tar)
        if image_kind == "busybox":
            image, command, tar = build_busybox(bb_tar), BUSYBOX_FUNCTION, bb_tar
        else:
            image, command, tar = build_function(fn_tar), [], fn_tar
        ctd = PrivateContainerd(work / "containerd", path_prefix=[str(VENV_BIN)], log_level="info", cri=True,
                                sandbox_image=pause_image, rund_config_path=rund_config, pods=pods)
        ctd.start()
        try:
            ctd.cri_import(pause_tar)
            ctd.cri_import(tar)
            with CriClient(ctd.address) as cri:
                cri.wait_ready()
                cri.wait_image(pause_image)
                cri.wait_image(image)
        except BaseException:
            ctd.stop()
            raise
        return cls(ctd, work, image, command)

    @property
    def address(self) -> str:
        return self.ctd.address

    @property
    def log_root(self) -> Path:
        return self.work / "pod-logs"

    def client(self, timeout: float) -> CriClient:
        cri = CriClient(self.address, timeout=timeout)
        cri.version()                       # connected before anything is timed
        return cri

    def stop(self) -> None:
        try:
            self.ctd.stop()                 # removes any pod still there, the network, and containerd's dirs
        finally:
            shutil.rmtree(self.work, ignore_errors=True)     # the image tars and the pods' logs


# ---- one pod


@dataclass
class PodStart:
    handler: str
    name: str
    sid: str = ""
    cid: str = ""
    ok: bool = False
    error: str = ""
    t0_wall: float = 0.0                  # wall-clock time just before RunPodSandbox
    t0_mono: float = 0.0                  # monotonic time of the same instant
    end_mono: float = 0.0                 # when this pod was ready (or gave up)
    run_ms: float | None = None           # RunPodSandbox RPC
    create_ms: float | None = None        # CreateContainer RPC
    start_ms: float | None = None         # StartContainer RPC
    ready_ms: float | None = None         # RunPodSandbox call -> `ready` record's timestamp in the container log
    seen_ms: float | None = None          # RunPodSandbox call -> the poll saw `ready`
    cpu_ms: dict[str, float] = field(default_factory=dict)   # CPU ms of the pod's host processes by kind, at ready
    steps: dict[str, float] = field(default_factory=dict)     # the shim's trace steps (rund), filled later


def parse_cri_time(ts: str) -> float:
    """RFC 3339 with up to nanoseconds (Go's RFC3339Nano, as CRI writes its log records) -> POSIX seconds."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", ts)
    if not m:
        raise ValueError(f"not an RFC 3339 time: {ts!r}")
    base, frac, tz = m.groups()
    t = dt.datetime.fromisoformat(base + ("+00:00" if tz == "Z" else tz)).timestamp()
    return t + (float("0." + frac) if frac else 0.0)


def ready_time(log_text: str) -> float | None:
    """The wall-clock time of the first whole `ready` line in a CRI log, or None."""
    if READY not in log_lines(log_text):
        return None
    for ts, _stream, tag, msg in parse_log(log_text):
        if msg == READY and tag == "F":
            return parse_cri_time(ts)
    return None


def start_pod(cri: CriClient, env: Env, handler: str, name: str, timeout: float,
              labels: dict[str, str] | None = None, memory_limit: int = 0) -> PodStart:
    """RunPodSandbox, CreateContainer, StartContainer of one pod whose container prints `ready`, and wait for the
    line in its log. Never raises for the pod's own failure: `ok` False and `error` say what happened (the pod, if
    it got an id, is left for the caller to remove). `timeout` bounds the whole start, every RPC included."""
    p = PodStart(handler, name)
    log_dir = env.log_root / name
    pod = sandbox_config(name, log_directory=str(log_dir), labels=labels or {})
    ctr = container_config("fn", env.image, env.command, memory_limit=memory_limit, labels=labels or {})
    log = log_dir / "fn.log"
    p.t0_wall, p.t0_mono = time.time(), time.monotonic()
    deadline = p.t0_mono + timeout

    def left() -> float:
        return max(0.1, deadline - time.monotonic())

    step = "RunPodSandbox"
    try:
        t = time.monotonic()
        p.sid = cri.runtime.RunPodSandbox(api.RunPodSandboxRequest(config=pod, runtime_handler=handler),
                                          timeout=left()).pod_sandbox_id
        p.run_ms = (time.monotonic() - t) * 1000
        step = "CreateContainer"
        t = time.monotonic()
        p.cid = cri.runtime.CreateContainer(api.CreateContainerRequest(pod_sandbox_id=p.sid, config=ctr,
                                                                       sandbox_config=pod),
                                            timeout=left()).container_id
        p.create_ms = (time.monotonic() - t) * 1000
        step = "StartContainer"
        t = time.monotonic()
        cri.runtime.StartContainer(api.StartContainerRequest(container_id=p.cid), timeout=left())
        p.start_ms = (time.monotonic() - t) * 1000
        step = "ready in the log"
        while True:
            try:
                ready = ready_time(log.read_text(errors="replace"))
            except FileNotFoundError:
                ready = None
            now = time.monotonic()
            if ready is not None:
                p.seen_ms = (now - p.t0_mono) * 1000
                p.ready_ms = (ready - p.t0_wall) * 1000
                p.end_mono = p.t0_mono + p.ready_ms / 1000
                p.ok = True
                return p
            if now > deadline:
                raise TimeoutError(f"no `{READY}` in {log} after {timeout:.0f} s")
            time.sleep(POLL_S)
    except grpc.RpcError as e:
        p.error = f"{step}: {e.code().name}: {e.details()}"
    except Exception as e:   # noqa: BLE001 - a failed pod is counted and reported, the run goes on
        p.error = f"{step}: {type(e).__name__}: {e}"
    p.end_mono = time.monotonic()
    return p


# ---- removal, checked


def shim_pids(address: str, sandbox_id: str) -> list[int]:
    """Live shim processes (any runtime) of this containerd serving `sandbox_id` (their argv names both)."""
    want_addr, want_id = address.encode(), sandbox_id.encode()
    return [pid for pid, argv in argvs()
            if any(b"containerd-shim" in a for a in argv[:2])
            and want_addr in argv and want_id in argv and argv[argv.index(want_id) - 1] == b"-id"]


def remaining(cri: CriClient, address: str, sid: str) -> dict[str, object]:
    """What of pod `sid` is still there: CRI's pod, shim processes, and rund's state, VMs, mounts, cgroups."""
    left: dict[str, object] = {}
    if any(p.id == sid for p in cri.list_pod_sandboxes()):
        left["cri pod"] = sid
    if (pids := shim_pids(address, sid)) and os.path.exists(
            address_mod.socket_path(address_mod.socket_address(address, CRI_NAMESPACE, sid))):
        left["shim"] = pids         # without its socket: a rund group shim serving other pods (still alive at
        # the end of a benchmark: a failure of its own)
    left.update(leftovers(sid, CRI_NAMESPACE))
    return left


def remove_pod(cri: CriClient, address: str, sid: str, settle: float = 15.0) -> dict[str, object]:
    """Stop and remove a pod, then wait up to `settle` s for all of it to be gone. Returns what is left ({}: all
    gone) and, on an RPC error, the error under "error"."""
    err: dict[str, object] = {}
    try:
        cri.stop_pod_sandbox(sid)
        cri.remove_pod_sandbox(sid)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            err["error"] = f"{e.code().name}: {e.details()}"
    deadline = time.monotonic() + settle
    while (left := remaining(cri, address, sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return {**err, **left}


# ---- the pods' host processes


def rund_roots(sid: str) -> tuple[set[int], dict[int, str]]:
    """A rund pod's shim and QEMU, from its state record (/run/rund/k8s.io/<sid>/sandbox.json)."""
    doc = json.loads((STATE_DIR / CRI_NAMESPACE / sid / "sandbox.json").read_text())
    roots = {doc.get("shim_pid") or 0, doc.get("qemu_pid") or 0} - {0}
    return roots, {doc.get("shim_pid"): "shim", doc.get("qemu_pid"): "qemu"}


def pod_processes(handler: str, address: str, sids: list[str]) -> dict[str, dict[int, str]]:
    """sid -> {pid: kind} of every host process that exists because of the pod: rund, its shim and QEMU (state
    record) and their descendants; runc, its containerd-shim-runc-v2 (argv) and its descendants (pause, containers).
    kind: "shim", "qemu", or the process's comm."""
    kids = procmem.children()
    out: dict[str, dict[int, str]] = {}
    for sid in sids:
        if handler == "rund":
            try:
                roots, kinds = rund_roots(sid)
            except (OSError, ValueError):
                roots, kinds = set(), {}
        else:
            roots = set(shim_pids(address, sid))
            kinds = {pid: "shim" for pid in roots}
        procs = {}
        for pid in procmem.with_descendants(roots, kids):
            try:
                kind = kinds.get(pid) or ("qemu" if procmem.is_qemu(pid) else procmem.comm(pid))
            except OSError:
                continue
            if handler == "rund" and kind == "qemu" and pid not in kinds:
                continue            # another pod's VM, a child of the group shim they share ([shim] pods_per_shim)
            procs[pid] = kind
        out[sid] = procs
    return out


def cpu_ms(pids: Iterable[int], children: bool = False) -> float:
    """CPU time (user + system) the processes used so far, in ms; with `children`, only what their reaped children
    used (containerd's: the `shim start` processes, CNI plugins, runc)."""
    total = 0
    for pid in pids:
        try:
            f = procmem.stat_fields(pid)
        except OSError:
            continue
        total += (int(f[13]) + int(f[14])) if children else (int(f[11]) + int(f[12]))
    return total * 1000 / procmem.CLK_TCK


def labelled_pods(cri: CriClient, labels: dict[str, str]) -> list[str]:
    return [p.id for p in cri.list_pod_sandboxes(label_selector=labels)]


# ---- where a rund pod's start goes: containerd's log (its own lines and the shims')


CTD_LINE = re.compile(r'^time="(\S+)" level=\w+ msg="(.*)"')              # containerd's own (logrus)
SHIM_LINE = re.compile(r"^time=(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) level=\w+ msg=(.*)$")   # rund's shims
TRACE = re.compile(r"^trace (create|start) (\S+) total=([\d.]+)ms(.*?)(?: logger=|$)")
STEP = re.compile(r"(\S+?)=([\d.]+)ms")
LABEL = re.compile(r"(\w+)=([a-z]\w*)(?=\s|$)")
CTD_EVENTS = (          # (event, regex on containerd's msg; group 1 names the pod, its sandbox or container id)
    ("run_out", re.compile(r'^RunPodSandbox for &PodSandboxMetadata\{Name:([^,]+),.*returns sandbox id')),
    ("run_in", re.compile(r"^RunPodSandbox for &PodSandboxMetadata\{Name:([^,]+),")),
    ("create_out", re.compile(r'^CreateContainer within sandbox \\"(\w+)\\" for &ContainerMetadata.*returns')),
    ("create_in", re.compile(r'^CreateContainer within sandbox \\"(\w+)\\" for container')),
    ("start_out", re.compile(r'^StartContainer for \\"(\w+)\\" returns successfully')),
    ("start_in", re.compile(r'^StartContainer for \\"(\w+)\\"$')),
)
SHIM_SERVING = re.compile(r"^serving sandbox (\S+) on ")


@dataclass
class LogIndex:
    """containerd's log, indexed: events[(event, key)] = wall time; traces[(create|start, id)] = {"end": wall time
    of the trace line (the operation's end), "total": ms, <step>: ms, ..., "labels": {...}}."""
    events: dict[tuple[str, str], float] = field(default_factory=dict)
    traces: dict[tuple[str, str], dict] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "LogIndex":
        idx = cls()
        for line in text.splitlines():
            if m := CTD_LINE.match(line):
                try:
                    ts = parse_cri_time(m.group(1))
                except ValueError:
                    continue
                msg = m.group(2)
                for event, rx in CTD_EVENTS:
                    if e := rx.match(msg):
                        idx.events.setdefault((event, e.group(1)), ts)
                        break
            elif m := SHIM_LINE.match(line):
                ts = dt.datetime.fromisoformat(m.group(1)).timestamp() + int(m.group(2)) / 1000   # local time
                msg = m.group(3)
                if t := TRACE.match(msg):
                    what, ident, total, rest = t.groups()
                    entry: dict = {"end": ts, "total": float(total), "labels": dict(LABEL.findall(rest))}
                    entry.update({name: float(ms) for name, ms in STEP.findall(rest)})
                    idx.traces[(what, ident)] = entry
                elif s := SHIM_SERVING.match(msg):
                    idx.events.setdefault(("serving", s.group(1)), ts)
        return idx


def _trace_steps(prefix: str, t: dict, out: dict[str, float]) -> None:
    """A shim operation's steps in order; sub-steps (vm.*) indented under theirs; what no step covers as `other`."""
    top = 0.0
    for name, v in t.items():
        if name in ("end", "total", "labels"):
            continue
        if "." in name:
            out[f"    {prefix}.{name}"] = v
        else:
            out[f"  {prefix}.{name}"] = v
            top += v
    out[f"  {prefix}.(other)"] = t["total"] - top


def pod_steps(p: PodStart, idx: LogIndex) -> dict[str, float]:
    """One pod's start as consecutive segments (ms) from the client's RunPodSandbox call to the `ready` record, from
    containerd's log lines, the shim's `serving` line and its trace lines (ms resolution); the top-level segments
    (no leading blanks) add up to ready_ms. Shim steps are indented under their operation. {} if lines are
    missing (a runc pod has no shim trace: its segments stop at containerd's)."""
    ev, tr = idx.events, idx.traces
    t0 = p.t0_wall
    need = [("run_in", p.name), ("run_out", p.name), ("create_in", p.sid), ("create_out", p.sid),
            ("start_in", p.cid), ("start_out", p.cid)]
    if p.ready_ms is None or any(k not in ev for k in need):
        return {}
    ready = t0 + p.ready_ms / 1000
    c_sb, s_sb = tr.get(("create", p.sid)), tr.get(("start", p.sid))
    c_ct, s_ct = tr.get(("create", p.cid)), tr.get(("start", p.cid))
    marks: list[tuple[str, float]] = [("client -> containerd RunPodSandbox", ev[("run_in", p.name)])]
    sub: dict[str, dict[str, float]] = {}
    if c_sb and s_sb and ("serving", p.sid) in ev:
        marks += [("containerd: CNI, snapshot, bundle, shim process start -> shim serving", ev[("serving", p.sid)]),
                  ("shim serving -> Create(sandbox) called", c_sb["end"] - c_sb["total"] / 1000),
                  ("shim Create(sandbox)", c_sb["end"]),
                  ("-> Start(sandbox) called", s_sb["end"] - s_sb["total"] / 1000),
                  ("shim Start(sandbox)", s_sb["end"])]
        sub["shim Create(sandbox)"], sub["shim Start(sandbox)"] = {}, {}
        _trace_steps("create_sb", c_sb, sub["shim Create(sandbox)"])
        _trace_steps("start_sb", s_sb, sub["shim Start(sandbox)"])
    marks += [("containerd -> RunPodSandbox returns", ev[("run_out", p.name)]),
              ("client -> CreateContainer received", ev[("create_in", p.sid)]),
              ("containerd CreateContainer", ev[("create_out", p.sid)]),
              ("client -> StartContainer received", ev[("start_in", p.cid)])]
    if c_ct and s_ct:
        marks += [("containerd -> shim Create(container) called", c_ct["end"] - c_ct["total"] / 1000),
                  ("shim Create(container)", c_ct["end"]),
                  ("-> Start(container) called", s_ct["end"] - s_ct["total"] / 1000),
                  ("shim Start(container)", s_ct["end"])]
        sub["shim Create(container)"], sub["shim Start(container)"] = {}, {}
        _trace_steps("create_ct", c_ct, sub["shim Create(container)"])
        _trace_steps("start_ct", s_ct, sub["shim Start(container)"])
    marks += [("containerd -> StartContainer returns", ev[("start_out", p.cid)]),
              ("process start -> `ready` record in the CRI log", ready)]
    steps: dict[str, float] = {}
    prev = t0
    for name, at in marks:
        steps[name] = (at - prev) * 1000
        prev = at
        for k, v in sub.get(name, {}).items():
            steps[k] = v
    return steps


def median_steps(pods: Iterable[PodStart]) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for p in pods:
        for k, v in p.steps.items():
            by.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in by.items()}


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"
