"""AgentClient: one async method per Agent RPC, on frozen dataclasses; errors are rund's typed errors."""
from collections.abc import Mapping, Sequence

from proto import ttrpc
from proto.gen.rund.agent.v1 import agent_pb2 as pb

from . import convert
from .errors import translate
from .types import AgentHealth, FileCopy, ContainerStats, ExitStatus, NetworkConfig, Rootfs, StdioConfig, StreamChunk

SERVICE = pb.DESCRIPTOR.services_by_name["Agent"]
DEFAULT_TIMEOUT = 30.0
READ_SIZE = 64 << 10
_DEFAULT = object()  # "the client's timeout", as opposed to None (no timeout)


class AgentClient:
    """Wraps a connected proto.ttrpc.Client. Long polls (waits, stream reads, OOM events) have no timeout
    unless given; every other call uses `timeout` (seconds, None for none)."""

    def __init__(self, client: ttrpc.Client, timeout: float | None = DEFAULT_TIMEOUT):
        self._client = client
        self._stub = ttrpc.Stub(client, SERVICE)
        self._timeout = timeout

    @classmethod
    async def connect_unix(cls, path: str, timeout: float | None = DEFAULT_TIMEOUT) -> "AgentClient":
        return cls(await ttrpc.Client.connect_unix(path), timeout)

    @property
    def closed(self) -> bool:
        return self._client.closed

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "AgentClient":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def _call(self, method: str, request, timeout=_DEFAULT):
        try:
            return await getattr(self._stub, method)(
                request, timeout=self._timeout if timeout is _DEFAULT else timeout)
        except ttrpc.TtrpcError as exc:
            raise translate(exc) from exc

    # ---- sandbox -----------------------------------------------------------------------------

    async def health(self, timeout=_DEFAULT) -> AgentHealth:
        r = await self._call("Health", pb.HealthRequest(), timeout)
        return AgentHealth(r.agent_version, r.kernel_release, r.uptime_ns)

    async def setup_sandbox(self, sandbox_id: str, hostname: str = "", network: NetworkConfig = NetworkConfig(),
                            kernel_modules: tuple[str, ...] = ()) -> None:
        await self._call("SetupSandbox", pb.SetupSandboxRequest(
            sandbox_id=sandbox_id, hostname=hostname, network=convert.network(network),
            kernel_modules=list(kernel_modules)))

    async def destroy_sandbox(self, sandbox_id: str) -> None:
        await self._call("DestroySandbox", pb.DestroySandboxRequest(sandbox_id=sandbox_id))

    async def post_restore(self, host_time_ns: int | None, entropy: bytes, network: NetworkConfig = NetworkConfig(),
                           hostname: str = "", timeout=_DEFAULT) -> None:
        """After a template restore: set the clock (None leaves it), reseed the RNG, new network identity (in
        place before the next container or exec is made: the agent applies it when idle)."""
        request = pb.PostRestoreRequest(entropy=entropy, network=convert.network(network), hostname=hostname)
        if host_time_ns is not None:
            request.host_time.FromNanoseconds(host_time_ns)
        await self._call("PostRestore", request, timeout)

    # ---- containers --------------------------------------------------------------------------

    async def create_container(self, container_id: str, oci_spec: bytes | Mapping, rootfs: Rootfs,
                               stdio: StdioConfig = StdioConfig(), files: Sequence[FileCopy] = ()) -> int:
        """Creates the container with its init blocked before exec; returns the init's guest pid.

        files: what mounts whose source is "rund-file:<n>" bind (the n-th), copied into the guest."""
        r = await self._call("CreateContainer", pb.CreateContainerRequest(
            container_id=container_id, oci_spec_json=convert.json_bytes(oci_spec), rootfs=convert.rootfs(rootfs),
            stdio=convert.stdio(stdio), files=[pb.FileCopy(data=f.data, mode=f.mode) for f in files]))
        return r.pid

    async def start_container(self, container_id: str) -> int:
        return (await self._call("StartContainer", pb.StartContainerRequest(container_id=container_id))).pid

    async def remove_container(self, container_id: str, force: bool = False, timeout=_DEFAULT) -> None:
        await self._call("RemoveContainer", pb.RemoveContainerRequest(container_id=container_id, force=force),
                         timeout)

    async def update_container(self, container_id: str, resources: bytes | Mapping) -> None:
        await self._call("UpdateContainer", pb.UpdateContainerRequest(
            container_id=container_id, resources_json=convert.json_bytes(resources)))

    async def stats_container(self, container_id: str) -> ContainerStats:
        return convert.stats(await self._call("StatsContainer", pb.StatsContainerRequest(container_id=container_id)))

    async def list_processes(self, container_id: str) -> tuple[int, ...]:
        r = await self._call("ListProcesses", pb.ListProcessesRequest(container_id=container_id))
        return tuple(r.pids)

    # ---- processes ---------------------------------------------------------------------------

    async def exec_process(self, container_id: str, exec_id: str, process: bytes | Mapping,
                           stdio: StdioConfig = StdioConfig()) -> int:
        r = await self._call("ExecProcess", pb.ExecProcessRequest(
            container_id=container_id, exec_id=exec_id, process_json=convert.json_bytes(process),
            stdio=convert.stdio(stdio)))
        return r.pid

    async def signal_process(self, container_id: str, exec_id: str, signal: int, all: bool = False,
                             timeout=_DEFAULT) -> None:
        await self._call("SignalProcess", pb.SignalProcessRequest(
            container_id=container_id, exec_id=exec_id, signal=signal, all=all), timeout)

    async def remove_process(self, container_id: str, exec_id: str, timeout=_DEFAULT) -> None:
        await self._call("RemoveProcess", pb.RemoveProcessRequest(container_id=container_id, exec_id=exec_id),
                         timeout)

    async def wait_process(self, container_id: str, exec_id: str = "", timeout: float | None = None) -> ExitStatus:
        """Returns once the process exited and its output was read to EOF (or closed)."""
        r = await self._call("WaitProcess", pb.WaitProcessRequest(container_id=container_id, exec_id=exec_id),
                             timeout)
        return convert.exit_status(r)

    async def write_stdin(self, container_id: str, exec_id: str, data: bytes) -> int:
        """Writes all of `data` (the agent takes what the pipe has room for; this loops)."""
        sent = 0
        while sent < len(data):
            r = await self._call("WriteStdin", pb.WriteStreamRequest(
                container_id=container_id, exec_id=exec_id, data=data[sent:sent + READ_SIZE]), None)
            sent += r.length
        return sent

    async def close_stdin(self, container_id: str, exec_id: str = "") -> None:
        await self._call("CloseStdin", pb.CloseStdinRequest(container_id=container_id, exec_id=exec_id))

    async def read_stdout(self, container_id: str, exec_id: str = "", max_length: int = READ_SIZE,
                          timeout: float | None = None) -> StreamChunk:
        return await self._read("ReadStdout", container_id, exec_id, max_length, timeout)

    async def read_stderr(self, container_id: str, exec_id: str = "", max_length: int = READ_SIZE,
                          timeout: float | None = None) -> StreamChunk:
        return await self._read("ReadStderr", container_id, exec_id, max_length, timeout)

    async def _read(self, method: str, container_id: str, exec_id: str, max_length: int,
                    timeout: float | None) -> StreamChunk:
        r = await self._call(method, pb.ReadStreamRequest(
            container_id=container_id, exec_id=exec_id, max_length=max_length), timeout)
        return StreamChunk(r.data, r.eof)

    async def resize_tty(self, container_id: str, exec_id: str, rows: int, columns: int) -> None:
        await self._call("TtyWinResize", pb.TtyWinResizeRequest(
            container_id=container_id, exec_id=exec_id, rows=rows, columns=columns))

    async def get_oom_event(self, timeout: float | None = None) -> str:
        """Blocks until a container in the guest is OOM-killed; returns its id."""
        return (await self._call("GetOOMEvent", pb.GetOOMEventRequest(), timeout)).container_id
