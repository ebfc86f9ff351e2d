"""Our ttrpc (containerd's RPC over a byte stream): an I/O-free frame codec plus an asyncio client
and server, used by the host (rund) and by the guest agent."""
from .client import Client
from .context import Context
from .errors import (
    Aborted,
    AlreadyExists,
    Canceled,
    Code,
    ConnectionClosed,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    TtrpcError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    error_for,
)
from .server import Server
from .stub import Stub

__all__ = [
    "Aborted", "AlreadyExists", "Canceled", "Client", "Code", "ConnectionClosed", "Context", "DataLoss",
    "DeadlineExceeded", "FailedPrecondition", "Internal", "InvalidArgument", "NotFound", "OutOfRange",
    "PermissionDenied", "ResourceExhausted", "Server", "Stub", "TtrpcError", "Unauthenticated", "Unavailable",
    "Unimplemented", "Unknown", "error_for",
]
