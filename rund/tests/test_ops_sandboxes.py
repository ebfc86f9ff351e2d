"""`rund ps` and the metrics' view of sandboxes, from records and /proc, on a state dir made here (no root)."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rund.config import Config, RootfsConfig, TemplateConfig
from rund.ops import ps
from rund.ops.metrics import NodeMetrics
from rund.ops.sandboxes import scan
from rund.runtime import telemetry
from rund.runtime.state import ContainerRecord, SandboxDir, SandboxRecord, process_start_ticks
from rund.runtime.trace import StepTrace


@pytest.fixture
def processes():
    started = []

    def start(*argv):
        p = subprocess.Popen(argv or ("sleep", "60"))
        started.append(p)
        return p
    yield start
    for p in started:
        p.kill()
        p.wait()


def _sandbox(state, ns, sid, shim_pid, qemu=None, vm="", containers=(), lock=False, legacy=False):
    d = SandboxDir(state, ns, sid)
    d.create()
    if lock:
        assert d.lock()
    record = SandboxRecord(ns, sid, shim_pid, qemu.pid if qemu else 0,
                           (process_start_ticks(qemu.pid) or 0) if qemu else 0, bool(qemu), vm=vm)
    if legacy:                     # a record of a version without `vm`
        doc = asdict(record)
        del doc["vm"]
        (d.path / "sandbox.json").write_text(json.dumps(doc))
    else:
        d.write_sandbox(record)
    for c in containers:
        d.write_container(ContainerRecord(c, f"/bundles/{c}"))
    return d


@pytest.fixture
def state(tmp_path, processes, monkeypatch):
    monkeypatch.setattr(telemetry, "_bound", None)
    monkeypatch.setattr(telemetry, "_guest_memory", {})
    s = tmp_path / "state"
    gone = processes("true")
    gone.wait()
    dirs = {
        "live": _sandbox(s, "default", "live", os.getpid(), processes(), "clone", ("live", "app"), lock=True),
        "creating": _sandbox(s, "default", "creating", os.getpid(), None, lock=True),
        "orphan": _sandbox(s, "k8s.io", "orphan", gone.pid, processes()),
        "crashed": _sandbox(s, "k8s.io", "crashed", gone.pid, gone),
        "legacy": _sandbox(s, "k8s.io", "legacy", gone.pid, processes("sh", "-c", "sleep 60", "-incoming"),
                           legacy=True),
    }
    bad = SandboxDir(s, "k8s.io", "unreadable")
    bad.create()
    (bad.path / "sandbox.json").write_text("{not json")
    (s / "cgroup-pool" / "boot").mkdir(parents=True)        # the state dir holds more than sandboxes
    (s / ".metrics").mkdir()
    yield s, dirs
    for d in dirs.values():
        d.unlock()


def test_states_come_from_the_shims_lock_and_the_vmms_pid_and_start_time(state):
    s, _ = state
    views = {v.id: v for v in scan(s)}
    assert {i: v.state for i, v in views.items()} == {
        "live": "running", "creating": "creating", "orphan": "shim-dead", "crashed": "dead", "legacy": "shim-dead",
        "unreadable": "unreadable"}
    live = views["live"]
    assert live.shim_alive and live.vmm_alive and live.vm == "clone" and live.containers == ("app", "live")
    assert live.vmm_pss_bytes > 0 and live.shim_pss_bytes > 0 and live.cpu_seconds >= 0
    assert live.age_seconds() < 60
    assert not views["crashed"].shim_alive and not views["crashed"].vmm_alive and views["crashed"].pss_bytes is None
    assert views["legacy"].vm == "clone"             # no `vm` in the record: the VMM's -incoming says so
    assert views["orphan"].vm == "cold"
    assert "not json" not in views["unreadable"].error and views["unreadable"].error


def test_guest_memory_is_the_sum_over_the_sandboxs_current_containers(state, monkeypatch):
    s, dirs = state
    monkeypatch.setattr(telemetry, "_bound", (str(s), "default", "live"))
    telemetry.record_guest_memory("live", 3 << 20)
    telemetry.record_guest_memory("app", 5 << 20)
    telemetry.record_guest_memory("removed-since", 100 << 20)
    live = next(v for v in scan(s) if v.id == "live")
    assert live.guest_memory_bytes == 8 << 20


def test_ps_table_and_json(state):
    s, _ = state
    views = scan(s)
    lines = ps.table(views).splitlines()
    assert lines[0].split()[:5] == ["NAMESPACE", "ID", "CONTAINERS", "AGE", "STATE"]
    crashed = next(line for line in lines if " crashed " in line)
    assert "(dead)" in crashed and " dead " in crashed
    docs = {d["id"]: d for d in json.loads(ps.as_json(views))}
    assert docs["live"]["containers"] == ["app", "live"] and docs["live"]["vm"] == "clone"
    assert docs["crashed"]["shim_alive"] is False and docs["live"]["pss_bytes"] > 0


def _scrape(metrics: NodeMetrics) -> dict:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def _value(families, name, sample=None, **labels):
    for fam in families.values():
        for s in fam.samples:
            if s.name == (sample or name) and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_metrics_report_sandboxes_spooled_operations_and_forget_a_deleted_sandbox(state, tmp_path):
    s, dirs = state
    cfg = Config(state_dir=str(s), templates=TemplateConfig(dir=str(tmp_path / "templates")),
                 rootfs=RootfsConfig(cache_dir=str(tmp_path / "no-cache")))
    metrics = NodeMetrics(cfg)
    try:
        telemetry.bind(s, "default", "live")
        for vm in ("clone", "clone", "cold"):
            t = StepTrace("create c")
            t.add("cgroup", 0.002)
            t.add("vm", 0.08 if vm == "clone" else 3.0)
            t.label("vm", vm)
            t.done()
        StepTrace("create member").done()             # joined a running VM: no vm label
        for _ in range(4):
            t = StepTrace("start c")
            t.add("agent_start", 0.01)
            t.done()
        telemetry.record_error("Kill", "NOT_FOUND")
        f = _scrape(metrics)
        assert _value(f, "rund_sandboxes", state="running") == 1 and _value(f, "rund_sandboxes", state="dead") == 1
        assert _value(f, "rund_sandbox_info", namespace="default", sandbox="live", vm="clone") == 1
        assert _value(f, "rund_sandbox_memory_pss_bytes", sandbox="live", process="vmm") > 0
        assert _value(f, "rund_sandbox_cpu_seconds", "rund_sandbox_cpu_seconds_total", sandbox="live",
                      process="shim") >= 0
        assert _value(f, "rund_sandbox_containers", sandbox="live") == 2
        h = "rund_operation_duration_seconds"
        assert _value(f, h, h + "_count", op="start") == 4
        assert _value(f, h, h + "_count", op="create", vm="clone") == 2
        assert _value(f, h, h + "_count", op="create", vm="pod") == 1
        step = "rund_operation_step_duration_seconds"
        assert _value(f, step, step + "_bucket", op="create", step="vm", vm="cold", le="2.5") == 0
        assert _value(f, step, step + "_bucket", op="create", step="vm", vm="cold", le="5.0") == 1
        assert _value(f, "rund_template_hits", "rund_template_hits_total") == 2
        assert _value(f, "rund_template_misses", "rund_template_misses_total") == 1
        assert _value(f, "rund_task_errors", "rund_task_errors_total", method="Kill", code="NOT_FOUND") == 1
        # the next scrape counts nothing twice; a deleted sandbox is gone from it
        dirs["crashed"].remove()
        f = _scrape(metrics)
        assert _value(f, h, h + "_count", op="start") == 4
        assert _value(f, "rund_sandbox_info", sandbox="crashed") is None
        assert _value(f, "rund_sandboxes", state="dead") == 0
    finally:
        metrics.close()


def test_pss_is_read_at_most_every_max_age_per_process(processes, monkeypatch):
    from rund.ops import procstat
    now = [0.0]
    reads = []
    real = procstat.pss_bytes
    monkeypatch.setattr(procstat, "pss_bytes", lambda pid: reads.append(pid) or real(pid))
    cache = procstat.PssCache(max_age=30, clock=lambda: now[0])
    p = processes()
    assert cache(p.pid) > 0 and cache(p.pid) > 0 and reads == [p.pid]
    now[0] = 31
    cache(p.pid)
    assert reads == [p.pid, p.pid]
    cache.prune()
    cache.prune()                      # not asked about since: forgotten
    assert cache._seen == {}
    p.kill()
    p.wait()
    assert cache(p.pid) is None
