"""`rund metrics serve --listen ADDR`: the node's metrics over HTTP, on TCP (`127.0.0.1:9464`, `[::1]:9464`,
`:9464` for every address) or a unix socket (`unix:/run/rund-metrics.sock`). GET /metrics; one scrape at a time."""
from __future__ import annotations

import http.server
import logging
import os
import signal
import socket
import socketserver
import threading

from rund.errors import InvalidArgument
from rund.ops.metrics import NodeMetrics

log = logging.getLogger("rund.ops.serve")

DEFAULT_LISTEN = "127.0.0.1:9464"


def parse_listen(listen: str) -> tuple[str, object]:
    """("unix", path) or ("tcp", (host, port))."""
    if listen.startswith("unix:"):
        path = listen[len("unix:"):]
        if not path.startswith("/"):
            raise InvalidArgument(f"--listen {listen!r}: a unix socket needs an absolute path")
        return "unix", path
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(f"--listen {listen!r}: want HOST:PORT, [IPv6]:PORT, :PORT or unix:/PATH")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return "tcp", (host, int(port))


def _handler(metrics: NodeMetrics):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404, "only /metrics here")
                return
            if self.path.startswith("/metrics"):
                try:
                    body, content_type = metrics.exposition(self.headers.get("Accept"))
                except Exception as e:  # noqa: BLE001 - a bad scrape is answered, never fatal
                    log.exception("scrape failed")
                    self.send_error(500, f"scrape failed: {e}")
                    return
            else:
                body, content_type = b"rund metrics: see /metrics\n", "text/plain; charset=utf-8"
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):   # noqa: A002 - BaseHTTPRequestHandler's signature
            log.debug("%s", format % args)

    return Handler


class _TCPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        conn, _ = super().get_request()
        return conn, ("unix", 0)        # BaseHTTPRequestHandler wants a (host, port) client address


def make_server(metrics: NodeMetrics, listen: str) -> socketserver.BaseServer:
    kind, where = parse_listen(listen)
    handler = _handler(metrics)
    if kind == "unix":
        try:
            os.unlink(where)             # a socket left by an earlier daemon (the spool lock says none runs)
        except FileNotFoundError:
            pass
        server = _UnixServer(where, handler)
        os.chmod(where, 0o660)
        return server
    host, port = where
    _TCPServer.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return _TCPServer((host, port), handler)


def bound_address(server: socketserver.BaseServer) -> str:
    addr = server.server_address
    if isinstance(addr, (str, bytes)):
        return f"unix:{os.fsdecode(addr)}"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def serve(metrics: NodeMetrics, listen: str, ready=None) -> None:
    """Serve until SIGTERM or SIGINT. `ready(address)` is called once listening (tests, logs)."""
    server = make_server(metrics, listen)
    stop = threading.Event()

    def _stop(signum, frame):
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        address = bound_address(server)
        log.info("rund metrics: serving /metrics on %s (state dir %s)", address, metrics.state_dir)
        if ready is not None:
            ready(address)
        server.serve_forever(poll_interval=0.5)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        server.server_close()
        if isinstance(server.server_address, str):
            try:
                os.unlink(server.server_address)
            except FileNotFoundError:
                pass
        metrics.close()
