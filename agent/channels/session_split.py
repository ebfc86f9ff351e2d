"""Notice a new host on a byte pipe that never said the old one left. Pure: no I/O.

A virtio-serial port reports a host disconnect only if the agent reads while nobody is connected;
a template's host can leave and a clone's host connect before the agent looks. The new host starts
its ttrpc stream ids again from 1, so a request whose stream id does not increase marks the start
of a new session. Bytes of a frame header are held back until the header is complete, so a new
session always begins on its first frame.
"""
from proto.ttrpc.codec import HEADER, MessageType

_REQUEST = int(MessageType.REQUEST)


class SessionSplitter:
    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """The host is known to be new (a disconnect was seen): start at a frame boundary."""
        self._header = bytearray()
        self._payload_left = 0
        self._last_request = 0

    def feed(self, data: bytes) -> list[tuple[bool, bytes]]:
        """Split `data` into [(starts_new_session, bytes)] in order."""
        out: list[tuple[bool, bytes]] = []
        pending = bytearray()
        view = memoryview(data)
        while view:
            if self._payload_left:
                take = min(self._payload_left, len(view))
                pending += view[:take]
                view = view[take:]
                self._payload_left -= take
                continue
            take = min(HEADER.size - len(self._header), len(view))
            self._header += view[:take]
            view = view[take:]
            if len(self._header) < HEADER.size:
                break  # held back until the rest of the header arrives
            length, stream_id, kind, _flags = HEADER.unpack(self._header)
            if kind == _REQUEST and stream_id <= self._last_request:
                if pending:
                    out.append((False, bytes(pending)))
                out.append((True, b""))
                pending = bytearray()
            if kind == _REQUEST:
                self._last_request = stream_id
            pending += self._header
            self._header = bytearray()
            self._payload_left = length
        if pending:
            out.append((False, bytes(pending)))
        return out
