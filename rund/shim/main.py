"""containerd-shim-rund-v2: the binary containerd runs for `io.containerd.rund.v2`."""
from __future__ import annotations

import sys

from rund import __version__
from rund.errors import RundError
from rund.shim import flags


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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


if __name__ == "__main__":
    sys.exit(main())
