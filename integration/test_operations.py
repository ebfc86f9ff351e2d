"""Operating rund on a node, end to end (issue 20): `rund metrics serve` scraped and parsed by Prometheus' own text
parser while real sandboxes start and stop through a private containerd; `rund ps` with a shim killed by SIGKILL;
`rund check` against a real CRI containerd and a config without the rund handler.

Each test uses a rund config of its own (`--runtime-config-path`): a private state dir, so the spool and the
sandboxes seen are this test's alone, and a cgroup parent of its own."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from integration.test_cri_pods import wait_for
from rund.config import load
from rund.resources.cgroups import CgroupError, open_pool
from rund.runtime.resource_config import pool_config
from rund.runtime.state import SandboxDir

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]

RUNTIME = "io.containerd.rund.v2"
TIMEOUT = 300
RUND = [sys.executable, "-m", "rund.cli"]


@pytest.fixture
def rund_config(tmp_path):
    path = tmp_path / "rund.toml"
    parent = f"rund-e2e-ops-{os.getpid()}"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n[cgroups]\nparent = "{parent}"\npool_size = 2\n')
    yield path
    try:
        open_pool(pool_config(load(str(path)))).destroy()
    except CgroupError as e:
        print(f"cleaning up the pool of {path}: {e}")


class MetricsDaemon:
    def __init__(self, config: Path, sock: Path):
        self.sock = sock
        self.proc = subprocess.Popen([*RUND, "--config", str(config), "metrics", "serve", "--listen", f"unix:{sock}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("listening on unix:"), line + self.proc.stderr.read()

    def scrape(self) -> dict:
        conn = http.client.HTTPConnection("localhost", timeout=30)
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.connect(str(self.sock))
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read().decode()
        assert r.status == 200, body
        return {f.name: f for f in text_string_to_metric_families(body)}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(10) == 0, self.proc.stderr.read()


@pytest.fixture
def daemon(rund_config, tmp_path):
    d = MetricsDaemon(rund_config, tmp_path / "metrics.sock")
    yield d
    d.stop()


def value(families: dict, name: str, sample: str | None = None, **labels) -> float | None:
    fam = families.get(name)
    for s in fam.samples if fam else ():
        if s.name == (sample or name) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def count(families: dict, op: str, **labels) -> float:
    """How many `op` operations the histogram holds (summed over its other labels)."""
    fam = families["rund_operation_duration_seconds"]
    return sum(s.value for s in fam.samples if s.name.endswith("_count") and s.labels["op"] == op
               and all(s.labels.get(k) == v for k, v in labels.items()))


def run(ctd, config: Path, cid: str, *args: str, detach: bool = False):
    opts = ["-d"] if detach else ["--rm"]
    return ctd.ctr("run", *opts, "--runtime", RUNTIME, "--runtime-config-path", str(config), ctd.image, cid, *args,
                   timeout=TIMEOUT)


def task_status(ctd, cid: str) -> str | None:
    for line in ctd.ctr("task", "ls").stdout.decode().splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[-1]
    return None



def remove(ctd, cid: str) -> None:
    ctd.ctr("task", "kill", "-s", "KILL", cid, check=False)
    wait_for(lambda: task_status(ctd, cid) in ("STOPPED", None), 60, f"{cid} to stop")
    ctd.ctr("task", "rm", cid, check=False)
    ctd.ctr("container", "rm", cid, check=False)


def rund_ps(config: Path) -> list[dict]:
    res = subprocess.run([*RUND, "--config", str(config), "ps", "--json"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_metrics_follow_sandboxes_as_they_start_and_stop(rund_containerd, rund_config, daemon):
    ctd = rund_containerd
    f = daemon.scrape()
    assert value(f, "rund_sandboxes", state="running") == 0 and count(f, "start") == 0
    run(ctd, rund_config, "ops-m1", "sleep", "600", detach=True)
    try:
        wait_for(lambda: task_status(ctd, "ops-m1") == "RUNNING", TIMEOUT, "ops-m1 to run")
        f = daemon.scrape()
        assert value(f, "rund_sandboxes", state="running") == 1
        info = [s for s in f["rund_sandbox_info"].samples if s.labels["sandbox"] == "ops-m1"]
        assert len(info) == 1 and info[0].labels["state"] == "running" and info[0].labels["vm"] in ("clone", "cold")
        assert value(f, "rund_sandbox_containers", sandbox="ops-m1") == 1
        assert value(f, "rund_sandbox_memory_pss_bytes", sandbox="ops-m1", process="vmm") > 10 << 20
        assert value(f, "rund_sandbox_memory_pss_bytes", sandbox="ops-m1", process="shim") > 5 << 20
        assert value(f, "rund_sandbox_cpu_seconds", "rund_sandbox_cpu_seconds_total", sandbox="ops-m1",
                     process="vmm") > 0
        assert count(f, "create") == 1 and count(f, "start") == 1
        vm = info[0].labels["vm"]
        hits = value(f, "rund_template_hits", "rund_template_hits_total")
        assert (hits, value(f, "rund_template_misses", "rund_template_misses_total")) == \
               ((1, 0) if vm == "clone" else (0, 1))
        step = "rund_operation_step_duration_seconds"
        for name in ("rootfs", "cgroup", "vm", "agent_create"):
            assert value(f, step, step + "_count", op="create", step=name, vm=vm) == 1, name
        assert value(f, step, step + "_count", op="start", step="agent_start") == 1
        assert value(f, "rund_sandbox_guest_memory_bytes", sandbox="ops-m1") is None
        ctd.ctr("task", "metrics", "ops-m1")                        # containerd's Stats: the guest's memory
        f = daemon.scrape()
        assert value(f, "rund_sandbox_guest_memory_bytes", sandbox="ops-m1") > 0
        # an error answered by the shim is counted by method and code
        ctd.ctr("task", "exec", "--exec-id", "ops-x", "ops-m1", "/no/such/binary", check=False)
        f = daemon.scrape()
        errors = {(s.labels["method"], s.labels["code"]): s.value for s in f["rund_task_errors"].samples
                  if s.name.endswith("_total")}
        assert [n for (method, _), n in errors.items() if method == "Start"] == [1], errors
    finally:
        remove(ctd, "ops-m1")
    f = daemon.scrape()
    assert value(f, "rund_sandbox_info", sandbox="ops-m1") is None
    assert value(f, "rund_sandboxes", state="running") == 0
    assert count(f, "delete") >= 1 and count(f, "start") == 1
    for n in range(2):
        assert run(ctd, rund_config, f"ops-r{n}", "true").returncode == 0
    f = daemon.scrape()
    assert count(f, "create") == 3 and count(f, "start") == 3
    assert value(f, "rund_template_hits", "rund_template_hits_total") + \
        value(f, "rund_template_misses", "rund_template_misses_total") == 3
    assert value(f, "rund_sandboxes", state="running") == 0 and "ops-r0" not in str(f["rund_sandbox_info"].samples)
    assert value(f, "rund_cgroup_pool_slots", state="free") >= 1


def test_ps_shows_a_sandbox_whose_shim_was_killed(rund_containerd, rund_config, daemon):
    ctd = rund_containerd
    run(ctd, rund_config, "ops-crash", "sleep", "600", detach=True)
    stopped = False
    try:
        wait_for(lambda: task_status(ctd, "ops-crash") == "RUNNING", TIMEOUT, "ops-crash to run")
        [row] = [r for r in rund_ps(rund_config) if r["id"] == "ops-crash"]
        assert row["state"] == "running" and row["shim_alive"] and row["vmm_alive"]
        assert row["namespace"] == "default" and row["containers"] == ["ops-crash"] and row["vm"] in ("clone", "cold")
        assert row["pss_bytes"] > 0 and row["cpu_seconds"] > 0
        record = SandboxDir(load(str(rund_config)).state_dir, "default", "ops-crash").read_sandbox()
        assert record.shim_pid == row["shim_pid"]
        # containerd would clean up after the dead shim at once: hold it still while we look
        os.kill(ctd.proc.pid, signal.SIGSTOP)
        stopped = True
        os.kill(record.shim_pid, signal.SIGKILL)
        row = wait_for(lambda: next((r for r in rund_ps(rund_config) if r["id"] == "ops-crash"
                                     and not r["shim_alive"]), None), 30, "ps to see the shim dead")
        assert row["state"] in ("dead", "shim-dead")       # QEMU dies with its shim (PDEATHSIG)
        wait_for(lambda: not next(r for r in rund_ps(rund_config) if r["id"] == "ops-crash")["vmm_alive"], 30,
                 "the VMM to follow its shim")
        table = subprocess.run([*RUND, "--config", str(rund_config), "ps"], capture_output=True, text=True,
                               timeout=60).stdout
        line = next(line for line in table.splitlines() if " ops-crash " in line)
        assert f"{record.shim_pid} (dead)" in line and " dead " in line, table
        f = daemon.scrape()                                  # a dead shim does not break the scrape
        assert value(f, "rund_sandbox_info", sandbox="ops-crash", state="dead") == 1
        assert value(f, "rund_sandboxes", state="dead") == 1
    finally:
        if stopped:
            os.kill(ctd.proc.pid, signal.SIGCONT)
        wait_for(lambda: task_status(ctd, "ops-crash") in ("STOPPED", None), 120, "containerd to see the exit")
        remove(ctd, "ops-crash")
    wait_for(lambda: not any(r["id"] == "ops-crash" for r in rund_ps(rund_config)), 60,
             "containerd's cleanup to remove the sandbox's records")


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RUND, "check", *args], capture_output=True, text=True, timeout=120)


def _status_of(stdout: str, name: str) -> str:
    for line in stdout.splitlines():
        if line.startswith("  ") and line[7:].split("  ")[0].strip() == name:
            return line[2:6].strip()
    raise AssertionError(f"no {name} line in:\n{stdout}")


def test_check_against_a_cri_containerd_with_and_without_the_rund_handler(cri_containerd, tmp_path):
    ctd = cri_containerd
    config = ctd.workdir / "config.toml"
    r = _check("--containerd-config", str(config), "--containerd-address", ctd.address)
    for name in ("containerd config", "CRI plugin", "rund handler", "containerd", "sandbox image", "CNI"):
        assert _status_of(r.stdout, name) == "ok", r.stdout
    host_bad = [line for line in r.stdout.split("kubernetes:")[0].splitlines() if line.startswith("  BAD")]
    assert r.returncode == (1 if host_bad else 0), r.stdout
    # the same node, its config without the rund handler
    text = config.read_text()
    without = re.sub(r'(?ms)^\s*\[plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\.runtimes\.rund(\.options)?\]'
                     r'.*?(?=^\s*\[)', "", text)
    assert "io.containerd.rund.v2" not in without
    (tmp_path / "no-rund.toml").write_text(without)
    r = _check("--containerd-config", str(tmp_path / "no-rund.toml"), "--containerd-address", ctd.address)
    assert r.returncode == 1
    assert _status_of(r.stdout, "rund handler") == "BAD"
    assert "no CRI runtime has runtime_type io.containerd.rund.v2" in r.stdout
    assert 'runtime_type = "io.containerd.rund.v2"' in r.stdout          # says what to add
    assert "cannot run a rund pod: fix rund handler" in r.stdout
