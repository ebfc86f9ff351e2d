"""The reading end of the shims' metrics spool (rund/runtime/telemetry.py), owned by one daemon per state dir.

Each take() hands over the records appended since the last one, each exactly once in normal operation:

    1. spool.old (renamed away by the previous take): the lines appended to it since (a shim that opened the spool
       just before the rename writes there), then unlinked;
    2. spool renamed to spool.old (shims create a new spool with their next record), read whole.

So the spool never holds more than a scrape's worth of records while a daemon runs. A daemon that starts finds the
records spooled while none ran (read now) and perhaps a spool.old its predecessor had read (dropped unread).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os

from rund.errors import FailedPrecondition
from rund.runtime import telemetry

log = logging.getLogger("rund.ops.spool")


class SpoolReader:
    def __init__(self, state_dir: str):
        self.path = telemetry.spool_path(state_dir)
        self.old = self.path + ".old"
        self._old_offset: int | None = None
        self._lock_fd = -1
        self.rejected = 0                  # lines that did not parse as a record

    def claim(self) -> None:
        """Become the spool's one reader (flock held until close), or FailedPrecondition."""
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(directory, "daemon.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FailedPrecondition(f"another rund metrics daemon reads {self.path}") from None
        self._lock_fd = fd
        try:
            os.unlink(self.old)            # its lines were read by the daemon before us
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def take(self) -> list[dict]:
        records: list[dict] = []
        if self._old_offset is not None:
            data = self._read(self.old, self._old_offset)
            records += self._parse(data)
            try:
                os.unlink(self.old)
            except FileNotFoundError:
                pass
            self._old_offset = None
        try:
            os.rename(self.path, self.old)
        except FileNotFoundError:
            return records
        data = self._read(self.old, 0)
        end = data.rfind(b"\n") + 1        # a line still being written is read with the next take
        self._old_offset = end
        records += self._parse(data[:end])
        return records

    @staticmethod
    def _read(path: str, offset: int) -> bytes:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return b""

    def _parse(self, data: bytes) -> list[dict]:
        out = []
        for line in data.split(b"\n"):
            if not line:
                continue
            try:
                doc = json.loads(line)
                if not isinstance(doc, dict):
                    raise ValueError("not an object")
            except ValueError:
                self.rejected += 1
                continue
            out.append(doc)
        return out
