"""Spare VMs: clones of the current template started, restored and warmed ahead of time, each handed to exactly one
sandbox when it starts (Kata Containers' VMCache idea).

Why: under TCG most of a clone's start is QEMU translating guest code it runs for the first time (a fresh QEMU
process has an empty translation cache). A spare has restored, done its PostRestore (clock, RNG) and run one
container of the guest OS image already, so the pod's own steps run at a warm VM's speed (measured: a container's
create+start+exit 296 ms in a fresh clone, 96 ms in one that ran a container before). The work is the same; it is
done before the pod asks. A spare never ran anything of a tenant's: it is new, and it goes to one pod only.

    python -m rund.runtime.spares '<request json>'     (started by a sandbox that found none; never by hand)

One keeper process per template key and state dir (a flock): it keeps `[templates] spare_vms` spares ready, each in
its own directory under <state_dir>/spares/<key>/, making at most one per host CPU at a time, and serves `take` (and
`stats`, its pool's counts) on keeper.sock there (0600, root peers only).
A take hands over the spare's QMP connection (SCM_RIGHTS) and names its directory, QEMU's pid and its tap; the
keeper then forgets it (it stays QEMU's parent and reaps it once it exits) and starts another.

Ownership: a spare's QEMU has no death signal (it must outlive the keeper once handed over), so the keeper stops
its unhanded spares when it exits (SIGTERM, idle for `[templates] spare_idle_exit_s`, its template gone), and a
keeper that starts kills what a killed one left (found by QEMU's command line). Spare QEMUs run in the keeper's
cgroup and network namespace (a private one: their taps live there until a sandbox moves its tap into the pod's
netns); a sandbox moves its QEMU into its own cgroup, where new charges land (cgroup v1 does not move old ones).
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rund.agent import Interface, IPAddress, NetworkConfig, Route
from rund.hypervisor import HypervisorError
from rund.hypervisor.paths import VMPaths
from rund.peercred import peer_credentials
from rund.procfs import argvs
from rund.resources.network import netns
from rund.resources.network.tap import open_tap
from rund.runtime.admission import Admission, slot_count
from rund.runtime.pod_network import GUEST_NIC
from rund.runtime.volumes import prepare as prepare_share
from rund.runtime.volumes import teardown as teardown_share
from rund.templates.build import warm_agent
from rund.templates.builder import shape_from_json
from rund.templates.clone import clone_vm
from rund.templates.store import TemplateStore

log = logging.getLogger("rund.runtime.spares")

KEEPER_SOCKET = "keeper.sock"
KEEPER_LOCK = "keeper.lock"
KEEPER_LOG = "keeper.log"
SPARE_PREFIX = "spare-"
TAKE_TIMEOUT = 2.0             # a take is a local round trip; a keeper that does not answer is skipped
CHECK_EVERY_S = 5.0            # the keeper looks this often for handed-over VMs to reap and its template
RETRY_AFTER_S = 10.0           # after a failed spare start
# The keeper and its spares run at the lowest priority: making spares uses what CPU pods leave (a burst of starts
# is not slowed by refills), and a taken spare's threads are set back to 0 (renice).
SPARE_NICE = 19
QUIET_POLL_S = 0.25           # how often a refill looks whether pod starts are still running
WARM_IMAGE = "warm-image.img"  # the guest OS image at a rootfs slot's size: the warm-up's hotplugged rootfs
WARM_MEMORY_TIMEOUT_S = 10.0   # measured: one 2 MiB block plugged in ~15 ms and unplugged in ~50 ms under TCG
REFILL_DELAY_S = 1.0           # a new spare starts this long after a take: the taker's pod is starting meanwhile
# Spares made at once: one per host CPU. A clone's restore and warm-up are CPU-bound (TCG), so more side by side only
# stretch each one's guest timeouts; a large pool (a class sized for bursts) fills a few at a time.
PARALLEL_STARTS = max(1, os.cpu_count() or 1)


# The warm-up's network identity, given with the spare's PostRestore: a pod's is applied the same way (link down,
# MAC, addresses, up, routes), so the guest's kernel (netlink, virtio-net open, addrconf) and the agent's code for
# it are translated before the pod asks; a spare that never configured one spent 62-70 ms of guest CPU on the pod's.
# Documentation addresses (RFC 5737) and a locally administered MAC; the pod's apply takes the link down first,
# which drops the route, and flushes the address.
WARM_NETWORK = NetworkConfig(
    interfaces=(Interface(GUEST_NIC, "02:00:c0:00:02:02", 1500, (IPAddress("192.0.2.2", 24),)),),
    routes=(Route("", "192.0.2.1", GUEST_NIC),))


def root_for(state_dir: Path, key: str) -> Path:
    return Path(state_dir) / "spares" / key


@dataclass
class Spare:
    """A spare VM taken from its keeper: its directory (the VM's files), QEMU's pid, the QMP connection's fd (ours to
    close or adopt), its tap's name in the keeper's netns, and an fd of that netns (held open so the tap's netns
    outlives a keeper that exits before the tap moved)."""
    name: str
    dir: Path
    pid: int
    qmp_fd: int
    tap: str
    netns_fd: int
    plugged: int = 0            # rootfs hotplug slots its warm-up took (the pod's images go in the next ones)

    @property
    def netns_path(self) -> str:
        return f"/proc/{os.getpid()}/fd/{self.netns_fd}"

    def close(self) -> None:
        for fd in (self.qmp_fd, self.netns_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.qmp_fd = self.netns_fd = -1


# ---- the client side (a shim's launcher) ------------------------------------------------------------------------

def take(root: Path, timeout: float = TAKE_TIMEOUT) -> Spare | None:
    """A ready spare from the keeper of `root`, or None (no keeper, none ready, or it did not answer in time)."""
    path = root / KEEPER_SOCKET
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        keeper_pid, uid, _ = peer_credentials(sock)
        if uid != 0:
            log.warning("spare VM keeper %s runs as uid %d, not root: not taking from it", path, uid)
            return None
        netns_fd = os.open(f"/proc/{keeper_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            sock.sendall(b"take\n")
            msg, fds, _, _ = socket.recv_fds(sock, 4096, 1)
        except BaseException:
            os.close(netns_fd)
            raise
    except (OSError, ValueError) as e:
        log.info("no spare VM from %s: %s", path, e)
        return None
    finally:
        sock.close()
    try:
        answer = json.loads(msg)
        if "none" in answer:
            raise ValueError(answer["none"])
        (qmp_fd,) = fds
        return Spare(answer["name"], Path(answer["dir"]), int(answer["pid"]), qmp_fd, answer["tap"], netns_fd,
                     int(answer.get("plugged", 0)))
    except (ValueError, KeyError, TypeError) as e:
        for fd in (*fds, netns_fd):
            os.close(fd)
        log.info("no spare VM from %s: %s", path, e)
        return None


def keeper_request(cfg, launcher, root: Path) -> dict:
    """What a keeper of `cfg`'s spares for `launcher`'s template needs: the template, the pool's size, and the node's
    start slots (it makes spares only while no pod start holds one)."""
    request = launcher.spare_request(cfg.templates.spare_vms, root)
    request.update(admission_dir=str(Path(cfg.state_dir) / "admission"),
                   admission_slots=slot_count(cfg.admission.max_starts),
                   idle_exit_s=cfg.templates.spare_idle_exit_s)
    return request


def statistics(root: Path, timeout: float = TAKE_TIMEOUT) -> dict | None:
    """The keeper's pool: {"count", "ready", "starting", "handed", "taken", "failed"}; None when no keeper answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(root / KEEPER_SOCKET))
            sock.sendall(b"stats\n")
            with sock.makefile("rb") as f:
                return json.loads(f.readline())
        except (OSError, ValueError):
            return None


