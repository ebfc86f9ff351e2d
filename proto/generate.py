"""Regenerate the Python code in proto/gen from the .proto sources in proto/src.

    python -m proto.generate          # rewrite proto/gen
    python -m proto.generate --check  # exit 1 if proto/gen is out of date

protoc emits absolute imports named after the .proto paths (``from containerd.types import
mount_pb2``); they are rewritten to live under the ``proto.gen`` package so nothing has to
touch sys.path. Wire compatibility depends on the proto package names, not on these paths.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
GEN = HERE / "gen"
PKG = "proto.gen"


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.proto"))


def _generated_packages() -> set[str]:
    """Dotted packages that hold our generated modules (e.g. ``google.rpc``, not ``google.protobuf``)."""
    return {".".join(p.relative_to(SRC).parent.parts) for p in _sources()}


def generate(out: Path) -> None:
    from grpc_tools import protoc
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{SRC}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}"]
    args += [str(p.relative_to(SRC)) for p in _sources()]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    pkgs = "|".join(sorted((re.escape(t) for t in _generated_packages()), key=len, reverse=True))
    pattern = re.compile(rf"^from ({pkgs}) import (\w+_pb2)\b", re.M)
    for path in out.rglob("*.py*"):
        text = path.read_text()
        text = pattern.sub(lambda m: f"from {PKG}.{m[1]} import {m[2]}", text)
        path.write_text(text)
    for d in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()




def check() -> list[str]:
    """Return the generated files that differ from what the sources produce now."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "gen"
        generate(fresh)
        diffs = []
        for root, _dirs, files in os.walk(fresh):
            for f in files:
                rel = Path(root, f).relative_to(fresh)
                cur = GEN / rel
                if not cur.exists() or cur.read_bytes() != Path(root, f).read_bytes():
                    diffs.append(str(rel))
        for root, dirs, files in os.walk(GEN):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for f in files:
                rel = Path(root, f).relative_to(GEN)
                if not (fresh / rel).exists():
                    diffs.append(str(rel))
        return sorted(diffs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report whether proto/gen is stale")
    ns = ap.parse_args(argv)
    if ns.check:
        stale = check()
        for f in stale:
            print(f"stale: proto/gen/{f}", file=sys.stderr)
        return 1 if stale else 0
    shutil.rmtree(GEN, ignore_errors=True)
    generate(GEN)
    print(f"generated {sum(1 for _ in GEN.rglob('*_pb2.py'))} modules in {GEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
