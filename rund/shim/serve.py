"""The shim daemon: one asyncio loop serving the Task API for one sandbox (a pod) until Shutdown."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from proto import ttrpc
from typing import Callable

from rund.runtime.events import EventSink
from rund.runtime.task_runtime import TaskRuntime
from rund.shim import logs
from rund.shim.events import EventPublisher
from rund.shim.flags import ShimArgs
from rund.shim.task_service import TASK_SERVICE, TaskService

log = logging.getLogger("rund.shim")


RuntimeFactory = Callable[[str, str, EventSink], TaskRuntime]   # (namespace, sandbox_id, emit) -> runtime


def serve(args: ShimArgs, sock: socket.socket, bundle: str, sandbox_id: str, make_runtime: RuntimeFactory) -> int:
    logs.setup(bundle, args.debug)
    try:
        asyncio.run(_serve(args, sock, sandbox_id, make_runtime))
        return 0
    except Exception:
        log.exception("shim failed")
        return 1


async def _serve(args: ShimArgs, sock: socket.socket, sandbox_id: str, make_runtime: RuntimeFactory) -> None:
    publisher = EventPublisher(args.ttrpc_address, args.namespace)
    publisher.start()
    stop = asyncio.Event()
    runtime = make_runtime(args.namespace, sandbox_id, publisher.emit)
    server = ttrpc.Server()
    server.register_service(TASK_SERVICE, TaskService(runtime, on_shutdown=stop.set))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    path = sock.getsockname()
    await server.serve_listener(sock)
    log.info("serving sandbox %s on %s (pid %d)", sandbox_id, path, os.getpid())
    try:
        await stop.wait()
    finally:
        await server.shutdown(grace=2.0)
        await runtime.close()
        await publisher.close()
        try:
            os.unlink(path)
        except OSError:
            pass
        log.info("shim for sandbox %s exiting", sandbox_id)