def keeper_pid(root: Path) -> int | None:
    """The pid of the keeper serving `root` (its socket's peer), or None."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TAKE_TIMEOUT)
        try:
            sock.connect(str(root / KEEPER_SOCKET))
        except OSError:
            return None
        return peer_credentials(sock).pid


def keeper_running(root: Path) -> bool:
    """Whether a keeper holds the lock of `root` (a cheap check before spawning one)."""
    lock = root / KEEPER_LOCK
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def spawn_keeper(request: dict, root: Path):
    """Start a detached keeper (its log: <root>/keeper.log); the caller reaps it (the sandbox watches its pidfd)."""
    import subprocess
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(root / KEEPER_LOG, "ab") as log_file:
        return subprocess.Popen([sys.executable, "-m", "rund.runtime.spares", json.dumps(request)],
                                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, cwd="/")


def renice(pid: int, niceness: int = 0) -> None:
    """Every thread of the process to `niceness` (nice is per thread): a spare's QEMU, started at the keeper's
    SPARE_NICE, gets a pod's priority back when a sandbox takes it."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, int(tid), niceness)


def kill(spare: Spare) -> None:
    """A spare taken but not adopted (the sandbox failed before): its QEMU killed through a pidfd (never a
    recycled pid); its directory goes with the sandbox's, or with the next keeper's leftovers."""
    try:
        fd = os.pidfd_open(spare.pid)
    except ProcessLookupError:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


# ---- the keeper -------------------------------------------------------------------------------------------------

@dataclass
class _Ready:
    name: str
    dir: Path
    vm: object          # QemuVM
    tap: str
    plugged: int = 0    # rootfs hotplug slots the warm-up took


