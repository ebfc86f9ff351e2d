"""Sandbox-wide operations: identity, network, modules, the post-restore reset, health."""
import logging
import os
import time

from . import __version__
from .container.manager import ContainerManager, check_id
from .errors import AlreadyExists, NotFound, SetupFailed
from .init.modules import ModuleLoader
from .linux.entropy import add_entropy_and_reseed
from .linux.system import clock_settime_realtime, sethostname
from .network import configure
from .network.types import NetworkConfig, validate
from .oci.spec import check_hostname

log = logging.getLogger(__name__)


class Sandbox:
    def __init__(self, containers: ContainerManager, state_dir: str, modules: ModuleLoader, modules_list: str):
        self.containers = containers
        self.resolv_conf = os.path.join(state_dir, "resolv.conf")
        self._modules = modules
        self._modules_list = modules_list
        self.id: str | None = None

    async def setup(self, sandbox_id: str, hostname: str, network: NetworkConfig, kernel_modules: tuple[str, ...]
                    ) -> None:
        check_id(sandbox_id, "sandbox_id")
        if self.id is not None:
            raise AlreadyExists(f"sandbox {self.id} is already set up")
        validate(network)
        self._modules.ensure(kernel_modules, self._modules_list)
        self._identity(hostname, network)
        self.id = sandbox_id

    async def destroy(self, sandbox_id: str) -> None:
        if self.id != sandbox_id:
            raise NotFound(f"sandbox {sandbox_id!r} not found")
        await self.containers.remove_all()
        self.id = None

    async def post_restore(self, host_time_ns: int | None, entropy: bytes, network: NetworkConfig, hostname: str
                           ) -> None:
        """A clone restored from a template: its clock is frozen, its RNG is its siblings', its MAC theirs."""
        validate(network)
        if host_time_ns is not None:
            try:
                clock_settime_realtime(host_time_ns)
            except OSError as exc:
                raise SetupFailed("setting the clock", str(exc)) from None
        try:
            add_entropy_and_reseed(entropy)
        except OSError as exc:
            raise SetupFailed("reseeding the RNG", str(exc)) from None
        self._identity(hostname, network)

    def _identity(self, hostname: str, network: NetworkConfig) -> None:
        if hostname:
            check_hostname(hostname, "hostname")
            try:
                sethostname(hostname)
            except OSError as exc:
                raise SetupFailed("sethostname", str(exc)) from None
        if network.interfaces or network.routes or network.dns_servers or network.dns_searches:
            configure.apply(network, self.resolv_conf)

    @staticmethod
    def health() -> tuple[str, str, int]:
        return __version__, os.uname().release, time.monotonic_ns()
