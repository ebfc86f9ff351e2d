"""The virtio-serial session splitter: a new host is recognised by its stream ids starting over."""
from hypothesis import given, strategies as st

from agent.channels.session_split import SessionSplitter
from proto.ttrpc.codec import HEADER, MessageType


def frame(stream_id: int, payload: bytes = b"p", kind: MessageType = MessageType.REQUEST) -> bytes:
    return HEADER.pack(len(payload), stream_id, int(kind), 0) + payload


def sessions(splitter: SessionSplitter, chunks) -> list[bytes]:
    out = [b""]
    for chunk in chunks:
        for new, data in splitter.feed(chunk):
            if new:
                out.append(b"")
            out[-1] += data
    return out


def test_increasing_stream_ids_stay_in_one_session():
    stream = frame(1) + frame(3, b"x" * 100) + frame(5)
    assert sessions(SessionSplitter(), [stream]) == [stream]


def test_stream_ids_starting_over_begin_a_new_session():
    old, new = frame(1) + frame(3), frame(1, b"hello") + frame(3)
    assert sessions(SessionSplitter(), [old + new]) == [old, new]


def test_reset_forgets_the_old_host():
    splitter = SessionSplitter()
    splitter.feed(frame(1) + frame(3))
    splitter.reset()
    assert sessions(splitter, [frame(1)]) == [frame(1)]


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_any_chunking_gives_the_same_sessions(cuts):
    old = frame(1, b"a" * 30) + frame(3, b"") + frame(5, b"b" * 7)
    new = frame(1, b"c" * 12) + frame(3, b"d")
    data = old + new
    chunks, start = [], 0
    for cut in cuts:
        chunks.append(data[start:start + cut])
        start += cut
    chunks.append(data[start:])
    assert sessions(SessionSplitter(), chunks) == [old, new]


def test_a_partial_header_is_held_back_until_complete():
    splitter = SessionSplitter()
    assert splitter.feed(frame(1)) == [(False, frame(1))]
    second = frame(1, b"zz")
    assert splitter.feed(second[:4]) == []
    assert splitter.feed(second[4:]) == [(True, b""), (False, second)]