class Keeper:
    def __init__(self, request: dict):
        self.shape = shape_from_json(request["shape"])
        self.store = TemplateStore(Path(request["store"]))
        self.key: str = request["key"]
        self.placeholder = Path(request["placeholder"])
        self.count: int = request["count"]
        self.root = Path(request["root"])
        self.idle_exit_s: float = request.get("idle_exit_s", 600.0)    # 0: never
        # The node's start slots: a spare is made only while no pod start holds one (a burst is not slowed by
        # refills, which would only give it spares after it is over).
        self.starts = Admission(Path(request["admission_dir"]), request["admission_slots"], 1.0) \
            if request.get("admission_dir") else None
        self.ready: list[_Ready] = []
        self.starting = 0
        self.parallel = min(self.count, PARALLEL_STARTS)
        self.handed: set[int] = set()          # QEMUs given away: ours to reap
        self.taken = 0                          # spares handed over since the keeper started
        self.failed = 0                         # spare starts that failed
        self.last_take = time.monotonic()
        self.stop = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    async def run(self, server: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        srv = await asyncio.start_unix_server(self._serve, sock=server)
        self._fill()
        try:
            while not self.stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), CHECK_EVERY_S)
                self._reap()
                why = self._retire()
                if why:
                    log.info("keeper exits: %s", why)
                    break
        finally:
            srv.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.gather(*(self._discard(r) for r in self.ready), return_exceptions=True)
            self.ready.clear()
            (self.root / WARM_IMAGE).unlink(missing_ok=True)   # spares handed over keep their mapping of it

    def _retire(self) -> str | None:
        if self.idle_exit_s and time.monotonic() - self.last_take > self.idle_exit_s:
            return f"no spare taken for {self.idle_exit_s:.0f} s"
        if not (self.store.root / self.key).exists():
            return f"template {self.key} is gone"
        return None

    def statistics(self) -> dict:
        return {"count": self.count, "ready": len(self.ready), "starting": self.starting,
                "handed": len(self.handed), "taken": self.taken, "failed": self.failed}

    def _fill(self, delay: float = 0.0) -> None:
        while (len(self.ready) + self.starting < self.count and self.starting < self.parallel
               and not self.stop.is_set()):
            self.starting += 1
            task = asyncio.get_running_loop().create_task(self._start_one(delay))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start_one(self, delay: float) -> None:
        name = SPARE_PREFIX + secrets.token_hex(6)
        d = self.root / name
        tap = "rs" + name[len(SPARE_PREFIX):]       # 14 characters: under IFNAMSIZ
        vm = None
        try:
            await asyncio.sleep(delay)
            while self.starts is not None and self.starts.in_use():
                await asyncio.sleep(QUIET_POLL_S)
            d.mkdir(mode=0o700)
            prepare_share(VMPaths(d).share)     # a private self-bind before QEMU opens it (volumes.py)
            template = self.store.get(self.key)
            tap_fd = open_tap(tap)
            try:
                t0 = time.monotonic()
                vm, agent, _ = await clone_vm(self.shape, template, name, d, (), self.placeholder, tap_fd=tap_fd,
                                              network=WARM_NETWORK, die_with_owner=False)
            finally:
                os.close(tap_fd)            # QEMU holds its own: the tap lives as long as the VM
            try:
                plugged = await self._warm(vm, agent)
            finally:
                await agent.close()         # the taker connects anew (QEMU serves the agent channel)
            self.ready.append(_Ready(name, d, vm, tap, plugged))
            vm = None
            log.info("spare %s ready (pid %s) in %.2f s", name, self.ready[-1].vm.pid, time.monotonic() - t0)
        except BaseException as e:
            if vm is not None:
                with contextlib.suppress(Exception):
                    await vm.stop(timeout=2.0)
            _remove_dir(d)
            if not isinstance(e, Exception):
                raise                       # cancelled: the keeper is stopping
            self.failed += 1
            log.warning("spare %s failed: %s", name, e)
            await asyncio.sleep(RETRY_AFTER_S)
        finally:
            self.starting -= 1
        self._fill()

    async def _warm(self, vm, agent) -> int:
        """Run the pod's start path once in the spare: its container's rootfs on a hotplugged pmem image (as the
        pod's image arrives), then a virtio-mem plug of one block and back (as the pod's memory grows). Returns the
        rootfs hotplug slots the warm-up took (the pod's images go in the next ones: a spare class's shape has one
        more, see templates/shape.py)."""
        plugged, base = 0, None
        if self.shape.rootfs_hotplug_slots and self.shape.image_bytes <= self.shape.rootfs_slot_bytes:
            await vm.hotplug_pmem(0, await asyncio.to_thread(self._warm_image))
            plugged, base = 1, self.shape.rootfs_device(self.shape.rootfs_slots)
        await warm_agent(agent, self.shape, base_device=base)
        hot = vm.spec.memory_hotplug
        if hot is not None and hot.requested_size + hot.block_size <= hot.size:
            await vm.resize_memory(hot.requested_size + hot.block_size, timeout=WARM_MEMORY_TIMEOUT_S)
            if await vm.resize_memory(hot.requested_size, timeout=WARM_MEMORY_TIMEOUT_S) != hot.requested_size:
                raise HypervisorError(f"the guest did not unplug its warm-up block within {WARM_MEMORY_TIMEOUT_S} s")
        return plugged

    def _warm_image(self) -> Path:
        """The guest OS image padded to a rootfs slot's size (sparse), for the warm-up's hotplug: made once per
        keeper, in its directory; each spare's QEMU maps what its erofs holds, read-only."""
        path = self.root / WARM_IMAGE
        if not path.exists():
            tmp = self.root / f"{WARM_IMAGE}.{secrets.token_hex(4)}.tmp"     # spares start side by side
            shutil.copyfile(self.shape.image, tmp)
            os.truncate(tmp, self.shape.rootfs_slot_bytes)
            os.rename(tmp, path)
        return path

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock: socket.socket = writer.get_extra_info("socket")
        try:
            if peer_credentials(sock).uid != 0:
                return
            line = (await asyncio.wait_for(reader.readline(), TAKE_TIMEOUT)).strip()
            if line == b"stats":
                self._send(sock, self.statistics(), [])
                return
            if line != b"take":
                return
            self.last_take = time.monotonic()
            if not self.ready:
                self._send(sock, {"none": "no spare ready"}, [])
                return
            spare = self.ready.pop(0)
            self._fill(REFILL_DELAY_S)
            pid = spare.vm.pid
            try:
                fd = await spare.vm.hand_over()
            except Exception:
                await self._discard(spare)
                raise
            self.handed.add(pid)            # ours to reap from here on, whoever ends it
            self.taken += 1
            try:
                self._send(sock, {"name": spare.name, "dir": str(spare.dir), "pid": pid, "tap": spare.tap,
                                  "plugged": spare.plugged}, [fd])
            except BaseException:
                os.kill(pid, signal.SIGKILL)  # our unreaped child: never a recycled pid
                _remove_dir(spare.dir)
                raise
            finally:
                os.close(fd)
            log.info("spare %s (pid %s) handed over", spare.name, pid)
        except (OSError, asyncio.TimeoutError, HypervisorError) as e:
            log.warning("a take failed: %s", e)
        finally:
            writer.close()

    @staticmethod
    def _send(transport_sock, msg: dict, fds: list[int]) -> None:
        """One short message (with fds) on the connection, blocking: a copy of the asyncio transport's socket."""
        with socket.socket(fileno=os.dup(transport_sock.fileno())) as sock:
            sock.settimeout(TAKE_TIMEOUT)
            socket.send_fds(sock, [json.dumps(msg).encode() + b"\n"], fds)

    def _reap(self) -> None:
        for pid in list(self.handed):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.handed.discard(pid)

    async def _discard(self, spare: _Ready) -> None:
        with contextlib.suppress(Exception):
            await spare.vm.stop(timeout=2.0)
        _remove_dir(spare.dir)


