"""containerd-shim-rund-v2: the binary containerd runs for `io.containerd.rund.v2`."""
from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from rund.shim import member
    code = member.answer(argv)      # a pod member's start: its sandbox's shim is live, hand containerd its address
    if code is not None:
        return code
    from rund.shim import client
    if client.wanted(argv):         # the thin path: the fork server starts the daemon (imports next to nothing)
        code = client.start(argv)
        if code is not None:
            return code
    full_site()
    from rund import __version__
    from rund.errors import RundError
    from rund.shim import flags
    try:
        args = flags.parse(argv)
    except RundError as e:
        print(f"containerd-shim-rund-v2: {e}", file=sys.stderr)
        return 2
    if args.version:
        print(f"containerd-shim-rund-v2:\n  Version: {__version__}\n  Runtime: io.containerd.rund.v2")
        return 0
    if args.action == "start":
        from rund.shim.start import start
        return start(args)
    if args.action == "delete":
        from rund.shim.delete import delete
        return delete(args)
    print(f"containerd-shim-rund-v2: unsupported action {args.action!r}", file=sys.stderr)
    return 2


def full_site() -> None:
    """The launcher (launcher.py) starts Python without `site`: what follows the thin path needs site-packages."""
    if sys.flags.no_site:
        import site
        site.main()


def run() -> None:
    """The console entry point. containerd waits for `start` and `delete` to exit before it dials or goes on, and
    an interpreter's orderly shutdown after the runtime's imports costs ~85 ms of that: flush, then leave at once."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
