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


def _state_dir_of(bundle: str) -> str:
    """The state dir of the bundle's sandbox (its pointer, rund.json), if it is one with shim groups."""
    import json
    from rund.runtime.state import BUNDLE_POINTER
    try:
        with open(os.path.join(bundle, BUNDLE_POINTER), "rb") as f:
            sandbox_dir = json.load(f).get("sandbox_dir")
    except (OSError, ValueError, AttributeError):
        return ""
    if not isinstance(sandbox_dir, str) or not os.path.isabs(sandbox_dir):
        return ""
    state_dir = os.path.dirname(os.path.dirname(os.path.normpath(sandbox_dir)))
    return state_dir if os.path.isdir(os.path.join(state_dir, "shim-groups")) else ""


def delete(args: ShimArgs) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.debug else logging.WARNING,
                        format="rund delete: %(message)s")
    bundle = args.bundle or os.getcwd()
    pid = 0
    try:
        ids.validate(args.id, "container id")      # before anything names a path
        ids.validate(args.namespace, "namespace")
        from rund.runtime.cleanup import cleanup_container
        state_dir = _state_dir_of(bundle)
        pid = cleanup_container(bundle, args.id).pid
        if state_dir:
            from rund.shim import group_registry
            group_registry.sweep(state_dir)     # a group shim that died leaves its control socket
    except (RundError, OSError) as e:
        print(f"rund delete {args.id[:ids.MAX_LENGTH]!r}: {e}", file=sys.stderr)
        return 1
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    out = shim_pb2.DeleteResponse(pid=pid, exit_status=KILLED_EXIT_STATUS, exited_at=now)
    sys.stdout.buffer.write(out.SerializeToString())
    sys.stdout.flush()
    return 0
