"""A group shim's dispatch and capacity (rund/shim/group.py, group_start.py), without root and without VMs: a real
Group on real unix sockets and real ttrpc, the start side's real hand-over and key lock; the runtime behind each
sandbox is an in-memory double of our own domain interface. What runs a real containerd and real VMs is in
integration/test_shim_groups.py."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from proto import ttrpc
from proto.gen.containerd.task.v2 import shim_pb2
from rund import errors
from rund.ops.sandboxes import SandboxView, share_shims
from rund.runtime import telemetry
from rund.runtime.process import Status
from rund.runtime.task_runtime import ProcessView
from rund.shim import client, group_registry, group_start
from rund.shim.group import Group
from rund.shim.logs import RoutingHandler
from rund.shim.socket_file import SocketFile
from rund.shim.task_service import TASK_SERVICE


class Runtime:
    """One sandbox's runtime: containers by id; records which sandbox each call ran as."""

    def __init__(self, namespace, sandbox_id, emit):
        self.sandbox_id = sandbox_id
        self.containers: dict[str, ProcessView] = {}
        self.seen_as: list[str | None] = []
        self.closed = False

    async def create(self, req):
        self.seen_as.append(telemetry.current_sandbox())
        if req.id in self.containers:
            raise errors.AlreadyExists(req.id)
        self.containers[req.id] = ProcessView(req.bundle, 0, Status.CREATED, req.stdio, None)
        return 1000 + len(self.containers)

    def state(self, cid, eid):
        self.seen_as.append(telemetry.current_sandbox())
        try:
            return self.containers[cid]
        except KeyError:
            raise errors.NotFound(f"container {cid} not created in {self.sandbox_id}") from None

    async def delete(self, cid, eid):
        self.containers.pop(cid)
        return 0, None

    def task_pid(self, cid):
        return 1

    def has_containers(self):
        return bool(self.containers)

    async def close(self):
        self.closed = True


