"""Times on containerd's wire: a protobuf Timestamp, and Go's zero time for "not exited"."""
from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

# Go's zero time: what Go shims send for "not exited" (containerd 1.6 decodes a missing timestamp the same way).
GO_ZERO_TIME = timestamp_pb2.Timestamp(seconds=-62135596800)


def timestamp(at: datetime | None) -> timestamp_pb2.Timestamp:
    if at is None:
        return GO_ZERO_TIME
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts
