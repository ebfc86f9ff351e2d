"""rund-agent: `--pid1` in the guest (init duties, serve on virtio-serial and vsock), or
`--listen unix:/path` as an ordinary process on the host (tests)."""
import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import time
from typing import NamedTuple

log = logging.getLogger("agent")
GUEST_STATE_DIR = "/run/rund"
GUEST_CGROUP_ROOT = "/sys/fs/cgroup/rund"
MODULES_LIST = "/etc/rund/modules.list"


class AgentConfig(NamedTuple):
    listen: tuple[str, ...]
    state_dir: str
    cgroup_root: str | None
    modules_list: str
    pid1: bool


def parse_args(argv: list[str] | None) -> tuple[AgentConfig, str]:
    p = argparse.ArgumentParser(prog="rund-agent", description=__doc__)
    p.add_argument("--pid1", action="store_true", help="run as the guest's init")
    p.add_argument("--listen", action="append", default=[],
                   help="unix:/path, vsock:PORT or virtio-serial:NAME|/dev/path (repeatable)")
    p.add_argument("--state-dir", help=f"where the agent keeps per-container mounts (guest: {GUEST_STATE_DIR})")
    p.add_argument("--cgroup-root", help="cgroup v2 parent for container groups, or 'none' "
                                         f"(guest: {GUEST_CGROUP_ROOT}; host default: none)")
    p.add_argument("--modules-list", default=MODULES_LIST)
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (guest default), ERROR")
    a = p.parse_args(argv)
    listen = tuple(a.listen)
    if a.pid1:
        listen = listen or ("virtio-serial:agent", "vsock:1024")
    elif not listen:
        p.error("--listen is required outside --pid1")
    cgroup_root = a.cgroup_root or (GUEST_CGROUP_ROOT if a.pid1 else "none")
    config = AgentConfig(
        listen=listen,
        state_dir=a.state_dir or (GUEST_STATE_DIR if a.pid1 else "/run/rund-agent"),
        cgroup_root=None if cgroup_root == "none" else cgroup_root,
        modules_list=a.modules_list,
        pid1=a.pid1,
    )
    return config, a.log_level or ("WARNING" if a.pid1 else "INFO")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--pid1" in argv:
        _pid1(argv)
    config, level = parse_args(argv)
    _setup_logging(level)
    asyncio.run(serve(config))


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s rund-agent[%(process)d] %(levelname)s %(name)s: %(message)s")


def _pid1(argv: list[str]) -> None:
    """Never returns and never exits: a fatal error powers the guest off after a last message."""
    from .init.pid1 import early_mounts, ensure_standard_fds, last_word
    try:
        config, level = parse_args(argv)
        _setup_logging(level)
        log.debug("uptime %.2f s: agent started", time.monotonic())
        early_mounts()
        ensure_standard_fds()
        from .init.modules import ModuleLoader
        loaded = ModuleLoader().load_list(config.modules_list)
        log.info("uptime %.2f s: loaded modules: %s", time.monotonic(), " ".join(loaded) or "none")
        asyncio.run(serve(config))
        last_word("the agent's main loop ended")
    except BaseException as exc:  # noqa: BLE001 - PID 1 must report anything, even SystemExit
        last_word(f"{type(exc).__name__}: {exc}")


async def serve(config: AgentConfig) -> None:
    from proto import ttrpc

    from .cgroups.oom import OomWatcher
    from .cgroups.v2 import CgroupV2Driver, NoCgroups
    from .container.launcher import Launcher
    from .container.manager import ContainerManager
    from .idle import IdleWork
    from .init.modules import ModuleLoader
    from .network import loopback
    from .reaper import Reaper
    from .sandbox import Sandbox
    from .service import DESCRIPTOR, AgentService

    from . import spans
    spans.enabled()
    loop = asyncio.get_running_loop()
    if config.pid1:
        loopback.bring_up()     # the VM's network namespace is the pod's: its containers share localhost
        from .network.configure import warm_links
        log.info("warmed network interfaces: %s", " ".join(warm_links()) or "none")
    reaper = Reaper(loop)
    reaper.install()
    cgroups = CgroupV2Driver(config.cgroup_root) if config.cgroup_root else NoCgroups()
    cgroups.setup()
    log.info("uptime %.2f s: containers get %s", time.monotonic(), cgroups.describe())
    os.makedirs(config.state_dir, exist_ok=True)
    oom = OomWatcher()
    manager = ContainerManager(Launcher(reaper), cgroups, oom, config.state_dir)
    sandbox = Sandbox(manager, config.state_dir, ModuleLoader(), config.modules_list, IdleWork())
    server = ttrpc.Server()
    server.register_service(DESCRIPTOR, AgentService(sandbox, oom))
    # Everything imported so far lives as long as the agent: keep it out of collections, which would
    # otherwise walk (and, in a forked setup child, copy page by page) the whole heap.
    gc.freeze()
    # A young-generation collection costs ~7 ms in a TCG guest and came once or twice per pod start at the default
    # threshold (700 allocations); the agent makes few cycles, so collect ten times less often.
    gc.set_threshold(7000, 10, 10)
    manager.prepare_spares()    # before the first host connects: a template saves them for its clones
    stop = loop.create_future()
    tasks = [loop.create_task(_listen(server, address, sandbox.idle.touch), name=f"listen {address}")
             for address in config.listen]
    if not config.pid1:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    try:
        done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop and task.exception() is not None:
                raise task.exception()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.shutdown(grace=1.0)
        await manager.remove_all()
        await manager.close_spares()
        cgroups.close()
        sandbox.idle.close()
        oom.close()
        reaper.uninstall()


async def _listen(server, address: str, on_data) -> None:
    """Serve one address; returns normally only for listeners that keep running inside the server."""
    kind, _, where = address.partition(":")
    if kind == "unix":
        await server.serve_unix(where)
        log.info("listening on %s", address)
        await asyncio.get_running_loop().create_future()  # until cancelled
    elif kind == "vsock":
        if not os.path.exists("/dev/vsock"):
            log.info("no /dev/vsock: not listening on %s", address)
            return await asyncio.get_running_loop().create_future()
        from .channels import vsock
        try:
            await server.serve_listener(vsock.listen(int(where or vsock.AGENT_PORT)))
            log.info("listening on %s", address)
        except OSError as exc:  # e.g. no vsock transport behind /dev/vsock: the other channels still serve
            log.warning("not listening on %s: %s", address, exc)
        await asyncio.get_running_loop().create_future()
    elif kind == "virtio-serial":
        from .channels.virtio_serial import VirtioSerialChannel, wait_for_port
        path = where if where.startswith("/") else await wait_for_port(where or "agent")
        await VirtioSerialChannel(server, path, on_data).run()
    else:
        raise ValueError(f"unknown listen address {address!r}")


if __name__ == "__main__":
    main()
