"""The order in which containerd receives a task's events, through `ctr events`, for rund and for runc in the same
run: TaskCreate, TaskStart, TaskExecAdded, TaskExecStarted, an exec's TaskExit before its init's, TaskExit before
TaskDelete (containerd's runc shim keeps this order; CRI and ctr rely on it)."""
from __future__ import annotations

import asyncio
import time

import pytest

from integration.ctr_events import CtrEvents
from integration.test_ctr_run import TIMEOUT, wait_status
from rund.runtime import events
from rund.shim.events import EventPublisher

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]

RUNTIMES = {"rund": "io.containerd.rund.v2", "runc": "io.containerd.runc.v2"}


def subscribed(ctd) -> CtrEvents:
    async def probe():
        publisher = EventPublisher(ctd.ttrpc_address, "probe")
        publisher.start()
        publisher.emit(events.TaskOOM("probe"))
        await publisher.close()
    lines = CtrEvents(ctd)
    lines.wait_subscribed(lambda: asyncio.run(probe()), "/tasks/oom")
    return lines


def task_events(seen, cid: str) -> list[tuple[str, str]]:
    """(topic, process id) of the task's events: the exec id for exec events, else the container id."""
    out = []
    for _, topic, body in seen:
        if topic.startswith("/tasks/") and body.get("container_id") == cid:
            out.append((topic, body.get("exec_id") or body.get("id") or cid))
    return out


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_containerd_receives_task_events_in_order(rund_containerd, runtime):
    ctd, cid = rund_containerd, f"order-{runtime}"
    lines = subscribed(ctd)
    try:
        ctd.ctr("run", "-d", "--runtime", RUNTIMES[runtime], ctd.image, cid, "sleep", "600", timeout=TIMEOUT)
        wait_status(ctd, cid, "RUNNING")
        res = ctd.ctr("task", "exec", "--exec-id", "quick", cid, "sh", "-c", "exit 3", check=False)
        assert res.returncode == 3, res.stderr.decode()
        ctd.ctr("task", "exec", "--detach", "--exec-id", "long", cid, "sleep", "600")
        time.sleep(0.5)
        ctd.ctr("task", "kill", "-s", "SIGKILL", cid)         # the long exec dies with the init's pid namespace
        wait_status(ctd, cid, "STOPPED")
        ctd.ctr("task", "rm", cid)
        seen = lines.until(lambda topic, body: topic == "/tasks/delete" and body.get("container_id") == cid
                           and not body.get("exec_id"), 60)
    finally:
        lines.close()
        ctd.ctr("task", "rm", "-f", cid, check=False)
        ctd.ctr("container", "rm", cid, check=False)
    got = task_events(seen, cid)
    assert got[:6] == [("/tasks/create", cid), ("/tasks/start", cid),
                       ("/tasks/exec-added", "quick"), ("/tasks/exec-started", "quick"), ("/tasks/exit", "quick"),
                       ("/tasks/exec-added", "long")], got
    rest = got[6:]
    assert rest[0] == ("/tasks/exec-started", "long"), got
    exits = [pid for topic, pid in rest if topic == "/tasks/exit"]
    assert exits == ["long", cid], got                      # the exec's exit before its init's
    assert rest[-1] == ("/tasks/delete", cid), got          # and the init's exit before the delete
    assert rest.index(("/tasks/exit", cid)) < rest.index(("/tasks/delete", cid))
