"""The host's client of the in-guest agent: domain dataclasses in, ttrpc + protobuf underneath."""
from .client import AgentClient
from .errors import AgentFailed, AgentTimeout
from .types import (
    AgentHealth, ContainerStats, CpuStats, ExitStatus, FileCopy, Interface, IPAddress, LayeredRootfs, MemoryStats,
    NetworkConfig, PathRootfs, PidsStats, Rootfs, Route, StdioConfig, StreamChunk,
)

__all__ = [
    "AgentClient", "AgentFailed", "AgentTimeout", "AgentHealth", "ContainerStats", "CpuStats", "ExitStatus", "FileCopy", "Interface",
    "IPAddress", "LayeredRootfs", "MemoryStats", "NetworkConfig", "PathRootfs", "PidsStats", "Rootfs", "Route",
    "StdioConfig", "StreamChunk",
]
