"""Our cgroups v1 and v2 Metrics messages against the descriptors containerd itself registers: the Go binary carries
each gogo-generated .proto as a gzipped FileDescriptorProto, so the installed containerd (1.6.20 here) is the
reference. Every message, field name, number, type and label must match."""
from __future__ import annotations

import re
import shutil
import zlib
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from proto.gen.containerd.cgroups.v1 import metrics_pb2 as v1
from proto.gen.containerd.cgroups.v2 import metrics_pb2 as v2

GZIP_HEADER = re.compile(b"\x1f\x8b\x08\x00\x00\x00\x00\x00")


def _containerd_descriptors() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    binary = shutil.which("containerd")
    if binary is None:
        pytest.skip("containerd is not installed")
    data = Path(binary).read_bytes()
    found = {}
    for match in GZIP_HEADER.finditer(data):
        try:
            raw = zlib.decompressobj(31).decompress(data[match.start():match.start() + (1 << 18)])
        except zlib.error:
            continue
        if b"io.containerd.cgroups.v" not in raw:
            continue
        fd = descriptor_pb2.FileDescriptorProto()
        try:
            fd.ParseFromString(raw)
        except Exception:   # noqa: BLE001 - some other gzip stream
            continue
        if fd.package.startswith("io.containerd.cgroups.v") and fd.name.endswith("metrics.proto"):
            found[fd.package] = fd
    return found


def _shape(fd: descriptor_pb2.FileDescriptorProto) -> dict:
    return {m.name: [(f.name, f.number, f.type, f.label, f.type_name) for f in m.field] for m in fd.message_type}


@pytest.fixture(scope="module")
def containerds():
    return _containerd_descriptors()


@pytest.mark.parametrize("module", [v1, v2], ids=["v1", "v2"])
def test_metrics_are_wire_identical_to_the_installed_containerds(containerds, module):
    ours = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(ours)
    assert ours.package in containerds, f"containerd registers no {ours.package} metrics.proto"
    assert _shape(ours) == _shape(containerds[ours.package])