class Harness:
    """A Group on a loop of its own thread, sockets in `tmp`."""

    def __init__(self, tmp, capacity, idle_timeout=30.0, stale=lambda: None):
        self.tmp = tmp
        self.runtimes: dict[str, Runtime] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        def make(ns, sid, emit):
            self.runtimes[sid] = Runtime(ns, sid, emit)
            return self.runtimes[sid]

        async def build():
            return Group("ns", capacity, make, lambda e: None, idle_timeout, self.path, stale=stale)
        self.group = self.call(build())
        self.control = str(tmp / "ctl" / "g1.sock")
        os.makedirs(tmp / "ctl", exist_ok=True)
        sock, sfile = group_start.listen_control(str(tmp / "ctl"))
        os.rename(sfile.path, self.control)
        sfile.path = self.control

        async def serve():
            self.group.serve_control(sock, sfile)
        self.call(serve())

    def path(self, sandbox_id: str) -> str:
        return str(self.tmp / f"{sandbox_id}.sock")

    def call(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def offer(self, sandbox_id: str, bind_at: str | None = None) -> str:
        """What a `start` of `sandbox_id` gets from the group: adopted, refused or lost."""
        sock, sfile = bind(bind_at or self.path(sandbox_id))
        outcome = group_start.hand_over(self.control, sandbox_id, self.path(sandbox_id), sock, sfile,
                                        str(self.tmp))
        if outcome != group_start.ADOPTED:
            sfile.remove()
        sock.close()
        sfile.close()
        return outcome

    def stop(self):
        async def end():
            self.group.stop_all("test over")
            await self.group.wait_empty()
        self.call(end())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def bind(path: str) -> tuple[socket.socket, SocketFile]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(16)
    return sock, SocketFile(path)


@pytest.fixture
def harness(tmp_path):
    made = []

    def make(capacity, **kw):
        made.append(Harness(tmp_path, capacity, **kw))
        return made[-1]
    yield make
    for h in made:
        h.stop()


async def task_call(path: str, method: str, req, resp_type):
    async with await ttrpc.Client.connect_unix(path) as c:
        return await c.call(TASK_SERVICE.full_name, method, req, resp_type, timeout=5)


def create(path: str, cid: str):
    return asyncio.run(task_call(path, "Create", shim_pb2.CreateTaskRequest(id=cid, bundle=f"/b/{cid}"),
                                 shim_pb2.CreateTaskResponse))


def state(path: str, cid: str):
    return asyncio.run(task_call(path, "State", shim_pb2.StateRequest(id=cid), shim_pb2.StateResponse))


def shutdown(path: str, cid: str):
    from google.protobuf import empty_pb2
    return asyncio.run(task_call(path, "Shutdown", shim_pb2.ShutdownRequest(id=cid), empty_pb2.Empty))


def test_a_group_takes_pods_up_to_its_capacity_and_not_one_twice(harness):
    h = harness(2)
    assert h.offer("a") == group_start.ADOPTED
    assert h.offer("a", bind_at=str(h.tmp / "again.sock")) == group_start.REFUSED
    assert h.offer("b") == group_start.ADOPTED
    assert h.offer("c") == group_start.REFUSED
    assert sorted(h.group.members) == ["a", "b"]


def test_each_sandbox_socket_reaches_its_own_runtime_as_that_sandbox(harness):
    h = harness(4)
    for sid in ("a", "b"):
        assert h.offer(sid) == group_start.ADOPTED
    assert create(h.path("a"), "a").pid == 1001
    assert create(h.path("a"), "a-app").pid == 1002      # a pod member: through its sandbox's socket
    assert create(h.path("b"), "b").pid == 1001
    assert sorted(h.runtimes["a"].containers) == ["a", "a-app"]
    assert sorted(h.runtimes["b"].containers) == ["b"]
    assert state(h.path("b"), "b").bundle == "/b/b"
    with pytest.raises(ttrpc.NotFound):
        state(h.path("b"), "a")                          # another pod's container is not this socket's
    assert set(h.runtimes["a"].seen_as) == {"a"} and set(h.runtimes["b"].seen_as) == {"b"}


def test_shutdown_of_one_pod_leaves_the_others_served_and_the_last_one_ends_the_group(harness):
    h = harness(4)
    for sid in ("a", "b"):
        assert h.offer(sid) == group_start.ADOPTED
    create(h.path("a"), "a")
    create(h.path("b"), "b")
    shutdown(h.path("a"), "a")                           # a task remains: a no-op
    assert sorted(h.group.members) == ["a", "b"]
    h.runtimes["a"].containers.clear()                   # its Delete
    shutdown(h.path("a"), "a")
    h.call(asyncio.sleep(0.3))
    assert sorted(h.group.members) == ["b"] and h.runtimes["a"].closed
    assert not os.path.exists(h.path("a"))               # its socket went with it
    assert state(h.path("b"), "b").id == "b"
    assert os.path.exists(h.control)                     # still takes pods
    assert h.offer("c") == group_start.ADOPTED
    h.runtimes["b"].containers.clear()
    shutdown(h.path("b"), "b")
    shutdown(h.path("c"), "c")
    h.call(asyncio.wait_for(h.group.wait_empty(), 5))
    assert not os.path.exists(h.control)                 # gone before it decided to exit
    assert group_start.hand_over(h.control, "d", "x", *bind(h.path("d")), str(h.tmp)) == group_start.REFUSED


def test_a_pod_nobody_creates_leaves_after_the_idle_timeout(harness):
    h = harness(4, idle_timeout=0.3)
    assert h.offer("a") == group_start.ADOPTED
    assert h.offer("b") == group_start.ADOPTED
    create(h.path("b"), "b")
    h.call(asyncio.sleep(1.0))
    assert sorted(h.group.members) == ["b"]


def test_a_group_whose_code_changed_on_disk_takes_no_new_pod(harness, tmp_path):
    from rund.shim import codefiles
    module = tmp_path / "mod.py"
    module.write_text("x = 1\n")
    files = {str(module): _stat(module)}        # as codefiles.snapshot() records an imported module's file
    h = harness(4, stale=lambda: codefiles.changed(files))
    assert h.offer("a") == group_start.ADOPTED
    module.write_text("x = 2  # upgraded\n")
    assert h.offer("b") == group_start.REFUSED
    assert list(h.group.members) == ["a"]


def _stat(path):
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def test_concurrent_starts_never_overfill_a_group(harness):
    h = harness(3)
    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(h.offer, [f"p{i}" for i in range(12)]))
    assert outcomes.count(group_start.ADOPTED) == 3 and len(h.group.members) == 3


