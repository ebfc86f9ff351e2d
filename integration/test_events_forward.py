"""Interop with a real peer: the shim's EventPublisher forwards the runtime's domain events to a private containerd
1.6's ttrpc endpoint, and `ctr events` receives them decoded (bare type URL, right topic and fields)."""
import asyncio
from datetime import datetime, timezone

import pytest

from proto import ttrpc
from proto.gen.containerd.events import task_pb2 as events_pb2
from rund.runtime import events
from rund.runtime.process import Exit
from rund.shim.events import EVENTS_SERVICE, EventPublisher, envelope

from integration.ctr_events import CtrEvents

pytestmark = [pytest.mark.e2e, pytest.mark.root]


def emit(address: str, *domain_events, namespace: str = "default") -> EventPublisher:
    async def run():
        publisher = EventPublisher(address, namespace)
        publisher.start()
        for event in domain_events:
            publisher.emit(event)
        await publisher.close()
        return publisher
    return asyncio.run(run())


def test_task_exit_emitted_is_decoded_by_ctr_events(containerd):
    exited = datetime(2023, 11, 14, 22, 13, 20, 5, tzinfo=timezone.utc)
    lines = CtrEvents(containerd)
    try:
        namespace, body = lines.wait_subscribed(
            lambda: emit(containerd.ttrpc_address, events.ProcessExited("c1", "c1", 4242, Exit(137, exited))),
            "/tasks/exit")
    finally:
        lines.close()
    assert namespace == "default"
    assert body["container_id"] == "c1"
    assert body["id"] == "c1"
    assert body["pid"] == 4242
    assert body["exit_status"] == 137
    assert body["exited_at"].startswith("2023-11-14T22:13:20.000005")


def test_oom_and_exec_started_events_decode_too(containerd):
    lines = CtrEvents(containerd)
    try:
        _, body = lines.wait_subscribed(
            lambda: emit(containerd.ttrpc_address, events.ExecStarted("c2", "e1", 7)), "/tasks/exec-started")
        assert body == {"container_id": "c2", "exec_id": "e1", "pid": 7}
        _, body = lines.wait_subscribed(lambda: emit(containerd.ttrpc_address, events.TaskOOM("c3")), "/tasks/oom")
        assert body == {"container_id": "c3"}
    finally:
        lines.close()


def test_containerd_rejects_an_invalid_envelope_with_a_typed_error(containerd):
    bad_topic = envelope("default", "tasks/exit-without-slash", events_pb2.TaskOOM(container_id="x"))

    async def forward():
        async with await ttrpc.Client.connect_unix(containerd.ttrpc_address) as client:
            await ttrpc.Stub(client, EVENTS_SERVICE).Forward(bad_topic, timeout=5)
    with pytest.raises(ttrpc.TtrpcError) as err:
        asyncio.run(forward())
    assert err.value.code == ttrpc.Code.INVALID_ARGUMENT
