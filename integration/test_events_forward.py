"""Interop with a real peer: our ttrpc client forwards events to a private containerd 1.6's ttrpc endpoint and
`ctr events` receives them decoded (bare type URL, right topic and fields)."""
import asyncio
import json
import queue
import subprocess
import threading
import time

import pytest
from google.protobuf import any_pb2, timestamp_pb2

from proto import ttrpc
from proto.gen.containerd.events import task_pb2 as events_pb2
from proto.gen.containerd.services.events.ttrpc.v1 import events_pb2 as forward_pb2

pytestmark = [pytest.mark.e2e, pytest.mark.root]

EVENTS_SERVICE = forward_pb2.DESCRIPTOR.services_by_name["Events"]


def _envelope(topic: str, event, namespace: str = "default") -> forward_pb2.ForwardRequest:
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    packed = any_pb2.Any(type_url=event.DESCRIPTOR.full_name, value=event.SerializeToString())
    return forward_pb2.ForwardRequest(envelope=forward_pb2.Envelope(
        timestamp=now, namespace=namespace, topic=topic, event=packed))


async def _forward(address: str, *requests) -> None:
    async with await ttrpc.Client.connect_unix(address) as client:
        stub = ttrpc.Stub(client, EVENTS_SERVICE)
        for req in requests:
            await stub.Forward(req, timeout=5)


class _EventLines:
    """`ctr events` in the background, its lines in a queue."""

    def __init__(self, containerd):
        self.proc = subprocess.Popen(["ctr", "--address", containerd.address, "events"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self._reader.join(5)


def _wait_for_topic(lines: _EventLines, topic: str, send, timeout: float = 20.0) -> tuple[str, dict]:
    # `ctr events` subscribes asynchronously; resend until the subscription is live.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        send()
        try:
            while True:
                line = lines.lines.get(timeout=0.3)
                assert "cannot unmarshal" not in line, line
                # 1.6 prints "<date> <time> +0000 UTC <namespace> <topic> <event as JSON>".
                if f" {topic} " in line:
                    head, body = line.split(f" {topic} ", 1)
                    return head.split()[-1], json.loads(body)
        except queue.Empty:
            continue
    raise AssertionError(f"no {topic} event seen in {timeout}s")


def test_task_exit_forwarded_is_decoded_by_ctr_events(containerd):
    exited = timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=5000)
    exit_event = events_pb2.TaskExit(container_id="c1", id="c1", pid=4242, exit_status=137, exited_at=exited)
    lines = _EventLines(containerd)
    try:
        namespace, body = _wait_for_topic(
            lines, "/tasks/exit",
            lambda: asyncio.run(_forward(containerd.ttrpc_address, _envelope("/tasks/exit", exit_event))))
    finally:
        lines.close()
    assert namespace == "default"
    assert body["container_id"] == "c1"
    assert body["id"] == "c1"
    assert body["pid"] == 4242
    assert body["exit_status"] == 137
    assert body["exited_at"].startswith("2023-11-14T22:13:20.000005")


def test_oom_and_exec_started_events_decode_too(containerd):
    lines = _EventLines(containerd)
    try:
        _, body = _wait_for_topic(lines, "/tasks/exec-started", lambda: asyncio.run(_forward(
            containerd.ttrpc_address,
            _envelope("/tasks/exec-started", events_pb2.TaskExecStarted(container_id="c2", exec_id="e1", pid=7)))))
        assert body == {"container_id": "c2", "exec_id": "e1", "pid": 7}
        _, body = _wait_for_topic(lines, "/tasks/oom", lambda: asyncio.run(_forward(
            containerd.ttrpc_address, _envelope("/tasks/oom", events_pb2.TaskOOM(container_id="c3")))))
        assert body == {"container_id": "c3"}
    finally:
        lines.close()


def test_containerd_rejects_an_invalid_envelope_with_a_typed_error(containerd):
    bad_topic = _envelope("tasks/exit-without-slash", events_pb2.TaskOOM(container_id="x"))
    with pytest.raises(ttrpc.TtrpcError) as err:
        asyncio.run(_forward(containerd.ttrpc_address, bad_topic))
    assert err.value.code == ttrpc.Code.INVALID_ARGUMENT