def test_a_request_for_another_path_or_a_bad_id_is_refused(harness, tmp_path):
    h = harness(4)
    sock, sfile = bind(str(tmp_path / "elsewhere.sock"))
    assert group_start.hand_over(h.control, "a", sfile.path, sock, sfile, str(tmp_path)) == group_start.REFUSED
    sock2, sfile2 = bind(h.path("x"))
    assert group_start.hand_over(h.control, "../x", sfile2.path, sock2, sfile2, str(tmp_path)) == \
        group_start.REFUSED
    sock3 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)    # bound, not listening: nothing to serve on
    sock3.bind(h.path("y"))
    assert group_start.hand_over(h.control, "y", h.path("y"), sock3, SocketFile(h.path("y")), str(tmp_path)) == \
        group_start.REFUSED
    assert h.group.members == {}


def test_place_spawns_a_group_when_none_has_room_and_removes_dead_control_sockets(tmp_path):
    state_dir = tempfile.mkdtemp(prefix="grp", dir="/tmp")     # a socket path has at most 107 bytes
    key = group_registry.group_key("/ctd.sock", "ns", "/etc/rund/x.toml")
    directory = group_registry.key_dir(state_dir, key)
    os.makedirs(directory)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(os.path.join(directory, "0dead.sock"))     # bound, never listening: a killed group's
    dead.close()
    spawned = []

    def spawn(sock, sfile, g, also_close):
        spawned.append((g.capacity, g.workdir, also_close))
        g.control_file.remove()
        g.control.close()
        sfile.remove()
        sock.close()
    path = str(tmp_path / "a.sock")
    assert group_start.place("a", path, bind(path), str(tmp_path), state_dir, key, 4, bind, spawn) is False
    assert [(c, w) for c, w, _ in spawned] == [(4, directory)]
    assert not os.path.exists(os.path.join(directory, "0dead.sock"))
    assert len(spawned[0][2]) == 1                       # the key's lock: closed in the new shim
    shutil.rmtree(state_dir)


def test_a_full_group_marks_its_control_socket_until_a_pod_leaves(harness):
    h = harness(2)
    assert h.offer("a") == group_start.ADOPTED and not group_registry.marked_full(h.control)
    assert h.offer("b") == group_start.ADOPTED and group_registry.marked_full(h.control)
    assert h.offer("c") == group_start.REFUSED            # the mark is a hint: the group still decides
    shutdown(h.path("a"), "a")                           # no task: it leaves
    h.call(asyncio.sleep(0.3))
    assert sorted(h.group.members) == ["b"] and not group_registry.marked_full(h.control)
    assert h.offer("c") == group_start.ADOPTED and group_registry.marked_full(h.control)


def test_place_passes_a_group_marked_full_without_asking_it(tmp_path):
    state_dir = tempfile.mkdtemp(prefix="grp", dir="/tmp")
    key = group_registry.group_key("/ctd.sock", "ns", "/etc/rund/x.toml")
    directory = group_registry.key_dir(state_dir, key)
    os.makedirs(directory)
    full = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    full.bind(os.path.join(directory, "full.sock"))
    full.listen(4)
    full.setblocking(False)
    group_registry.mark_full(full.getsockname(), True)
    spawned = []

    def spawn(sock, sfile, g, also_close):
        spawned.append(g.capacity)
        g.control_file.remove()
        g.control.close()
        sfile.remove()
        sock.close()
    path = str(tmp_path / "a.sock")
    try:
        assert group_start.place("a", path, bind(path), str(tmp_path), state_dir, key, 4, bind, spawn) is False
        assert spawned == [4]
        with pytest.raises(BlockingIOError):
            full.accept()                                # nobody connected to the full group
        assert os.path.exists(full.getsockname())        # alive: not swept as dead
    finally:
        full.close()
        shutil.rmtree(state_dir)


def test_group_keys_differ_by_containerd_namespace_and_config():
    k = group_registry.group_key("/a", "ns", "/c.toml")
    assert k == group_registry.group_key("/a", "ns", "/c.toml")
    assert len({k, group_registry.group_key("/b", "ns", "/c.toml"), group_registry.group_key("/a", "n2", "/c.toml"),
                group_registry.group_key("/a", "ns", "/d.toml")}) == 4


