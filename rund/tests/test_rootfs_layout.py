"""The rootfs cache's directory layout without mkfs or root: its modes, and tightening a cache made before."""
from __future__ import annotations

import os

from rund.resources.rootfs.layout import CacheLayout


def _modes(root) -> dict[str, int]:
    out = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            out[os.path.relpath(path, root)] = os.lstat(path).st_mode & 0o7777
    return out


def test_prepare_makes_private_directories(tmp_path):
    layout = CacheLayout(str(tmp_path / "cache"))
    layout.prepare()
    assert os.stat(layout.root).st_mode & 0o777 == 0o700
    assert set(_modes(layout.root).values()) == {0o700}


def test_prepare_tightens_an_old_world_readable_cache(tmp_path):
    root = tmp_path / "cache"
    (root / "pins" / "k1").mkdir(parents=True, mode=0o755)
    (root / "images").mkdir(mode=0o755)
    (root / "images" / "k1.erofs").write_bytes(b"x")
    (root / "images" / "k1.erofs").chmod(0o444)
    (root / "pins" / "k1" / "sb").write_bytes(b"")
    (root / "pins" / "k1" / "sb").chmod(0o644)
    root.chmod(0o755)
    layout = CacheLayout(str(root))
    layout.prepare()
    modes = _modes(root)
    assert os.stat(root).st_mode & 0o777 == 0o700
    assert modes["images/k1.erofs"] == 0o400 and modes["pins/k1/sb"] == 0o600 and modes["pins/k1"] == 0o700
    assert all(m & 0o077 == 0 for m in modes.values())


def test_prepare_leaves_a_private_cache_alone(tmp_path):
    layout = CacheLayout(str(tmp_path / "cache"))
    layout.prepare()
    odd = tmp_path / "cache" / "images" / "odd"
    odd.write_bytes(b"")
    odd.chmod(0o640)           # the root is already 0700: no walk on every open
    layout.prepare()
    assert odd.stat().st_mode & 0o777 == 0o640
