"""Where a shim listens and which containers share it (pure functions, plus the atomic address file).

The thin `start` (member.py) imports this: no `re` (rund.ids), `hashlib` or `pathlib` here on the common path.
"""
from __future__ import annotations

import os

from rund.atomicfile import write_atomic
from rund.shim.sha256 import sha256

# containerd hard-codes this directory for shim sockets, whatever its configured state dir.
SOCKET_DIR = "/run/containerd/s"

# Annotations that name a container's pod sandbox, and its role, by orchestrator (CRI, CRI-O, dockershim).
SANDBOX_ID_KEYS = ("io.kubernetes.cri.sandbox-id", "io.kubernetes.cri-o.SandboxID", "io.kubernetes.sandbox.id")
CONTAINER_TYPE_KEYS = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType",
                       "io.kubernetes.docker.type")
SANDBOX_TYPES = {"sandbox", "podsandbox"}
ID_MAX_LENGTH = 76          # rund.ids.MAX_LENGTH


def checked_id(value: object, what: str) -> str:
    """rund.ids.validate(value, what), which imports `re` only for a value that is not plainly an identifier (so
    for none that containerd or CRI sends): letters and digits, single '.', '_' or '-' between them."""
    if isinstance(value, str) and 0 < len(value) <= ID_MAX_LENGTH and value.isascii():
        dots = value.replace("_", ".").replace("-", ".")
        if dots.replace(".", "").isalnum() and ".." not in dots and dots[0] != "." and dots[-1] != ".":
            return value
    from rund import ids
    return ids.validate(value, what)


def socket_address(containerd_address: str, namespace: str, group_id: str) -> str:
    """containerd's shim.SocketAddress: unix:///run/containerd/s/<sha256(address/namespace/id)>."""
    joined = os.path.join(containerd_address, namespace, group_id)
    return f"unix://{SOCKET_DIR}/{sha256(joined.encode()).hexdigest()}"


def socket_path(address: str) -> str:
    return address.removeprefix("unix://")


def sandbox_id(container_id: str, annotations: dict[str, str]) -> str:
    """The pod sandbox a container belongs to: its own id for a sandbox or a standalone container.

    InvalidArgument if the annotation is not an identifier: it names the socket and the state dir, and containerd
    does not check annotation values."""
    for key in SANDBOX_ID_KEYS:
        if annotations.get(key):
            return checked_id(annotations[key], f"annotation {key}")
    return container_id


def is_pod_member(container_id: str, annotations: dict[str, str]) -> bool:
    """An app container that joins an existing pod VM (not the sandbox itself, not standalone)."""
    for key in CONTAINER_TYPE_KEYS:
        if key in annotations:
            return annotations[key] not in SANDBOX_TYPES and sandbox_id(container_id, annotations) != container_id
    return False


def write_address_file(bundle: str | os.PathLike, address: str) -> None:
    """Write <bundle>/address atomically: containerd reads it on restart."""
    write_atomic(os.path.join(bundle, "address"), address.encode())
