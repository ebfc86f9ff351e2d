"""containerd's events, in one place: the domain events translated to containerd's topics and messages, and the
publisher that forwards them in order over ttrpc to an Events.Forward endpoint (here our own ttrpc server on a
unix socket; containerd's real endpoint is in integration/test_events_forward.py)."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from proto import ttrpc
from proto.gen.containerd.events import task_pb2 as events_pb2
from proto.gen.containerd.services.events.ttrpc.v1 import events_pb2 as forward_pb2
from google.protobuf import empty_pb2
from rund.runtime import events
from rund.runtime.process import Exit, Stdio
from rund.shim.events import EVENTS_SERVICE, EventPublisher, envelope, event_message

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_events_translate_with_containerd_topics_and_ids():
    exit = Exit(3, AT)
    topic, msg = event_message(events.ProcessExited("c1", "c1", 12, exit))
    assert topic == "/tasks/exit" and isinstance(msg, events_pb2.TaskExit)
    assert (msg.container_id, msg.id, msg.pid, msg.exit_status) == ("c1", "c1", 12, 3)
    assert msg.exited_at.ToDatetime(tzinfo=timezone.utc) == AT
    assert event_message(events.ExecStarted("c1", "e1", 5))[0] == "/tasks/exec-started"
    assert event_message(events.TaskDeleted("c1", 12, exit))[0] == "/tasks/delete"
    assert event_message(events.TaskOOM("c1"))[0] == "/tasks/oom"
    assert event_message(events.TaskPaused("c1"))[0] == "/tasks/paused"
    assert event_message(events.TaskResumed("c1"))[0] == "/tasks/resumed"
    assert event_message(events.ExecAdded("c1", "e1"))[0] == "/tasks/exec-added"
    topic, create = event_message(events.TaskCreated("c1", "/b", Stdio("i", "o", "e", True), 9))
    assert topic == "/tasks/create" and create.io.terminal and create.io.stdout == "o" and create.pid == 9


def test_the_envelope_carries_the_bare_type_name_containerd_16_needs():
    req = envelope("ns", "/tasks/oom", events_pb2.TaskOOM(container_id="c"))
    assert req.envelope.event.type_url == "containerd.events.TaskOOM"
    assert (req.envelope.namespace, req.envelope.topic) == ("ns", "/tasks/oom")


class ForwardEndpoint:
    """An Events.Forward server on a unix socket that records what arrives; can refuse or go away."""

    def __init__(self, path: str):
        self.path = path
        self.received: list[tuple[str, str]] = []
        self.refuse_topics: set[str] = set()
        self.server: ttrpc.Server | None = None

    async def Forward(self, ctx, req: forward_pb2.ForwardRequest):
        if req.envelope.topic in self.refuse_topics:
            raise ttrpc.InvalidArgument(f"bad topic {req.envelope.topic}")
        self.received.append((req.envelope.namespace, req.envelope.topic))
        return empty_pb2.Empty()

    async def start(self) -> None:
        self.server = ttrpc.Server()
        self.server.register_service(EVENTS_SERVICE, self)
        await self.server.serve_unix(self.path)

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.shutdown(grace=0.1)
        self.server = None


def order(n: int) -> list[events.Event]:
    return [events.TaskOOM(f"c{i}") for i in range(n)]


async def published(endpoint: ForwardEndpoint, body, backoff: float = 0.01) -> EventPublisher:
    publisher = EventPublisher(endpoint.path, "ns1", backoff=backoff)
    publisher.start()
    try:
        await body(publisher)
    finally:
        await publisher.close(timeout=5)
    return publisher


async def test_events_arrive_in_emit_order_and_close_drains_the_queue(tmp_path):
    endpoint = ForwardEndpoint(str(tmp_path / "ttrpc.sock"))
    await endpoint.start()

    async def body(publisher):
        for event in order(50):
            publisher.emit(event)

    publisher = await published(endpoint, body)
    await endpoint.stop()
    assert [t for _, t in endpoint.received] == ["/tasks/oom"] * 50
    assert {ns for ns, _ in endpoint.received} == {"ns1"}
    stats = publisher.statistics()
    assert (stats.sent, stats.dropped, stats.queued) == (50, 0, 0)


async def test_a_lost_connection_is_redialled_and_nothing_is_lost(tmp_path):
    endpoint = ForwardEndpoint(str(tmp_path / "ttrpc.sock"))
    await endpoint.start()

    async def body(publisher):
        publisher.emit(events.TaskPaused("a"))
        while not endpoint.received:
            await asyncio.sleep(0.01)
        await endpoint.stop()                        # containerd restarts
        publisher.emit(events.TaskResumed("a"))
        await asyncio.sleep(0.05)
        await endpoint.start()

    publisher = await published(endpoint, body)
    await endpoint.stop()
    assert [t for _, t in endpoint.received] == ["/tasks/paused", "/tasks/resumed"]
    assert publisher.statistics().dropped == 0


async def test_an_event_containerd_refuses_is_dropped_not_retried_and_the_rest_go_on(tmp_path):
    endpoint = ForwardEndpoint(str(tmp_path / "ttrpc.sock"))
    endpoint.refuse_topics = {"/tasks/paused"}
    await endpoint.start()

    async def body(publisher):
        publisher.emit(events.TaskPaused("a"))
        publisher.emit(events.TaskOOM("a"))

    publisher = await published(endpoint, body)
    await endpoint.stop()
    assert [t for _, t in endpoint.received] == ["/tasks/oom"]
    assert (publisher.statistics().sent, publisher.statistics().dropped) == (1, 1)


async def test_with_no_endpoint_an_event_is_dropped_after_its_attempts(tmp_path):
    endpoint = ForwardEndpoint(str(tmp_path / "absent.sock"))

    async def body(publisher):
        publisher.emit(events.TaskOOM("a"))

    publisher = await published(endpoint, body)
    assert (publisher.statistics().sent, publisher.statistics().dropped) == (0, 1)


@pytest.mark.parametrize("unknown", [object(), "text"])
def test_an_unknown_event_is_a_programming_error(unknown):
    with pytest.raises(TypeError):
        event_message(unknown)
