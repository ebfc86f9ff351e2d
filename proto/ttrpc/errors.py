"""ttrpc status codes and the typed exceptions they map to, both ways.

A handler raises a subclass to send that status; a client call raises the subclass matching the
status it received. The codes are google.rpc's (the same numbers gRPC and containerd use).
"""
from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class Code(IntEnum):
    OK = 0
    CANCELLED = 1
    CANCELED = 1  # Go's spelling, as an alias
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TtrpcError(Exception):
    """A non-OK ttrpc status. ``str(e)`` is the status message."""

    code: ClassVar[Code] = Code.UNKNOWN

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class Canceled(TtrpcError):
    code = Code.CANCELLED


class Unknown(TtrpcError):
    code = Code.UNKNOWN


class InvalidArgument(TtrpcError):
    code = Code.INVALID_ARGUMENT


class DeadlineExceeded(TtrpcError):
    code = Code.DEADLINE_EXCEEDED


class NotFound(TtrpcError):
    code = Code.NOT_FOUND


class AlreadyExists(TtrpcError):
    code = Code.ALREADY_EXISTS


class PermissionDenied(TtrpcError):
    code = Code.PERMISSION_DENIED


class ResourceExhausted(TtrpcError):
    code = Code.RESOURCE_EXHAUSTED


class FailedPrecondition(TtrpcError):
    code = Code.FAILED_PRECONDITION


class Aborted(TtrpcError):
    code = Code.ABORTED


class OutOfRange(TtrpcError):
    code = Code.OUT_OF_RANGE


class Unimplemented(TtrpcError):
    code = Code.UNIMPLEMENTED


class Internal(TtrpcError):
    code = Code.INTERNAL


class Unavailable(TtrpcError):
    code = Code.UNAVAILABLE


class DataLoss(TtrpcError):
    code = Code.DATA_LOSS


class Unauthenticated(TtrpcError):
    code = Code.UNAUTHENTICATED


class ConnectionClosed(Unavailable):
    """The connection dropped or was closed; raised to pending and new calls."""


_BY_CODE: dict[int, type[TtrpcError]] = {
    cls.code.value: cls
    for cls in (
        Canceled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists,
        PermissionDenied, ResourceExhausted, FailedPrecondition, Aborted, OutOfRange,
        Unimplemented, Internal, Unavailable, DataLoss, Unauthenticated,
    )
}


def error_for(code: int, message: str) -> TtrpcError:
    """The typed exception for a received non-OK status; codes we do not know become Unknown."""
    if code == Code.OK:
        raise ValueError("status OK is not an error")
    return _BY_CODE.get(code, Unknown)(message)
