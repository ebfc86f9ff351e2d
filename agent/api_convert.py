"""Protobuf <-> the agent's domain values. The only place besides service.py that sees protobuf."""
from proto.gen.rund.agent.v1 import agent_pb2 as pb

from .container.types import ContainerStats, ExitInfo, LayeredRootfs, PathRootfs, Rootfs, StdioConfig
from .errors import InvalidArgument
from .network.types import Interface, IPAddress, NetworkConfig, Route


def stdio(msg: pb.StdioConfig) -> StdioConfig:
    return StdioConfig(terminal=msg.terminal, stdin=msg.stdin, stdout=msg.stdout, stderr=msg.stderr)


def rootfs(msg: pb.Rootfs) -> Rootfs:
    kind = msg.WhichOneof("source")
    if kind == "path":
        return PathRootfs(msg.path, msg.readonly)
    if kind == "layered":
        layered = msg.layered
        return LayeredRootfs(base_device=layered.base_device, base_fstype=layered.base_fstype, dax=layered.dax,
                             upper_size_bytes=layered.upper_size_bytes, upper_device=layered.upper_device,
                             upper_fstype=layered.upper_fstype, readonly=msg.readonly)
    raise InvalidArgument("rootfs", "needs a path or a layered source")


def network(msg: pb.NetworkConfig) -> NetworkConfig:
    return NetworkConfig(
        interfaces=tuple(
            Interface(i.name, i.mac, i.mtu, tuple(IPAddress(a.address, a.prefix_length) for a in i.addresses))
            for i in msg.interfaces),
        routes=tuple(Route(r.destination, r.gateway, r.device) for r in msg.routes),
        dns_servers=tuple(msg.dns_servers),
        dns_searches=tuple(msg.dns_searches),
    )


def wait_response(info: ExitInfo) -> pb.WaitProcessResponse:
    response = pb.WaitProcessResponse(exit_status=info.status)
    response.exited_at.FromNanoseconds(info.exited_at_ns)
    return response


def stats_response(stats: ContainerStats) -> pb.StatsContainerResponse:
    """Field for field: the stats tuples and the messages share their names."""
    return pb.StatsContainerResponse(cpu=pb.CpuStats(**stats.cpu._asdict()),
                                     memory=pb.MemoryStats(**stats.memory._asdict()),
                                     pids=pb.PidsStats(**stats.pids._asdict()))