def test_group_settings(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('state_dir = "/run/x"\n[shim]\npods_per_shim = 8\n')
    assert client.group_settings(str(f)) == (8, "/run/x")
    for bad in ("pods_per_shim = 0", "pods_per_shim = 65", 'pods_per_shim = "4"', "pods_per_shim = true"):
        f.write_text(f"[shim]\n{bad}\n")
        assert client.group_settings(str(f)) == (1, "")
    f.write_text("[shim]\nfork_server = false\n")
    assert client.group_settings(str(f)) == (1, client.DEFAULT_STATE_DIR)
    assert client.group_settings("") == (1, "")
    assert client.group_settings(str(tmp_path / "missing.toml")) == (1, "")


def test_records_and_log_lines_go_to_the_sandbox_a_task_works_for(tmp_path, monkeypatch):
    monkeypatch.setattr(telemetry, "_bound", None)
    monkeypatch.setattr(telemetry, "_bound_to", {})
    monkeypatch.setattr(telemetry, "_guest_memory", {})
    for sid in ("a", "b"):
        (tmp_path / "ns" / sid).mkdir(parents=True)
        telemetry.bind(tmp_path, "ns", sid)

    async def stats(sid, cid, n):
        telemetry.serving(sid)
        telemetry.record_guest_memory(cid, n)
        telemetry.record_error("Kill", "NOT_FOUND")

    async def both():
        await asyncio.gather(stats("a", "a1", 1), stats("b", "b1", 2))
    asyncio.run(both())
    assert json.loads((tmp_path / "ns" / "a" / telemetry.GUEST_MEMORY).read_text())["containers"] == {"a1": 1}
    assert json.loads((tmp_path / "ns" / "b" / telemetry.GUEST_MEMORY).read_text())["containers"] == {"b1": 2}
    spooled = [json.loads(line)["sb"] for line in open(telemetry.spool_path(tmp_path))]
    assert sorted(spooled) == ["a", "b"]

    bundles = {}
    for sid in ("a", "b"):
        bundles[sid] = tmp_path / f"bundle-{sid}"
        bundles[sid].mkdir()
        (bundles[sid] / "log").write_text("")          # a file stands in for containerd's FIFO
    current = {"sid": None}
    router = RoutingHandler(lambda: current["sid"])
    router.setFormatter(logging.Formatter("%(message)s"))
    for sid in ("a", "b"):
        router.add(sid, str(bundles[sid]))
    for sid, text in (("a", "about a"), ("b", "about b"), (None, "the group's")):
        current["sid"] = sid
        router.handle(logging.LogRecord("x", logging.INFO, "", 0, text, None, None))
    router.remove("a")                                   # its pod was deleted: the group's lines go to b's
    current["sid"] = None
    router.handle(logging.LogRecord("x", logging.INFO, "", 0, "later", None, None))
    router.close()
    assert (bundles["a"] / "log").read_text() == "about a\nthe group's\n"
    assert (bundles["b"] / "log").read_text() == "about b\nlater\n"


def view(sid: str, shim_pid: int, alive: bool = True, pss: int | None = 900, cpu: float | None = 3.0):
    return SandboxView("ns", sid, "running", (sid,), None, "clone", shim_pid, alive, 1, True, 100, pss, 1.0, cpu,
                       None)


def test_rund_ps_shares_a_group_shims_memory_and_cpu_out_among_its_sandboxes():
    views = share_shims([view("a", 10), view("b", 10), view("c", 10), view("d", 11), view("e", 10, alive=False)])
    got = {v.id: (v.shim_pss_bytes, v.shim_cpu_seconds, v.shim_sandboxes) for v in views}
    assert got == {"a": (300, 1.0, 3), "b": (300, 1.0, 3), "c": (300, 1.0, 3), "d": (900, 3.0, 1),
                   "e": (900, 3.0, 1)}
    assert sum(v.pss_bytes for v in views[:3]) == 3 * 100 + 900


def test_the_config_takes_pods_per_shim_in_range(tmp_path):
    from rund import config
    f = tmp_path / "c.toml"
    f.write_text("[shim]\npods_per_shim = 8\n")
    assert config.load(f).shim.pods_per_shim == 8
    assert config.Config().shim.pods_per_shim == 1
    for bad in (0, config.MAX_PODS_PER_SHIM + 1):
        f.write_text(f"[shim]\npods_per_shim = {bad}\n")
        with pytest.raises(errors.InvalidArgument):
            config.load(f)


def test_a_state_dir_too_long_for_a_control_socket_keeps_a_shim_per_pod():
    assert group_registry.fits("/run/rund")
    assert not group_registry.fits("/" + "d" * 60)
