"""Events to containerd, all in this file: the runtime's domain events translated to containerd's topics and
messages (event_message), wrapped in its envelope, and sent in order by one owned task to containerd's ttrpc
Forward endpoint.

Order is the order of emit() calls; the runtime emits under containerd's ordering rules (create, start before exit,
exec-added/started, an exec's exit before its init's, exit only after output drained, delete). Like containerd's
own publisher, a failed forward is retried (5 attempts, back-off 1 s x attempt) and the connection re-dialled; the
queue is bounded.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import Message

from proto import ttrpc
from proto.gen.containerd.events import task_pb2 as events_pb2
from proto.gen.containerd.services.events.ttrpc.v1 import events_pb2 as forward_pb2
from proto.gen.containerd.types import mount_pb2
from rund.runtime import events
from rund.shim.timestamps import timestamp

log = logging.getLogger("rund.shim.events")

EVENTS_SERVICE = forward_pb2.DESCRIPTOR.services_by_name["Events"]
QUEUE_SIZE = 2048
ATTEMPTS = 5
FORWARD_TIMEOUT = 5.0


def event_message(event: events.Event) -> tuple[str, object]:
    """A domain event as containerd's (topic, protobuf message)."""
    match event:
        case events.TaskCreated():
            return "/tasks/create", events_pb2.TaskCreate(
                container_id=event.container_id, bundle=event.bundle, pid=event.pid,
                rootfs=[mount_pb2.Mount(type=m.type, source=m.source, target=m.target,
                                        options=m.options) for m in event.rootfs],
                io=events_pb2.TaskIO(stdin=event.stdio.stdin, stdout=event.stdio.stdout,
                                     stderr=event.stdio.stderr, terminal=event.stdio.terminal))
        case events.TaskStarted():
            return "/tasks/start", events_pb2.TaskStart(container_id=event.container_id, pid=event.pid)
        case events.ExecAdded():
            return "/tasks/exec-added", events_pb2.TaskExecAdded(container_id=event.container_id,
                                                                 exec_id=event.exec_id)
        case events.ExecStarted():
            return "/tasks/exec-started", events_pb2.TaskExecStarted(
                container_id=event.container_id, exec_id=event.exec_id, pid=event.pid)
        case events.ProcessExited():
            return "/tasks/exit", events_pb2.TaskExit(
                container_id=event.container_id, id=event.id, pid=event.pid,
                exit_status=event.exit.status, exited_at=timestamp(event.exit.at))
        case events.TaskDeleted():
            return "/tasks/delete", events_pb2.TaskDelete(
                container_id=event.container_id, pid=event.pid, exit_status=event.exit.status,
                exited_at=timestamp(event.exit.at))
        case events.TaskOOM():
            return "/tasks/oom", events_pb2.TaskOOM(container_id=event.container_id)
        case events.TaskPaused():
            return "/tasks/paused", events_pb2.TaskPaused(container_id=event.container_id)
        case events.TaskResumed():
            return "/tasks/resumed", events_pb2.TaskResumed(container_id=event.container_id)
    raise TypeError(f"unknown event {event!r}")


def envelope(namespace: str, topic: str, event: Message) -> forward_pb2.ForwardRequest:
    """Wrap an event; the Any's type URL is the bare full name (containerd 1.6's typeurl needs it so)."""
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    packed = any_pb2.Any(type_url=event.DESCRIPTOR.full_name, value=event.SerializeToString())
    return forward_pb2.ForwardRequest(
        envelope=forward_pb2.Envelope(timestamp=now, namespace=namespace, topic=topic, event=packed))


@dataclass(frozen=True)
class PublisherStatistics:
    queued: int
    sent: int
    dropped: int


class EventPublisher:
    def __init__(self, ttrpc_address: str, namespace: str, backoff: float = 1.0):
        self._address = ttrpc_address
        self._namespace = namespace
        self._backoff = backoff
        self._queue: asyncio.Queue[forward_pb2.ForwardRequest | None] = asyncio.Queue(QUEUE_SIZE)
        self._client: ttrpc.Client | None = None
        self._task: asyncio.Task | None = None
        self._sent = 0
        self._dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="event-publisher")

    def emit(self, event: events.Event) -> None:
        """The runtime's event sink."""
        self.publish(*event_message(event))

    def publish(self, topic: str, event: Message) -> None:
        req = envelope(self._namespace, topic, event)
        try:
            self._queue.put_nowait(req)
        except asyncio.QueueFull:
            self._dropped += 1
            log.error("event queue full, dropping %s", topic)
            return
        log.debug("publish %s %s", topic, event.DESCRIPTOR.name)

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (bounded by timeout), then stop."""
        if self._task is None:
            return
        await self._queue.put(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            log.warning("event publisher did not drain in %.1fs; %d events lost", timeout, self._queue.qsize())
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        await self._disconnect()

    def statistics(self) -> PublisherStatistics:
        return PublisherStatistics(queued=self._queue.qsize(), sent=self._sent, dropped=self._dropped)

    async def _run(self) -> None:
        while True:
            req = await self._queue.get()
            if req is None:
                return
            await self._forward(req)

    async def _forward(self, req: forward_pb2.ForwardRequest) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if self._client is None or self._client.closed:
                    self._client = await ttrpc.Client.connect_unix(self._address)
                await self._client.call(EVENTS_SERVICE.full_name, "Forward", req, empty_pb2.Empty, timeout=FORWARD_TIMEOUT)
                self._sent += 1
                return
            except (OSError, ttrpc.ConnectionClosed, ttrpc.DeadlineExceeded, ttrpc.Unavailable) as e:
                log.warning("forward %s failed (attempt %d/%d): %s", req.envelope.topic, attempt, ATTEMPTS, e)
                await self._disconnect()
            except ttrpc.TtrpcError as e:
                # containerd refused the envelope itself: retrying cannot help.
                log.error("containerd rejected event %s: %s", req.envelope.topic, e)
                self._dropped += 1
                return
            await asyncio.sleep(self._backoff * attempt)
        self._dropped += 1
        log.error("dropping event %s after %d attempts", req.envelope.topic, ATTEMPTS)

    async def _disconnect(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

