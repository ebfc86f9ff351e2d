"""The generated code is current, and the messages are wire-identical to containerd's.

Field numbers are checked against the tables in shared/reference/containerd-shim-contract.md, and a few
golden byte strings observed from containerd 1.6.20 are decoded.
"""
import pytest
from google.protobuf import any_pb2, timestamp_pb2

from proto import generate
from proto.gen.containerd.cgroups.v1 import metrics_pb2
from proto.gen.containerd.events import task_pb2 as events_pb2
from proto.gen.containerd.services.events.ttrpc.v1 import events_pb2 as forward_pb2
from proto.gen.containerd.task.v2 import shim_pb2
from proto.gen.containerd.types import mount_pb2
from proto.gen.containerd.types.task import task_pb2 as types_pb2
from proto.gen.runtimeoptions.v1 import api_pb2 as runtimeoptions_pb2
from proto.gen.ttrpc import request_pb2


def test_generated_code_is_current():
    assert generate.check() == [], "run `python3 -m proto.generate`"


def _fields(cls):
    return {f.name: f.number for f in cls.DESCRIPTOR.fields}


@pytest.mark.parametrize(
    "cls, expected",
    [
        (request_pb2.Request, {"service": 1, "method": 2, "payload": 3, "timeout_nano": 4, "metadata": 5}),
        (request_pb2.Response, {"status": 1, "payload": 2}),
        (shim_pb2.CreateTaskRequest, {"id": 1, "bundle": 2, "rootfs": 3, "terminal": 4, "stdin": 5, "stdout": 6,
                                      "stderr": 7, "checkpoint": 8, "parent_checkpoint": 9, "options": 10}),
        (shim_pb2.StateResponse, {"id": 1, "bundle": 2, "pid": 3, "status": 4, "stdin": 5, "stdout": 6,
                                  "stderr": 7, "terminal": 8, "exit_status": 9, "exited_at": 10, "exec_id": 11}),
        (shim_pb2.ExecProcessRequest, {"id": 1, "exec_id": 2, "terminal": 3, "stdin": 4, "stdout": 5,
                                       "stderr": 6, "spec": 7}),
        (shim_pb2.KillRequest, {"id": 1, "exec_id": 2, "signal": 3, "all": 4}),
        (shim_pb2.ResizePtyRequest, {"id": 1, "exec_id": 2, "width": 3, "height": 4}),
        (shim_pb2.UpdateTaskRequest, {"id": 1, "resources": 2, "annotations": 3}),
        (shim_pb2.ConnectResponse, {"shim_pid": 1, "task_pid": 2, "version": 3}),
        (shim_pb2.DeleteResponse, {"pid": 1, "exit_status": 2, "exited_at": 3}),
        (shim_pb2.ShutdownRequest, {"id": 1, "now": 2}),
        (mount_pb2.Mount, {"type": 1, "source": 2, "target": 3, "options": 4}),
        (types_pb2.ProcessInfo, {"pid": 1, "info": 2}),
        (events_pb2.TaskCreate, {"container_id": 1, "bundle": 2, "rootfs": 3, "io": 4, "checkpoint": 5, "pid": 6}),
        (events_pb2.TaskExit, {"container_id": 1, "id": 2, "pid": 3, "exit_status": 4, "exited_at": 5}),
        (events_pb2.TaskDelete, {"container_id": 1, "pid": 2, "exit_status": 3, "exited_at": 4, "id": 5}),
        (events_pb2.TaskExecStarted, {"container_id": 1, "exec_id": 2, "pid": 3}),
        (forward_pb2.Envelope, {"timestamp": 1, "namespace": 2, "topic": 3, "event": 4}),
        (runtimeoptions_pb2.Options, {"type_url": 1, "config_path": 2}),
    ],
)
def test_field_numbers_match_containerd(cls, expected):
    assert _fields(cls) == expected


def test_task_service_has_all_17_rpcs_in_containerd_order():
    svc = shim_pb2.DESCRIPTOR.services_by_name["Task"]
    assert svc.full_name == "containerd.task.v2.Task"
    assert [m.name for m in svc.methods] == [
        "State", "Create", "Start", "Delete", "Pids", "Pause", "Resume", "Checkpoint", "Kill", "Exec",
        "ResizePty", "CloseIO", "Update", "Wait", "Stats", "Connect", "Shutdown",
    ]


def test_status_enum_values():
    assert [(v.name, v.number) for v in types_pb2.Status.DESCRIPTOR.values] == [
        ("UNKNOWN", 0), ("CREATED", 1), ("RUNNING", 2), ("STOPPED", 3), ("PAUSED", 4), ("PAUSING", 5)]


def test_events_service_full_name():
    assert forward_pb2.DESCRIPTOR.services_by_name["Events"].full_name == "containerd.services.events.ttrpc.v1.Events"


def test_cri_runtime_options_bytes_observed_from_containerd_decode():
    # The Any CRI wrote to the shim's stdin for ConfigPath = "/etc/rund/probe.toml" (reference §2.2).
    raw = bytes.fromhex("0a19") + b"runtimeoptions.v1.Options" + bytes.fromhex("1216") + bytes.fromhex("1214") \
        + b"/etc/rund/probe.toml"
    outer = any_pb2.Any.FromString(raw)
    assert outer.type_url == "runtimeoptions.v1.Options"
    assert runtimeoptions_pb2.Options.FromString(outer.value).config_path == "/etc/rund/probe.toml"


def test_go_zero_time_encodes_as_ten_byte_varint():
    ts = timestamp_pb2.Timestamp(seconds=-62135596800)
    raw = ts.SerializeToString()
    assert raw[0] == 0x08 and len(raw) == 1 + 10


def test_cgroup_v1_metrics_fields_cri_reads():
    m = metrics_pb2.Metrics()
    m.cpu.usage.total = 5
    m.memory.usage.usage = 7
    m.memory.total_inactive_file = 1
    # Metrics.cpu(3) -> CPUStat.usage(1) -> CPUUsage.total(1); Metrics.memory(4) -> usage(33) -> usage(2)
    # Hand-encoded: tag 0x1a len 4 {tag 0x0a len 2 {0x08 5}}; tag 0x22 len 8 {field 30 = 1; field 33 {field 2 = 7}}.
    assert m.SerializeToString() == bytes.fromhex("1a040a020805" "2208" "f00101" "8a0202" "1007")
    back = metrics_pb2.Metrics.FromString(m.SerializeToString())
    assert (back.cpu.usage.total, back.memory.usage.usage, back.memory.total_inactive_file) == (5, 7, 1)
