"""`ctr events` of a private containerd, read in the background: what containerd itself received and decoded."""
from __future__ import annotations

import json
import queue
import subprocess
import threading
import time


class CtrEvents:
    def __init__(self, containerd):
        self.proc = subprocess.Popen(["ctr", "--address", containerd.address, "events"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next(self, timeout: float) -> tuple[str, str, dict] | None:
        """The next event as (namespace, topic, body), or None if none came within timeout."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        assert "cannot unmarshal" not in line, line
        # 1.6 prints "<date> <time> +0000 UTC <namespace> <topic> <event as JSON>".
        fields = line.split(" ", 6)
        if len(fields) < 7 or not fields[5].startswith("/"):
            return ("", "", {"unparsed": line})
        return fields[4], fields[5], json.loads(fields[6])

    def until(self, predicate, timeout: float) -> list[tuple[str, str, dict]]:
        """Every event up to and including the first that satisfies predicate(topic, body)."""
        seen, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self.next(0.3)
            if event is None:
                continue
            seen.append(event)
            if predicate(event[1], event[2]):
                return seen
        raise AssertionError(f"the awaited event did not come within {timeout}s; saw {seen}")

    def wait_subscribed(self, send, topic: str, timeout: float = 20.0) -> tuple[str, dict]:
        """`ctr events` subscribes asynchronously: resend until one `topic` event is seen; (namespace, body)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            send()
            event = self.next(0.3)
            while event is not None:
                if event[1] == topic:
                    return event[0], event[2]
                event = self.next(0.3)
        raise AssertionError(f"no {topic} event seen in {timeout}s")

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self._reader.join(5)
