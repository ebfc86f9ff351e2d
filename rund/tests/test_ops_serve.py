"""`rund metrics serve`: the address forms, and a real scrape over TCP and a unix socket (in-process)."""
from __future__ import annotations

import http.client
import socket
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rund.config import Config, RootfsConfig, TemplateConfig
from rund.errors import InvalidArgument
from rund.ops.metrics import NodeMetrics
from rund.ops.serve import bound_address, make_server, parse_listen


def test_listen_addresses():
    assert parse_listen("127.0.0.1:9464") == ("tcp", ("127.0.0.1", 9464))
    assert parse_listen(":9464") == ("tcp", ("", 9464))
    assert parse_listen("[::1]:0") == ("tcp", ("::1", 0))
    assert parse_listen("unix:/run/rund-metrics.sock") == ("unix", "/run/rund-metrics.sock")
    for bad in ("9464", "host:port", "unix:relative.sock", "h:70000"):
        with pytest.raises(InvalidArgument):
            parse_listen(bad)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "unix"])
def test_a_scrape_over_http(tmp_path, listen):
    cfg = Config(state_dir=str(tmp_path / "state"), templates=TemplateConfig(dir=str(tmp_path / "t")),
                 rootfs=RootfsConfig(cache_dir=str(tmp_path / "c")))
    metrics = NodeMetrics(cfg)
    server = make_server(metrics, f"unix:{tmp_path / 'm.sock'}" if listen == "unix" else listen)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = bound_address(server)
        if address.startswith("unix:"):
            conn = _UnixHTTPConnection(address[len("unix:"):])
        else:
            host, port = address.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port))
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read().decode()
        assert r.status == 200 and r.getheader("Content-Type").startswith("text/plain")
        names = {f.name for f in text_string_to_metric_families(body)}
        assert {"rund_sandboxes", "rund_operation_duration_seconds", "rund_template_hits", "rund_task_errors",
                "rund_cgroup_pool_target", "rund_rootfs_cache_max_bytes", "rund_templates"} <= names
        conn.request("GET", "/nothing")
        r = conn.getresponse()
        r.read()
        assert r.status == 404
    finally:
        server.shutdown()
        server.server_close()
        metrics.close()
