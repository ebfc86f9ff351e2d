"""The shim daemon: one asyncio loop serving the Task API for one sandbox (a pod) until Shutdown, a signal, or
until nobody uses it (idle.py). Its working directory stays the bundle `start` ran in: peer.py reads it.
serve_group: the same for a group of sandboxes (group.py), until the last one left."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

from proto import ttrpc
from typing import Callable

from rund.runtime import telemetry
from rund.runtime.events import EventSink
from rund.runtime.task_runtime import TaskRuntime
from rund.shim import handshake, idle, logs, trim
from rund.shim.events import EventPublisher
from rund.shim.flags import ShimArgs
from rund.shim.socket_file import SocketFile
from rund.shim.task_service import TASK_SERVICE, TaskService

log = logging.getLogger("rund.shim")


RuntimeFactory = Callable[[str, str, EventSink], TaskRuntime]   # (namespace, sandbox_id, emit) -> runtime


def serve(args: ShimArgs, sock: socket.socket, socket_file: SocketFile, bundle: str, sandbox_id: str,
          make_runtime: RuntimeFactory, parent: socket.socket | None = None,
          idle_timeout: float = idle.IDLE_TIMEOUT) -> int:
    """`parent`: start's end of the handshake; serving begins only once start said go."""
    logs.setup(bundle, args.debug)
    try:
        if parent is not None:
            with parent:
                if not handshake.got_go(parent, idle_timeout):
                    log.warning("start exited before containerd got the address: nobody will connect, exiting")
                    return 1
        asyncio.run(_serve(args, sock, sandbox_id, make_runtime, socket_file, idle_timeout))
        return 0
    except Exception:
        log.exception("shim failed")
        return 1
    finally:
        socket_file.remove()


async def _serve(args: ShimArgs, sock: socket.socket, sandbox_id: str, make_runtime: RuntimeFactory,
                 socket_file: SocketFile, idle_timeout: float) -> None:
    publisher = EventPublisher(args.ttrpc_address, args.namespace)
    publisher.start()
    stop = asyncio.Event()
    runtime = make_runtime(args.namespace, sandbox_id, publisher.emit)
    watch = idle.IdleWatch(idle_timeout, runtime.has_containers, on_idle=stop.set, on_quiet=trim.malloc_trim,
                           quiet_after=trim.QUIET_AFTER)
    server = ttrpc.Server()
    server.register_service(TASK_SERVICE, watch.track(TaskService(runtime, on_shutdown=stop.set)))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.serve_listener(sock)
    watching = asyncio.create_task(watch.run(), name="idle-watch")
    from rund.shim import start
    log.info("serving sandbox %s on %s (pid %d, started by %s)", sandbox_id, socket_file.path, os.getpid(),
             start.STARTED_BY)
    try:
        await stop.wait()
    finally:
        watching.cancel()
        watch.close()
        socket_file.remove()        # first: a `start` waiting for this shim to go may bind the path at once
        await server.shutdown(grace=2.0)
        await runtime.close()
        await publisher.close()
        log.info("shim for sandbox %s exiting", sandbox_id)
        if start.PRELOADED:             # forked: what the fork server could have imported for every shim
            log.debug("modules imported after the fork: %s", sorted(set(sys.modules) - start.PRELOADED))


def serve_group(args: ShimArgs, sock: socket.socket, socket_file: SocketFile, bundle_fd: int, sandbox_id: str,
                make_runtime: RuntimeFactory, parent: socket.socket, idle_timeout: float, spawn) -> int:
    """A group shim (`spawn`: group_start.GroupSpawn), `sock` its first sandbox's. `bundle_fd`: that sandbox's
    bundle (its log FIFO), taken over."""
    from rund.shim.logs import RoutingHandler
    router = RoutingHandler(telemetry.current_sandbox)
    logs.setup("", args.debug, handler=router)
    try:
        with parent:
            if not handshake.got_go(parent, idle_timeout):
                os.close(bundle_fd)
                log.warning("start exited before containerd got the address: nobody will connect, exiting")
                return 1
        asyncio.run(_serve_group(args, sock, socket_file, bundle_fd, sandbox_id, make_runtime, idle_timeout, spawn,
                                 router))
        return 0
    except Exception:
        log.exception("group shim failed")
        return 1
    finally:
        socket_file.remove()
        spawn.control_file.remove()


async def _serve_group(args: ShimArgs, sock: socket.socket, socket_file: SocketFile, bundle_fd: int,
                       sandbox_id: str, make_runtime: RuntimeFactory, idle_timeout: float, spawn, router) -> None:
    from rund.shim import address as addr, codefiles
    from rund.shim.group import Group
    code = codefiles.snapshot()         # the group takes no new pod once its code changed on disk
    publisher = EventPublisher(args.ttrpc_address, args.namespace)
    publisher.start()
    group = Group(args.namespace, spawn.capacity, make_runtime, publisher.emit, idle_timeout,
                  lambda sid: addr.socket_path(addr.socket_address(args.address, args.namespace, sid)), router,
                  stale=lambda: codefiles.changed(code))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, group.stop_all, "signal")
    group.admit(sandbox_id, sock, socket_file, bundle_fd)
    group.serve_control(spawn.control, spawn.control_file)
    from rund.shim import start
    log.info("group shim of up to %d pods: control %s (pid %d, started by %s with sandbox %s)", spawn.capacity,
             spawn.control_file.path, os.getpid(), start.STARTED_BY, sandbox_id)
    try:
        await group.wait_empty()
    finally:
        group.stop_all("exiting")
        await group.wait_empty()
        await publisher.close()
        log.info("group shim exiting: no pod left")
