"""The ttrpc frame codec, with no I/O (bytes in, events out; in the style of h11).

A frame is a 10-byte big-endian header -- data length u32, stream id u32, message type u8,
flags u8 -- followed by ``length`` bytes of data (at most 4 MiB). The decoder never buffers more
than one frame plus the chunk being fed: the bytes of an oversized frame are dropped as they
arrive and reported as an :class:`OversizedFrame` event once the whole frame has gone by, so the
server can answer on that stream id in order.
"""
from __future__ import annotations

import struct
from enum import IntEnum, IntFlag
from typing import NamedTuple, Union

from .errors import InvalidArgument

HEADER = struct.Struct(">IIBB")
HEADER_LENGTH = HEADER.size  # 10
MAX_DATA_LENGTH = 4 << 20


class MessageType(IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3  # ttrpc 1.2 streaming only


class Flags(IntFlag):
    REMOTE_CLOSED = 0x1
    REMOTE_OPEN = 0x2
    NO_DATA = 0x4


_KNOWN_TYPES = frozenset(int(t) for t in MessageType)


class Frame(NamedTuple):
    """One complete frame. ``type`` is an int equal to a :class:`MessageType` member."""

    stream_id: int
    type: int
    flags: int
    data: bytes


class OversizedFrame(NamedTuple):
    """Error event: a frame declared more data than allowed; its bytes were discarded."""

    stream_id: int
    type: int
    flags: int
    length: int


class UnknownFrameType(NamedTuple):
    """Error event: a frame of a message type this codec does not know; its bytes were skipped."""

    stream_id: int
    type: int
    flags: int
    length: int


class TruncatedStream(NamedTuple):
    """Error event from :meth:`Decoder.eof`: the stream ended inside a frame."""

    buffered: int  # bytes of the unfinished frame that had arrived (discarded ones included)


Event = Union[Frame, OversizedFrame, UnknownFrameType]


class CodecError(Exception):
    """Base of the codec's exceptions (the decoder reports problems as events instead)."""


class FrameTooLarge(CodecError):
    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame data of {length} bytes exceeds the maximum of {limit}")
        self.length = length
        self.limit = limit


class Decoder:
    """Feed bytes with :meth:`feed`, then take events with :meth:`next_event` until it returns None."""

    __slots__ = ("_buf", "_pos", "_max", "_discard", "_error", "_discarded")

    def __init__(self, max_data_length: int = MAX_DATA_LENGTH) -> None:
        self._buf: bytes | bytearray = b""
        self._pos = 0  # start of the first unconsumed byte in _buf
        self._max = max_data_length
        self._discard = 0  # bytes of an oversized frame still to drop
        self._error: OversizedFrame | None = None  # reported once _discard reaches 0
        self._discarded = 0  # bytes of the current oversized frame dropped so far

    @property
    def buffered(self) -> int:
        """Bytes held in memory, waiting to complete a frame."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._discard:
            n = min(self._discard, len(data))
            self._discard -= n
            self._discarded += n
            if n == len(data):
                return
            data = memoryview(data)[n:]
        buf = self._buf
        if self._pos == len(buf):
            # Nothing pending: keep the caller's bytes as they are (the common one-chunk-per-frame case).
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
            return
        if type(buf) is bytes:
            buf = bytearray(memoryview(buf)[self._pos:])
        elif self._pos:
            del buf[: self._pos]
        buf += data
        self._buf = buf
        self._pos = 0

    def next_event(self) -> Event | None:
        """The next complete frame or error event, or None when more bytes are needed."""
        if self._error is not None:
            if self._discard:
                return None
            error, self._error = self._error, None
            return error
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < HEADER_LENGTH:
            return None
        length, stream_id, mtype, flags = HEADER.unpack_from(buf, pos)
        if length > self._max:
            return self._start_discard(OversizedFrame(stream_id, mtype, flags, length), avail)
        end = pos + HEADER_LENGTH + length
        if end > len(buf):
            return None
        self._pos = end
        if mtype not in _KNOWN_TYPES:
            return UnknownFrameType(stream_id, mtype, flags, length)
        return Frame(stream_id, mtype, flags, bytes(memoryview(buf)[pos + HEADER_LENGTH : end]))

    def _start_discard(self, error: OversizedFrame, avail: int) -> OversizedFrame | None:
        body = avail - HEADER_LENGTH
        if body >= error.length:
            self._pos += HEADER_LENGTH + error.length
            return error
        self._buf = b""
        self._pos = 0
        self._discard = error.length - body
        self._discarded = avail
        self._error = error
        return None

    def eof(self) -> TruncatedStream | None:
        """Call when the byte stream ended: reports a frame cut short, if any."""
        partial = self.buffered + (self._discarded if self._error is not None else 0)
        self._buf = b""
        self._pos = 0
        self._discard = 0
        self._error = None
        return TruncatedStream(partial) if partial else None


def encode_header(length: int, stream_id: int, mtype: int, flags: int = 0) -> bytes:
    return HEADER.pack(length, stream_id, mtype, flags)


def encode_frame(stream_id: int, mtype: int, flags: int, data: bytes, max_data_length: int = MAX_DATA_LENGTH) -> bytes:
    """Header and data as one bytes object (one write keeps concurrent frames from interleaving)."""
    if len(data) > max_data_length:
        raise FrameTooLarge(len(data), max_data_length)
    return HEADER.pack(len(data), stream_id, mtype, flags) + data


class ServerStreamIds:
    """Server-side stream id rules: client streams are odd, and each request's id is above the last."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    @staticmethod
    def check_odd(stream_id: int) -> None:
        if not stream_id & 1:
            raise InvalidArgument("StreamID must be odd for client initiated streams")

    def admit_request(self, stream_id: int) -> None:
        """Accept ``stream_id`` for a new request or raise InvalidArgument (as containerd/ttrpc does)."""
        if not stream_id & 1:
            raise InvalidArgument("StreamID must be odd for client initiated streams")
        if stream_id <= self.last:
            raise InvalidArgument("StreamID cannot be re-used and must increment")
        self.last = stream_id
