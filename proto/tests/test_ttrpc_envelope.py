"""Our hand-written envelope encoding is byte-identical to the generated classes' and round-trips."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto import ttrpc
from proto.gen.google.rpc import status_pb2
from proto.gen.ttrpc import request_pb2
from proto.ttrpc.envelope import (
    decode_request, decode_response, encode_request, encode_response, encode_route, encode_status_response, varint,
)

text = st.text(max_size=40)
int64 = st.integers(-(1 << 63), (1 << 63) - 1)
metadata = st.dictionaries(text, st.one_of(text, st.lists(text, max_size=3)), max_size=4)


@given(text, text, st.binary(max_size=300), int64, metadata)
def test_request_bytes_match_protobuf(service, method, payload, timeout_nano, md):
    expected = request_pb2.Request(service=service, method=method, payload=payload, timeout_nano=timeout_nano)
    for key, values in md.items():
        for value in [values] if isinstance(values, str) else values:
            expected.metadata.add(key=key, value=value)
    ours = encode_request(encode_route(service, method), payload, timeout_nano, md)
    assert ours == expected.SerializeToString()
    assert decode_request(ours) == expected


@given(st.binary(max_size=300))
def test_ok_response_bytes_match_protobuf(payload):
    assert encode_response(payload) == request_pb2.Response(payload=payload).SerializeToString()
    assert decode_response(encode_response(payload)) == (0, "", payload)


@given(st.integers(0, 16) | st.integers(-(1 << 31), (1 << 31) - 1), text)
def test_status_response_bytes_match_protobuf(code, message):
    expected = request_pb2.Response(status=status_pb2.Status(code=code, message=message))
    assert encode_status_response(code, message) == expected.SerializeToString()
    assert decode_response(encode_status_response(code, message)) == (code, message, b"")


def test_missing_status_means_ok_and_present_ok_status_too():
    assert decode_response(b"") == (0, "", b"")
    with_ok = request_pb2.Response(status=status_pb2.Status(code=0), payload=b"p").SerializeToString()
    assert decode_response(with_ok) == (0, "", b"p")


def test_varint_known_values():
    assert varint(0) == b"\x00"
    assert varint(300) == b"\xac\x02"
    assert varint(-1) == b"\xff" * 9 + b"\x01"


def test_malformed_envelopes_are_typed_errors():
    with pytest.raises(ttrpc.InvalidArgument, match="unmarshal request error"):
        decode_request(b"\x0a\x05ab")
    with pytest.raises(ttrpc.Internal, match="malformed response"):
        decode_response(b"\x12\x09ab")
