"""rund check's host lines that decide on numbers: free space for the rootfs cache and templates, THP's mode."""
from __future__ import annotations

import os

from rund import hostcheck
from rund.config import Config, RootfsConfig, TemplateConfig


def test_no_room_for_one_rootfs_image_means_no_pod(tmp_path, monkeypatch):
    cfg = Config(rootfs=RootfsConfig(cache_dir=str(tmp_path / "cache"), slot_mib=512, cache_max_mib=8192))
    monkeypatch.setattr(hostcheck, "_free_bytes", lambda path: 100 << 20)
    f = hostcheck._rootfs_cache(cfg)
    assert not f.ok and f.status == "BAD" and "512 MiB" in f.advice
    monkeypatch.setattr(hostcheck, "_free_bytes", lambda path: 1 << 30)
    f = hostcheck._rootfs_cache(cfg)
    assert f.ok and f.warn and "cache_max_mib" in f.advice
    monkeypatch.setattr(hostcheck, "_free_bytes", lambda path: 100 << 30)
    assert hostcheck._rootfs_cache(cfg).status == "ok"


def test_templates_off_tmpfs_or_full_warn_but_run_pods(tmp_path, monkeypatch):
    cfg = Config(templates=TemplateConfig(dir=str(tmp_path / "templates")))
    f = hostcheck._templates_dir(cfg)              # tmp_path: a disk filesystem, or tmpfs: either way it runs pods
    assert f.ok
    monkeypatch.setattr("rund.templates.store.filesystem_type", lambda path: "tmpfs")
    monkeypatch.setattr(hostcheck, "_free_bytes", lambda path: 10 << 20)
    f = hostcheck._templates_dir(cfg)
    assert f.ok and f.warn and "boot cold" in f.advice
    f = hostcheck._templates_dir(Config(templates=TemplateConfig(enabled=False)))
    assert f.ok and f.warn


def test_thp_mode_is_the_bracketed_one():
    assert hostcheck._selected("always [madvise] never") == "madvise"
    assert hostcheck._selected("[always] madvise never") == "always"


def test_swap_line_names_zram_and_zswap_and_the_denser_compressor(monkeypatch):
    from rund.config import HypervisorConfig
    reclaiming = Config(hypervisor=HypervisorConfig(idle_reclaim_s=15))
    monkeypatch.setattr(hostcheck.reclaim, "swap_devices", lambda: [])
    f = hostcheck._swap(reclaiming)
    assert f.warn and "no swap" in f.advice
    assert not hostcheck._swap(Config()).warn                     # no reclaim: no swap is fine

    monkeypatch.setattr(hostcheck.reclaim, "swap_devices", lambda: [("/dev/zram0", 8 << 20)])
    zswap = {"enabled": "N", "compressor": "lzo"}
    monkeypatch.setattr(hostcheck, "_read", lambda path: zswap.get(path.rsplit("/", 1)[1]))
    f = hostcheck._swap(reclaiming)
    assert "8192 MiB of zram" in f.value and "no zswap" in f.value and "after 15 s" in f.value
    assert f.status == "ok" and "deflate" in f.value             # the denser choice named, not pressed
    zswap.update(enabled="Y", compressor="deflate")
    f = hostcheck._swap(reclaiming)
    assert "zswap in front (deflate)" in f.value and f.status == "ok"
    f = hostcheck._swap(Config())
    assert "not used" in f.value and f.status == "ok"


def test_templates_no_pod_used_for_a_day_warn_with_prune(tmp_path, monkeypatch):
    import time
    from rund.templates.store import TemplateStore
    root = tmp_path / "templates"
    for key in ("old", "used"):
        (root / key).mkdir(parents=True)
        (root / key / "memory").write_bytes(b"\0" * (1 << 20))
    old = time.time() - 2 * 24 * 3600
    os.utime(root / "old", (old, old))
    TemplateStore(root)                                        # "used": published or cloned just now
    monkeypatch.setattr("rund.templates.store.filesystem_type", lambda path: "tmpfs")
    monkeypatch.setattr(hostcheck, "_free_bytes", lambda path: 10 << 30)
    f = hostcheck._templates_dir(Config(templates=TemplateConfig(dir=str(root))))
    assert f.warn and "2 template(s), 1 unused for a day (1 MiB)" in f.value and "rund templates prune" in f.advice
    os.utime(root / "old")
    assert hostcheck._templates_dir(Config(templates=TemplateConfig(dir=str(root)))).status == "ok"
