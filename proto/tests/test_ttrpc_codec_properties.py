"""Property tests: any byte stream, cut anywhere, gives only typed events, finishes, and stays bounded."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proto.ttrpc.codec import (
    HEADER_LENGTH, Decoder, Frame, OversizedFrame, TruncatedStream, UnknownFrameType, encode_frame, encode_header,
)

LIMIT = 64  # a small maximum keeps oversized cases cheap; the logic does not depend on the value

frames = st.builds(
    Frame,
    stream_id=st.integers(0, 0xFFFFFFFF),
    type=st.sampled_from([1, 2, 3]),
    flags=st.integers(0, 255),
    data=st.binary(max_size=LIMIT),
)
oversized = st.builds(
    lambda sid, n: (OversizedFrame(sid, 1, 0, n), encode_header(n, sid, 1, 0) + b"\xaa" * n),
    st.integers(0, 0xFFFFFFFF),
    st.integers(LIMIT + 1, 4 * LIMIT),
)
unknown = st.builds(
    lambda sid, t, d: (UnknownFrameType(sid, t, 0, len(d)), encode_header(len(d), sid, t, 0) + d),
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from([0, 4, 0x80, 0xFF]),
    st.binary(max_size=LIMIT),
)
items = st.one_of(frames.map(lambda f: (f, encode_frame(*f, max_data_length=LIMIT))), oversized, unknown)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def decode(chunks: list[bytes]) -> list:
    decoder = Decoder(max_data_length=LIMIT)
    events = []
    for chunk in chunks:
        decoder.feed(chunk)
        assert decoder.buffered <= HEADER_LENGTH + LIMIT + len(chunk)
        while (event := decoder.next_event()) is not None:
            events.append(event)
        assert decoder.buffered < HEADER_LENGTH + LIMIT  # at most one unfinished frame remains
    end = decoder.eof()
    if end is not None:
        events.append(end)
    return events


@given(st.lists(items, max_size=12), st.lists(st.integers(0, 10_000), max_size=20))
def test_any_sequence_of_frames_decodes_exactly_whatever_the_cuts(seq, cuts):
    stream = b"".join(raw for _, raw in seq)
    assert decode(chunked(stream, cuts)) == [event for event, _ in seq]


@given(st.lists(items, min_size=1, max_size=6), st.integers(1, 10_000), st.lists(st.integers(0, 10_000), max_size=8))
def test_truncated_stream_gives_complete_events_then_truncation(seq, cut, cuts):
    stream = b"".join(raw for _, raw in seq)
    cut %= len(stream)
    events = decode(chunked(stream[:cut], cuts))
    ends = [0]
    for _, raw in seq:
        ends.append(ends[-1] + len(raw))
    complete = [event for (event, _), end in zip(seq, ends[1:]) if end <= cut]
    if cut in ends:
        assert events == complete
    else:
        start = max(e for e in ends if e <= cut)
        assert events == complete + [TruncatedStream(cut - start)]


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=30))
def test_garbage_gives_only_typed_events(garbage, cuts):
    for event in decode(chunked(garbage, cuts)):
        assert type(event) in (Frame, OversizedFrame, UnknownFrameType, TruncatedStream)
        if type(event) is Frame:
            assert len(event.data) <= LIMIT
