"""The I/O-free frame codec: golden bytes, fragmented and coalesced input, oversized and unknown frames."""
from __future__ import annotations

import pytest

from proto import ttrpc
from proto.ttrpc.codec import (
    HEADER_LENGTH, MAX_DATA_LENGTH, Decoder, Flags, Frame, FrameTooLarge, MessageType, OversizedFrame,
    ServerStreamIds, TruncatedStream, UnknownFrameType, encode_frame, encode_header,
)

GOLDEN = bytes.fromhex("00000003" "00000001" "01" "00") + b"abc"


def drain(decoder: Decoder) -> list:
    events = []
    while (event := decoder.next_event()) is not None:
        events.append(event)
    return events


def test_encode_frame_golden_bytes():
    assert encode_frame(1, MessageType.REQUEST, 0, b"abc") == GOLDEN
    assert encode_header(0, 0x01020304, MessageType.DATA, Flags.REMOTE_CLOSED | Flags.NO_DATA) == bytes.fromhex(
        "00000000" "01020304" "03" "05"
    )


def test_decode_golden_bytes():
    decoder = Decoder()
    decoder.feed(GOLDEN)
    assert drain(decoder) == [Frame(1, MessageType.REQUEST, 0, b"abc")]
    assert decoder.buffered == 0


def test_decode_byte_by_byte():
    frames = [Frame(1, 1, 0, b"abc"), Frame(3, 2, 0, b""), Frame(0xFFFFFFFF, 3, 5, bytes(range(256)) * 3)]
    stream = b"".join(encode_frame(*f) for f in frames)
    decoder = Decoder()
    got = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        got += drain(decoder)
        assert decoder.buffered <= HEADER_LENGTH + 768
    assert got == frames
    assert decoder.buffered == 0


def test_decode_many_frames_in_one_feed():
    frames = [Frame(sid, 2, 0, b"x" * sid) for sid in range(1, 200, 2)]
    decoder = Decoder()
    decoder.feed(b"".join(encode_frame(*f) for f in frames))
    assert drain(decoder) == frames
    assert decoder.buffered == 0


def test_decode_frame_split_across_feeds_with_next_frame_attached():
    a, b = encode_frame(1, 1, 0, b"first"), encode_frame(3, 1, 0, b"second")
    decoder = Decoder()
    decoder.feed(a[:4])
    assert drain(decoder) == []
    decoder.feed(a[4:] + b[:12])
    assert drain(decoder) == [Frame(1, 1, 0, b"first")]
    decoder.feed(bytearray(b[12:]))
    assert drain(decoder) == [Frame(3, 1, 0, b"second")]


def test_fed_bytearray_is_copied():
    chunk = bytearray(GOLDEN[:12])
    decoder = Decoder()
    decoder.feed(chunk)
    chunk[10:12] = b"zz"
    decoder.feed(GOLDEN[12:])
    assert drain(decoder) == [Frame(1, 1, 0, b"abc")]


def test_max_length_frame_is_accepted():
    data = b"\x07" * MAX_DATA_LENGTH
    decoder = Decoder()
    decoder.feed(encode_frame(5, 1, 0, data))
    assert drain(decoder) == [Frame(5, 1, 0, data)]


def test_oversized_frame_is_discarded_as_it_arrives_then_reported():
    length = MAX_DATA_LENGTH + 1
    decoder = Decoder()
    decoder.feed(encode_header(length, 7, MessageType.REQUEST, 0))
    assert drain(decoder) == []
    chunk = b"\0" * 65536
    remaining = length
    while remaining > len(chunk):
        decoder.feed(chunk)
        remaining -= len(chunk)
        assert decoder.buffered == 0
        assert drain(decoder) == []
    decoder.feed(chunk[:remaining] + GOLDEN)
    assert drain(decoder) == [OversizedFrame(7, 1, 0, length), Frame(1, 1, 0, b"abc")]


def test_oversized_frame_wholly_in_one_feed():
    decoder = Decoder(max_data_length=4)
    decoder.feed(encode_header(5, 9, 1, 0) + b"12345" + GOLDEN)
    assert drain(decoder) == [OversizedFrame(9, 1, 0, 5), Frame(1, 1, 0, b"abc")]


def test_header_declaring_4GiB_never_buffers():
    decoder = Decoder()
    decoder.feed(encode_header(0xFFFFFFFF, 1, 1, 0) + b"x" * 1000)
    assert drain(decoder) == []
    assert decoder.buffered == 0
    assert decoder.eof() == TruncatedStream(HEADER_LENGTH + 1000)


def test_unknown_message_type_is_reported_and_skipped():
    decoder = Decoder()
    decoder.feed(encode_header(3, 5, 0x7F, 0x80) + b"abc" + GOLDEN)
    assert drain(decoder) == [UnknownFrameType(5, 0x7F, 0x80, 3), Frame(1, 1, 0, b"abc")]


def test_eof_reports_truncation_only_inside_a_frame():
    decoder = Decoder()
    decoder.feed(GOLDEN)
    drain(decoder)
    assert decoder.eof() is None
    decoder.feed(GOLDEN[:-1])
    assert drain(decoder) == []
    assert decoder.eof() == TruncatedStream(len(GOLDEN) - 1)
    assert decoder.buffered == 0


def test_encoder_refuses_oversized_data():
    with pytest.raises(FrameTooLarge) as err:
        encode_frame(1, 1, 0, b"x" * (MAX_DATA_LENGTH + 1))
    assert err.value.length == MAX_DATA_LENGTH + 1


def test_server_stream_ids_odd_and_increasing():
    ids = ServerStreamIds()
    ids.admit_request(1)
    ids.admit_request(7)
    with pytest.raises(ttrpc.InvalidArgument, match="^StreamID cannot be re-used and must increment$"):
        ids.admit_request(7)
    with pytest.raises(ttrpc.InvalidArgument, match="^StreamID cannot be re-used and must increment$"):
        ids.admit_request(5)
    with pytest.raises(ttrpc.InvalidArgument, match="^StreamID must be odd for client initiated streams$"):
        ids.admit_request(8)
    assert ids.last == 7  # rejected ids change nothing
    ids.admit_request(9)
    with pytest.raises(ttrpc.InvalidArgument):
        ServerStreamIds.check_odd(0)
    ServerStreamIds.check_odd(3)
