"""The `delete` action: containerd runs it after every connection close and when a shim is gone.

Idempotent and scoped to `-id`; prints only a serialized DeleteResponse on stdout (137 and now, by the convention
of runc and kata); warnings go to stderr, which containerd logs as cleanup warnings.
"""
from __future__ import annotations

import logging
import os
import sys

from google.protobuf import timestamp_pb2

from proto.gen.containerd.task.v2 import shim_pb2
from rund import ids
from rund.errors import RundError
from rund.shim.flags import ShimArgs

KILLED_EXIT_STATUS = 128 + 9


def delete(args: ShimArgs) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.debug else logging.WARNING,
                        format="rund delete: %(message)s")
    bundle = args.bundle or os.getcwd()
    pid = 0
    try:
        ids.validate(args.id, "container id")      # before anything names a path
        ids.validate(args.namespace, "namespace")
        from rund.runtime.cleanup import cleanup_container
        pid = cleanup_container(bundle, args.id).pid
    except (RundError, OSError) as e:
        print(f"rund delete {args.id[:ids.MAX_LENGTH]!r}: {e}", file=sys.stderr)
        return 1
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    out = shim_pb2.DeleteResponse(pid=pid, exit_status=KILLED_EXIT_STATUS, exited_at=now)
    sys.stdout.buffer.write(out.SerializeToString())
    sys.stdout.flush()
    return 0
