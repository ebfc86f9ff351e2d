"""Sandbox-wide operations: identity, network, modules, the post-restore reset, health."""
import logging
import os
import time

from . import __version__, spans
from .container.manager import ContainerManager, check_id
from .errors import AlreadyExists, NotFound, SetupFailed
from .idle import IdleWork, Job
from .init.modules import ModuleLoader
from .linux.entropy import add_entropy_and_reseed
from .linux.system import clock_settime_realtime, sethostname
from .network import configure
from .network.types import NetworkConfig, validate
from .oci.spec import check_hostname

log = logging.getLogger(__name__)


class Sandbox:
    def __init__(self, containers: ContainerManager, state_dir: str, modules: ModuleLoader, modules_list: str,
                 idle: IdleWork | None = None):
        self.containers = containers
        self.resolv_conf = os.path.join(state_dir, "resolv.conf")
        self._modules = modules
        self._modules_list = modules_list
        self.idle = idle or IdleWork()
        self._network: Job | None = None    # a clone's network identity, put in place when the agent is idle
        self.id: str | None = None
        containers.before_container = self.network_ready
        containers.pod_started = self.idle.soon     # the network in place while containerd prepares the container

    async def setup(self, sandbox_id: str, hostname: str, network: NetworkConfig, kernel_modules: tuple[str, ...]
                    ) -> None:
        check_id(sandbox_id, "sandbox_id")
        if self.id is not None:
            raise AlreadyExists(f"sandbox {self.id} is already set up")
        validate(network)
        self._modules.ensure(kernel_modules, self._modules_list)
        self.containers.keep_spares = False     # a sandbox now, never a template
        self._hostname(hostname)
        if _has_network(network):
            configure.apply(network, self.resolv_conf)
        self.id = sandbox_id

    async def destroy(self, sandbox_id: str) -> None:
        if self.id != sandbox_id:
            raise NotFound(f"sandbox {sandbox_id!r} not found")
        await self.containers.remove_all()
        self.id = None

    async def post_restore(self, host_time_ns: int | None, entropy: bytes, network: NetworkConfig, hostname: str
                           ) -> None:
        """A clone restored from a template: its clock is frozen, its RNG is its siblings', its MAC theirs.

        The network identity goes in place when the agent is next idle (idle.py), and at the latest before a
        container is created or a process exec'd: the host waits on nothing else meanwhile, and a clone's first
        container comes ~0.1-0.2 s after its sandbox. Should applying it fail, those calls fail with its error."""
        validate(network)
        configure.check(network)
        self.containers.keep_spares = False     # a clone now, never a template
        spans.mark("checked")
        if host_time_ns is not None:
            try:
                clock_settime_realtime(host_time_ns)
            except OSError as exc:
                raise SetupFailed("setting the clock", str(exc)) from None
        spans.mark("clock")
        try:
            add_entropy_and_reseed(entropy)
        except OSError as exc:
            raise SetupFailed("reseeding the RNG", str(exc)) from None
        spans.mark("entropy")
        self._hostname(hostname)
        if _has_network(network):
            self._network = self.idle.defer("configuring the clone's network",
                                             lambda: configure.apply(network, self.resolv_conf))

    async def network_ready(self) -> None:
        """Before a container or an exec: the network PostRestore asked for is in place (or its error raised)."""
        self.idle.finish(self._network)

    @staticmethod
    def _hostname(hostname: str) -> None:
        if hostname:
            check_hostname(hostname, "hostname")
            try:
                sethostname(hostname)
            except OSError as exc:
                raise SetupFailed("sethostname", str(exc)) from None

    @staticmethod
    def health() -> tuple[str, str, int]:
        return __version__, os.uname().release, time.monotonic_ns()


def _has_network(network: NetworkConfig) -> bool:
    return bool(network.interfaces or network.routes or network.dns_servers or network.dns_searches)
