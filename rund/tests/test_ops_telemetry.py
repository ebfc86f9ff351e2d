"""The shims' side of the metrics spool (rund/runtime/telemetry.py) and the daemon's (rund/ops/spool.py)."""
from __future__ import annotations

import json
import logging
import os
import time

import pytest

from rund import procfs
from rund.errors import FailedPrecondition
from rund.ops.spool import SpoolReader
from rund.runtime import telemetry
from rund.runtime.state import SandboxDir
from rund.runtime.trace import StepTrace


@pytest.fixture
def bound(tmp_path, monkeypatch):
    monkeypatch.setattr(telemetry, "_bound", None)
    monkeypatch.setattr(telemetry, "_guest_memory", {})
    SandboxDir(tmp_path, "ns1", "sb1").create()        # what the shim does when it claims its sandbox
    return tmp_path


def test_nothing_is_recorded_before_a_sandbox_is_claimed(tmp_path, monkeypatch):
    monkeypatch.setattr(telemetry, "_bound", None)
    assert telemetry.record_error("Create", "NOT_FOUND") is False


def test_a_finished_trace_is_one_line_in_the_state_dirs_spool(bound):
    trace = StepTrace("create c1")
    trace.add("cgroup", 0.002)
    trace.add("vm", 0.25)
    trace.label("vm", "clone")
    trace.done()
    telemetry.record_error("Kill", "FAILED_PRECONDITION")
    lines = open(telemetry.spool_path(bound), "rb").read().splitlines()
    assert len(lines) == 2
    doc = json.loads(lines[0])
    assert doc["k"] == "trace" and doc["op"] == "create" and doc["id"] == "c1"
    assert doc["ns"] == "ns1" and doc["sb"] == "sb1" and doc["labels"] == {"vm": "clone"}
    assert doc["steps"] == [["cgroup", 0.002], ["vm", 0.25]] and doc["total"] >= 0
    assert json.loads(lines[1]) == {**json.loads(lines[1]), "k": "error", "method": "Kill",
                                    "code": "FAILED_PRECONDITION"}
    assert oct(os.stat(telemetry.spool_path(bound)).st_mode & 0o777) == "0o600"


def test_a_trace_with_a_vm_logs_the_cpu_each_step_took_from_it_and_spools_only_wall_times(bound, caplog):
    """The VM's CPU per step (trace.vm_cpu, e.g. procfs.cpu_ns of QEMU) goes in the log line for benchmarks; the
    spool, which feeds metrics, keeps wall times only. A step before the VM runs (None) has no CPU figure."""
    readings = iter([None, 1_000_000_000, 1_012_500_000])     # the VM runs from the second step on
    trace = StepTrace("create c1")
    trace.vm_cpu = lambda: next(readings)
    with trace.step("vm"):
        pass
    with trace.step("agent_create"):
        pass
    with caplog.at_level(logging.INFO, logger="rund.trace"):
        trace.done()
    assert trace.cpu_steps == [("agent_create", 0.0125)]
    assert "cpu.agent_create=12.5ms" in caplog.text and "cpu.vm" not in caplog.text
    doc = json.loads(open(telemetry.spool_path(bound), "rb").read().splitlines()[0])
    assert [name for name, _ in doc["steps"]] == ["vm", "agent_create"]


def test_procfs_cpu_ns_counts_every_thread_and_none_for_no_process():
    import threading
    before = procfs.cpu_ns(os.getpid())
    spun, done = threading.Event(), threading.Event()

    def spin() -> None:
        t = time.thread_time()
        while time.thread_time() - t < 0.05:
            pass
        spun.set()
        done.wait()                 # a thread's schedstat goes with the thread: measured while it is there
    worker = threading.Thread(target=spin)
    worker.start()
    spun.wait()
    try:
        assert procfs.cpu_ns(os.getpid()) - before >= 40_000_000
    finally:
        done.set()
        worker.join()
    assert procfs.cpu_ns(2**22 + 1) is None          # above pid_max's ceiling: never a process


def test_a_record_never_fails_the_operation(bound, monkeypatch):
    blocker = bound / "a-file"
    blocker.write_text("")                       # the state dir is unusable: the spool cannot be made
    monkeypatch.setattr(telemetry, "_bound", (str(blocker), "ns", "sb"))
    trace = StepTrace("start c1")
    trace.done()                                 # no exception
    assert telemetry.record_error("Start", "UNKNOWN") is False
    assert telemetry.record_guest_memory("c1", 1) is False


def test_full_spool_drops_records_and_long_lines_are_dropped(bound, monkeypatch):
    monkeypatch.setattr(telemetry, "MAX_SPOOL_BYTES", 100)
    assert telemetry.record_error("Create", "NOT_FOUND")
    assert telemetry.record_error("Create", "NOT_FOUND")       # 1 line < 100 bytes: still room
    size = os.path.getsize(telemetry.spool_path(bound))
    while telemetry.record_error("Create", "NOT_FOUND"):
        pass
    assert os.path.getsize(telemetry.spool_path(bound)) <= 100 + 2 * (size // 2)
    assert telemetry.record_trace("create " + "x" * telemetry.MAX_LINE, 1.0, [], []) is False


def test_guest_memory_is_kept_per_container_in_the_sandbox_dir(bound):
    assert telemetry.record_guest_memory("c1", 10 << 20)
    assert telemetry.record_guest_memory("c2", 5 << 20)
    doc = json.loads((bound / "ns1" / "sb1" / telemetry.GUEST_MEMORY).read_text())
    assert doc["containers"] == {"c1": 10 << 20, "c2": 5 << 20}


def test_the_reader_hands_over_each_record_once_across_rotations(bound):
    reader = SpoolReader(str(bound))
    reader.claim()
    try:
        for i in range(3):
            telemetry.record_error("M", f"C{i}")
        assert [r["code"] for r in reader.take()] == ["C0", "C1", "C2"]
        assert reader.take() == []
        # a shim that opened the spool just before the rotation writes into spool.old: read on the next take
        telemetry.record_error("M", "D0")
        assert [r["code"] for r in reader.take()] == ["D0"]
        with open(reader.old, "ab") as f:
            f.write(b'{"k":"error","method":"M","code":"LATE"}\n')
        telemetry.record_error("M", "D1")
        assert [r["code"] for r in reader.take()] == ["LATE", "D1"]
        with open(telemetry.spool_path(bound), "ab") as f:
            f.write(b"not json\n")
        assert reader.take() == [] and reader.rejected == 1
    finally:
        reader.close()


def test_one_reader_per_spool_and_a_new_one_reads_what_was_spooled_meanwhile(bound):
    telemetry.record_error("M", "BEFORE")
    first = SpoolReader(str(bound))
    first.claim()
    with pytest.raises(FailedPrecondition):
        SpoolReader(str(bound)).claim()
    first.close()
    second = SpoolReader(str(bound))
    second.claim()
    assert [r["code"] for r in second.take()] == ["BEFORE"]
    second.close()


def test_a_record_costs_tens_of_microseconds(bound):
    n = 2000
    t = time.perf_counter()
    for _ in range(n):
        telemetry.record_trace("create c1", 0.1, [("rootfs", 0.01), ("cgroup", 0.001), ("vm", 0.05)],
                               [("vm", "clone")])
    per = (time.perf_counter() - t) / n
    print(f"record_trace: {per * 1e6:.1f} us")
    assert per < 0.002
