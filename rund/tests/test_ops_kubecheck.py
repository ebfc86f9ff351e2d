"""`rund check`'s Kubernetes side without a containerd: config parsing (versions 1, 2, 3), the handler, CNI."""
from __future__ import annotations

import json
import os
import tomllib

from rund.ops import kubecheck

V2 = """
version = 2
disabled_plugins = []
[grpc]
  address = "/tmp/x.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-like]
    runtime_type = "io.containerd.rund.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-like.options]
      ConfigPath = "{config_path}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin_dir}"
    conf_dir = "{conf_dir}"
"""

V3 = """
version = 3
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "registry.k8s.io/pause:3.10"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.rund]
  runtime_type = "io.containerd.rund.v2"
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["/a", "/b"]
  conf_dir = "/c"
"""

V1 = """
[plugins.cri]
  sandbox_image = "pause:3.2"
[plugins.cri.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
"""


def _v2(tmp_path, config_path=""):
    return tomllib.loads(V2.format(config_path=config_path, bin_dir=tmp_path / "bin", conf_dir=tmp_path / "net.d"))


def test_version_2_names_the_rund_handler_whatever_its_name(tmp_path):
    cri = kubecheck.parse(_v2(tmp_path), "c.toml")
    assert cri.version == 2 and cri.address == "/tmp/x.sock" and cri.sandbox_image == "registry.k8s.io/pause:3.9"
    assert list(cri.rund_handlers()) == ["kata-like"]
    assert cri.cni_conf_dir == str(tmp_path / "net.d") and cri.cni_bin_dirs == (str(tmp_path / "bin"),)
    assert not cri.cri_disabled


def test_version_3_and_version_1():
    v3 = kubecheck.parse(tomllib.loads(V3))
    assert list(v3.rund_handlers()) == ["rund"] and v3.sandbox_image == "registry.k8s.io/pause:3.10"
    assert v3.cni_bin_dirs == ("/a", "/b") and v3.cni_conf_dir == "/c"
    v1 = kubecheck.parse(tomllib.loads(V1))
    assert v1.version == 1 and v1.rund_handlers() == {} and v1.sandbox_image == "pause:3.2"
    assert v1.address == kubecheck.DEFAULT_ADDRESS and v1.cni_conf_dir == kubecheck.DEFAULT_CNI_CONF_DIR
    assert "plugins.cri.containerd.runtimes.rund" in kubecheck.stanza(v1.cri_plugin)


def test_a_missing_handler_says_which_stanza_to_add(tmp_path):
    doc = _v2(tmp_path)
    del doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["kata-like"]
    found = kubecheck._handler_findings(kubecheck.parse(doc, "/etc/containerd/config.toml"))
    handler = next(f for f in found if f.name == "rund handler")
    assert not handler.ok and "runc (io.containerd.runc.v2)" in handler.value
    assert 'runtime_type = "io.containerd.rund.v2"' in handler.advice and "RuntimeClass" in handler.advice


def test_a_disabled_cri_plugin_fails(tmp_path):
    doc = _v2(tmp_path)
    doc["disabled_plugins"] = ["io.containerd.grpc.v1.cri"]
    found = kubecheck._handler_findings(kubecheck.parse(doc))
    assert [(f.name, f.ok) for f in found] == [("CRI plugin", False)]


def test_the_handlers_config_path_must_load(tmp_path):
    bad = tmp_path / "rund.toml"
    bad.write_text("typo = 1\n")
    found = kubecheck._handler_findings(kubecheck.parse(_v2(tmp_path, str(bad))))
    assert not found[-1].ok and "typo" in found[-1].value
    bad.write_text('log_level = "debug"\n')
    found = kubecheck._handler_findings(kubecheck.parse(_v2(tmp_path, str(bad))))
    assert found[-1].ok and "ConfigPath" in found[-1].value


def test_cni_needs_a_config_and_its_plugins(tmp_path):
    cri = kubecheck.parse(_v2(tmp_path))
    assert not kubecheck._cni_finding(cri).ok                      # no conf dir
    (tmp_path / "net.d").mkdir()
    (tmp_path / "net.d" / "10-net.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "podnet", "plugins": [{"type": "bridge"}, {"type": "portmap"}]}))
    f = kubecheck._cni_finding(cri)
    assert not f.ok and "bridge, portmap" in f.value and "containernetworking-plugins" in f.advice
    (tmp_path / "bin").mkdir()
    for name in ("bridge", "portmap"):
        (tmp_path / "bin" / name).write_text("#!/bin/sh\n")
        os.chmod(tmp_path / "bin" / name, 0o755)
    f = kubecheck._cni_finding(cri)
    assert f.ok and "podnet" in f.value
    (tmp_path / "net.d" / "00-broken.conf").write_text("{")
    assert not kubecheck._cni_finding(cri).ok                      # CRI takes the first file by name


def test_load_reports_missing_and_broken_files(tmp_path):
    for text, expect in ((None, "does not exist"), ("version = 2\n[plugins.cri", "does not parse")):
        path = tmp_path / "c.toml"
        if text is not None:
            path.write_text(text)
        found = kubecheck.gather(str(path), containerd=None)
        assert [(f.name, f.ok) for f in found] == [("containerd config", False)]
        assert expect in found[0].value


def test_load_without_the_containerd_binary_reads_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(V2.format(config_path="", bin_dir="/x", conf_dir="/y"))
    cri = kubecheck.load(str(path), containerd=None)
    assert list(cri.rund_handlers()) == ["kata-like"]


def test_containerd_not_listening_fails_fast(tmp_path):
    cri = kubecheck.parse(_v2(tmp_path))
    found = kubecheck._containerd_findings(cri, str(tmp_path / "none.sock"))
    assert [(f.name, f.ok) for f in found] == [("containerd", False)] and "not running" in found[0].value


def test_image_names_are_compared_as_containerd_stores_them():
    n = kubecheck.normalize_image
    assert n("pause:3.9") == "docker.io/library/pause:3.9"
    assert n("k8s/pause") == "docker.io/k8s/pause:latest"
    assert n("registry.k8s.io/pause:3.6") == "registry.k8s.io/pause:3.6"
    assert n("localhost:5000/pause") == "localhost:5000/pause:latest"
    assert n("registry.k8s.io/pause@sha256:ab") == "registry.k8s.io/pause@sha256:ab"
