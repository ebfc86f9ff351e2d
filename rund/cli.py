"""`rund`: the admin CLI. `rund --version`, `rund check`, `rund templates ...`."""
from __future__ import annotations

import argparse
import sys

from rund import __version__, config
from rund.errors import RundError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rund", description="rund secure-container runtime: admin tool")
    ap.add_argument("--version", action="version", version=f"rund {__version__}")
    ap.add_argument("--config", help="config file (default /etc/rund/config.toml if present)")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="report what this host offers rund")
    tp = sub.add_parser("templates", help="pre-forked VM templates: list, build, verify, remove")
    tp.add_argument("action", choices=("list", "build", "verify", "remove"))
    tp.add_argument("key", nargs="?", help="one template (verify/remove); default: all")
    ns = ap.parse_args(argv)
    try:
        cfg = config.load(ns.config)
    except RundError as e:
        print(f"rund: {e}", file=sys.stderr)
        return 2
    if ns.command == "check":
        from rund.hostcheck import gather
        findings = gather(cfg)
        width = max(len(f.name) for f in findings)
        for f in findings:
            print(f"{'ok ' if f.ok else 'BAD'} {f.name:<{width}}  {f.value}")
        return 0 if all(f.ok for f in findings) else 1
    if ns.command == "templates":
        from rund.templates.admin import run
        try:
            return run(cfg, ns.action, ns.key)
        except RundError as e:
            print(f"rund: {e}", file=sys.stderr)
            return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
