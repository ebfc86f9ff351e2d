"""Where a shim listens and which containers share it (pure functions, plus the atomic address file)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rund import ids
from rund.atomicfile import write_atomic

# containerd hard-codes this directory for shim sockets, whatever its configured state dir.
SOCKET_DIR = "/run/containerd/s"

# Annotations that name a container's pod sandbox, and its role, by orchestrator (CRI, CRI-O, dockershim).
SANDBOX_ID_KEYS = ("io.kubernetes.cri.sandbox-id", "io.kubernetes.cri-o.SandboxID", "io.kubernetes.sandbox.id")
CONTAINER_TYPE_KEYS = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType",
                       "io.kubernetes.docker.type")
SANDBOX_TYPES = {"sandbox", "podsandbox"}


def socket_address(containerd_address: str, namespace: str, group_id: str) -> str:
    """containerd's shim.SocketAddress: unix:///run/containerd/s/<sha256(address/namespace/id)>."""
    joined = os.path.join(containerd_address, namespace, group_id)
    return f"unix://{SOCKET_DIR}/{hashlib.sha256(joined.encode()).hexdigest()}"


def socket_path(address: str) -> str:
    return address.removeprefix("unix://")


def sandbox_id(container_id: str, annotations: dict[str, str]) -> str:
    """The pod sandbox a container belongs to: its own id for a sandbox or a standalone container.

    InvalidArgument if the annotation is not an identifier: it names the socket and the state dir, and containerd
    does not check annotation values."""
    for key in SANDBOX_ID_KEYS:
        if annotations.get(key):
            return ids.validate(annotations[key], f"annotation {key}")
    return container_id


def is_pod_member(container_id: str, annotations: dict[str, str]) -> bool:
    """An app container that joins an existing pod VM (not the sandbox itself, not standalone)."""
    for key in CONTAINER_TYPE_KEYS:
        if key in annotations:
            return annotations[key] not in SANDBOX_TYPES and sandbox_id(container_id, annotations) != container_id
    return False


def write_address_file(bundle: str | os.PathLike, address: str) -> None:
    """Write <bundle>/address atomically: containerd reads it on restart."""
    write_atomic(Path(bundle) / "address", address.encode())