def _remove_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        if d.exists() and teardown_share(VMPaths(d).share):     # never rmtree through a bind mount
            shutil.rmtree(d, ignore_errors=True)


def kill_leftovers(root: Path) -> int:
    """Spares a killed keeper left (no death signal: see the module doc): every QEMU whose command line names a
    spare directory still under `root` is killed (a taken spare's directory is in its sandbox's now, so its VM is
    never hit), then those directories go. Found by command line, not by a pid file: a keeper killed between
    QEMU's start and writing anything down leaves nothing else."""
    killed = 0
    marker = f"{root}/".encode()
    prefix = SPARE_PREFIX.encode()
    for pid, argv in argvs():
        dirs = {a[a.index(marker) + len(marker):].split(b"/")[0] for a in argv if marker + prefix in a}
        if dirs and any((root / d.decode(errors="replace")).is_dir() for d in dirs):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    for d in root.glob(SPARE_PREFIX + "*"):
        _remove_dir(d)
    return killed


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s keeper[{os.getpid()}] %(levelname)s %(message)s")
    logging.getLogger("qemu.qmp").setLevel(logging.WARNING)
    request = json.loads(argv[0])
    root = Path(request["root"])
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = os.open(root / KEEPER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0                            # another keeper serves this root
    if n := kill_leftovers(root):
        log.info("killed %d spare VMs a previous keeper left", n)
    os.nice(SPARE_NICE)
    netns.unshare()             # the spares' taps live here until a sandbox moves its own into the pod's netns
    path = root / KEEPER_SOCKET
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    server.listen(16)
    log.info("keeper of %s: %d spare VMs", root, request["count"])
    try:
        asyncio.run(Keeper(request).run(server))
    finally:
        path.unlink(missing_ok=True)
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
