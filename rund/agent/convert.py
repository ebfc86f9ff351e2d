"""Domain values <-> rund.agent.v1 protobuf messages. The client's only contact with protobuf."""
import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime, timezone

from proto.gen.rund.agent.v1 import agent_pb2 as pb

from .types import (
    ContainerStats, CpuStats, ExitStatus, LayeredRootfs, MemoryStats, NetworkConfig, PathRootfs, PidsStats, Rootfs,
    StdioConfig,
)


def json_bytes(document: bytes | Mapping) -> bytes:
    """OCI documents travel as JSON bytes; a mapping is encoded here."""
    return document if isinstance(document, bytes) else json.dumps(document).encode()


def network(config: NetworkConfig) -> pb.NetworkConfig:
    return pb.NetworkConfig(
        interfaces=[pb.Interface(name=i.name, mac=i.mac, mtu=i.mtu,
                                 addresses=[pb.IPAddress(address=a.address, prefix_length=a.prefix_length)
                                            for a in i.addresses])
                    for i in config.interfaces],
        routes=[pb.Route(destination=r.destination, gateway=r.gateway, device=r.device) for r in config.routes],
        dns_servers=list(config.dns_servers),
        dns_searches=list(config.dns_searches),
    )


def rootfs(value: Rootfs) -> pb.Rootfs:
    if isinstance(value, PathRootfs):
        return pb.Rootfs(path=value.path, readonly=value.readonly)
    if isinstance(value, LayeredRootfs):
        return pb.Rootfs(readonly=value.readonly, layered=pb.LayeredRootfs(
            base_device=value.base_device, base_fstype=value.base_fstype, dax=value.dax,
            upper_size_bytes=value.upper_size_bytes, upper_device=value.upper_device,
            upper_fstype=value.upper_fstype))
    raise TypeError(f"not a rootfs: {value!r}")


def stdio(config: StdioConfig) -> pb.StdioConfig:
    return pb.StdioConfig(terminal=config.terminal, stdin=config.stdin, stdout=config.stdout, stderr=config.stderr)


def exit_status(msg: pb.WaitProcessResponse) -> ExitStatus:
    return ExitStatus(code=msg.exit_status,
                      exited_at=datetime.fromtimestamp(msg.exited_at.ToNanoseconds() / 1e9, tz=timezone.utc))


def _fields(cls, msg):
    return cls(**{f.name: getattr(msg, f.name) for f in dataclasses.fields(cls)})


def stats(msg: pb.StatsContainerResponse) -> ContainerStats:
    """Field for field: the dataclasses and the messages share their names."""
    return ContainerStats(cpu=_fields(CpuStats, msg.cpu), memory=_fields(MemoryStats, msg.memory),
                          pids=_fields(PidsStats, msg.pids))
