"""The ttrpc Request/Response envelopes (proto/src/ttrpc/request.proto), without I/O.

Encoding is done by hand -- it is on every call and is a few concatenations -- and produces the
same bytes as the generated classes (tests check this). Decoding uses the generated classes.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from google.protobuf.message import DecodeError

from proto.gen.ttrpc import request_pb2

from .errors import Internal, InvalidArgument

_U64 = (1 << 64) - 1


def varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative numbers as their 64-bit two's complement."""
    value &= _U64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, data: bytes) -> bytes:
    return tag + varint(len(data)) + data if data else b""


def encode_route(service: str, method: str) -> bytes:
    """Fields 1-2 of a Request; constant per method, so callers cache it."""
    return _field(b"\x0a", service.encode()) + _field(b"\x12", method.encode())


def encode_request(
    route: bytes,
    payload: bytes,
    timeout_nano: int = 0,
    metadata: Mapping[str, str | Sequence[str]] | None = None,
) -> bytes:
    """A serialized ttrpc.Request; ``route`` comes from :func:`encode_route`."""
    parts = [route]
    if payload:
        parts += (b"\x1a", varint(len(payload)), payload)
    if timeout_nano:
        parts += (b"\x20", varint(timeout_nano))
    if metadata:
        for key, values in metadata.items():
            for value in (values,) if isinstance(values, str) else values:
                kv = _field(b"\x0a", key.encode()) + _field(b"\x12", value.encode())
                parts += (b"\x2a", varint(len(kv)), kv)
    return b"".join(parts)


def encode_response(payload: bytes) -> bytes:
    """A successful ttrpc.Response: no status (which means OK), just the payload."""
    return b"\x12" + varint(len(payload)) + payload if payload else b""


def encode_status_response(code: int, message: str) -> bytes:
    """A failed ttrpc.Response: google.rpc.Status{code, message} and no payload."""
    status = (b"\x08" + varint(code) if code else b"") + _field(b"\x12", message.encode())
    return b"\x0a" + varint(len(status)) + status


def decode_request(data: bytes) -> request_pb2.Request:
    try:
        return request_pb2.Request.FromString(data)
    except DecodeError as e:
        raise InvalidArgument(f"unmarshal request error: {e}") from None


def decode_response(data: bytes) -> tuple[int, str, bytes]:
    """(status code, status message, payload); a missing status means OK."""
    if not data:
        return 0, "", b""
    try:
        resp = request_pb2.Response.FromString(data)
    except DecodeError as e:
        raise Internal(f"ttrpc: malformed response: {e}") from None
    if resp.HasField("status"):
        status = resp.status
        return status.code, status.message, resp.payload
    return 0, "", resp.payload
