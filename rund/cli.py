"""`rund`: the admin CLI. `rund --version`, `rund check`, `rund ps`, `rund metrics serve`, `rund templates ...`."""
from __future__ import annotations

import argparse
import logging
import sys

from rund import __version__, config
from rund.errors import RundError


def _print_findings(title: str, findings, width: int) -> None:
    print(f"{title}:")
    for f in findings:
        print(f"  {f.status:<4} {f.name:<{width}}  {f.value}")
        if f.advice and (not f.ok or f.warn):
            pad = " " * (7 + width + 2)
            for i, line in enumerate(f.advice.splitlines()):
                print(f"{pad}{'-> ' if i == 0 else '   '}{line}")


def _check(cfg, ns) -> int:
    from rund.hostcheck import gather
    sections = [("host", gather(cfg))]
    if not ns.no_kubernetes:
        from rund.ops import kubecheck
        sections.append(("kubernetes", kubecheck.gather(ns.containerd_config, ns.containerd_address)))
    width = max(len(f.name) for _, findings in sections for f in findings)
    for title, findings in sections:
        _print_findings(title, findings, width)
    bad = [f.name for _, findings in sections for f in findings if not f.ok]
    print(f"this node cannot run a rund pod: fix {', '.join(bad)}" if bad else "this node can run rund pods")
    return 1 if bad else 0


def _ps(cfg, ns) -> int:
    from rund.ops import ps
    from rund.ops.sandboxes import scan
    views = scan(cfg.state_dir)
    print(ps.as_json(views) if ns.json else ps.table(views))
    return 0


def _metrics(cfg, ns) -> int:
    import prometheus_client
    from rund.ops.metrics import NodeMetrics
    from rund.ops.serve import serve
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prometheus_client.disable_created_metrics()
    metrics = NodeMetrics(cfg, pss_max_age=ns.pss_max_age)
    serve(metrics, ns.listen, ready=(lambda address: print(f"listening on {address}", flush=True)))
    return 0


def main(argv: list[str] | None = None) -> int:
    from rund.ops.kubecheck import DEFAULT_CONFIG
    from rund.ops.serve import DEFAULT_LISTEN
    ap = argparse.ArgumentParser(prog="rund", description="rund secure-container runtime: admin tool")
    ap.add_argument("--version", action="version", version=f"rund {__version__}")
    ap.add_argument("--config", help="config file (default /etc/rund/config.toml if present)")
    sub = ap.add_subparsers(dest="command", required=True)
    cp = sub.add_parser("check", help="can this node run rund pods? the host, and containerd's CRI side")
    cp.add_argument("--containerd-config", default=DEFAULT_CONFIG,
                    help=f"containerd's config (default {DEFAULT_CONFIG})")
    cp.add_argument("--containerd-address", help="containerd's socket (default: the config's grpc address, else "
                    "/run/containerd/containerd.sock)")
    cp.add_argument("--no-kubernetes", action="store_true", help="the host only")
    pp = sub.add_parser("ps", help="every sandbox on this node (from its records: works when shims crashed)")
    pp.add_argument("--json", action="store_true", help="one JSON array, sizes in bytes and times in seconds")
    mp = sub.add_parser("metrics", help="Prometheus metrics of this node")
    msub = mp.add_subparsers(dest="action", required=True)
    sp = msub.add_parser("serve", help="serve /metrics (one daemon per state dir)")
    sp.add_argument("--listen", default=DEFAULT_LISTEN,
                    help=f"HOST:PORT, [IPv6]:PORT, :PORT or unix:/PATH (default {DEFAULT_LISTEN})")
    sp.add_argument("--pss-max-age", type=float, default=30.0, metavar="SECONDS",
                    help="read a process's PSS at most this often (it walks page tables; default 30)")
    tp = sub.add_parser("templates", help="pre-forked VM templates: list, build, verify, remove; prune: those no pod "
                        "used for a day; spares: the pool of spare VMs ([templates] spare_vms)")
    tp.add_argument("action", choices=("list", "build", "verify", "remove", "prune", "spares"))
    tp.add_argument("key", nargs="?", help="one template (verify/remove); default: all")
    tp.add_argument("--unused-for", type=float, default=24.0, metavar="HOURS",
                    help="prune: templates no launch cloned for this long and no process maps (default 24)")
    tp.add_argument("--wait", type=float, metavar="SECONDS",
                    help="spares: start the pool's keeper if none runs and wait until every spare is ready")
    ns = ap.parse_args(argv)
    try:
        cfg = config.load(ns.config)
    except RundError as e:
        print(f"rund: {e}", file=sys.stderr)
        return 2
    try:
        if ns.command == "check":
            return _check(cfg, ns)
        if ns.command == "ps":
            return _ps(cfg, ns)
        if ns.command == "metrics":
            return _metrics(cfg, ns)
        if ns.command == "templates" and ns.action == "spares":
            from rund.ops.spares import run as spares
            return spares(cfg, ns.wait)
        if ns.command == "templates":
            from rund.templates.admin import run
            return run(cfg, ns.action, ns.key, ns.unused_for)
    except (RundError, OSError) as e:
        print(f"rund: {e}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
