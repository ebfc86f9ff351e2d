"""A pod member's `start` answered in the thin client: the address of its sandbox's live shim, no fork server.

containerd runs `start` for every container of a CRI pod; for a member (an app container joining its sandbox, the
grouping annotation names which) the shim is already running and `start` only has to check it and hand containerd
its address (start._join). That needs the argv, the bundle's annotations, containerd's socket formula and the peer
checks, none of which needs asyncio, the runtime or the fork server: done here in the `start` process itself, with
imports chosen for it (~10 ms of CPU in all, 6.5 of them the interpreter's own start, where the fork server's
round trip cost ~30 ms in the client and its worker). No config is read: a member's start does the same with the
fork server on or off.

Only the plain case is answered here. Anything else (not a member, an id or annotation that is not plainly an
identifier, an unreadable bundle, no live sandbox shim, a refusal, any OSError) returns None and the caller runs the
start as before, which reports what it finds in today's words: errors have one author, start.py.
"""
from __future__ import annotations

import os
import sys

from rund.errors import RundError
from rund.shim import address as addr
from rund.shim import flags, leanjson, peer

IDLE_ENV = "RUND_SHIM_IDLE_TIMEOUT"     # idle.ENV (idle.py imports asyncio): start refuses a bad value


def answer(argv: list[str]) -> int | None:
    """0 once the address is on stdout and in the bundle's address file; None: run the start as before."""
    try:
        args = flags.parse(argv)
        if args.action != "start" or args.version or args.info:
            return None
        addr.checked_id(args.id, "container id")
        addr.checked_id(args.namespace, "namespace")
        annotations = _annotations()
        if annotations is None or not addr.is_pod_member(args.id, annotations):
            return None
        if not _idle_env_ok():
            return None
        group = addr.sandbox_id(args.id, annotations)
        address = addr.socket_address(args.address, args.namespace, group)
        shim = peer.probe(addr.socket_path(address))
        if shim is None or peer.refusal(shim, args, None) is not None:
            return None
        addr.write_address_file(os.getcwd(), address)
    except (RundError, OSError, TypeError, ValueError):     # TypeError, ValueError: a malformed bundle
        return None
    sys.stdout.write(address)
    return 0


def _annotations() -> dict | None:
    """The bundle's (the working directory's) OCI annotations; None when unreadable or there are none."""
    try:
        with open("config.json", "rb") as f:
            spec = leanjson.loads(f.read())
    except (OSError, ValueError):
        return None
    ann = spec.get("annotations") if isinstance(spec, dict) else None
    return ann if isinstance(ann, dict) else None


def _idle_env_ok() -> bool:
    """idle.timeout_from_env would accept the environment (a start with a bad value fails, as today)."""
    raw = os.environ.get(IDLE_ENV, "")
    try:
        return not raw or float(raw) > 0
    except ValueError:
        return False
