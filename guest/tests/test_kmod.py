"""Module load order from depends=, .modinfo parsing (on a real ELF object built by gcc), signature stripping."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guest.errors import ModuleError
from guest.kmod import SIGNATURE_MAGIC, ModuleTree, canonical_name, load_order, parse_modinfo, strip_signature

# The real dependency graph of the guest's storage path (Debian 6.1 cloud kernel, from .modinfo).
REAL = {
    "virtio_ring": [], "virtio": ["virtio_ring"], "libnvdimm": [], "nd_virtio": ["virtio_ring"],
    "virtio_pmem": ["virtio", "libnvdimm", "nd_virtio"], "nd_btt": ["libnvdimm"], "nd_pmem": ["libnvdimm", "nd_btt"],
    "libcrc32c": [], "erofs": ["libcrc32c"],
}


def test_dependencies_come_first_in_the_order_depends_lists_them():
    assert load_order(["virtio_pmem", "nd_pmem"], REAL) == [
        "virtio_ring", "virtio", "libnvdimm", "nd_virtio", "virtio_pmem", "nd_btt", "nd_pmem"]


def test_already_loaded_modules_are_left_out():
    assert load_order(["virtio_pmem"], REAL, already=["virtio_ring", "virtio"]) == [
        "libnvdimm", "nd_virtio", "virtio_pmem"]
    assert load_order(["virtio"], REAL, already=["virtio_ring", "virtio"]) == []


def test_dash_and_underscore_name_the_same_module():
    assert canonical_name("virtio-rng") == "virtio_rng"
    assert load_order(["virtio-ring"], REAL) == ["virtio_ring"]


def test_a_missing_module_is_an_error():
    with pytest.raises(ModuleError, match="'nope'"):
        load_order(["nope"], REAL)
    with pytest.raises(ModuleError, match="'gone'"):
        load_order(["a"], {"a": ["gone"]})


def test_a_cycle_is_an_error_naming_it():
    with pytest.raises(ModuleError, match="a -> b -> a"):
        load_order(["a"], {"a": ["b"], "b": ["a"]})


@st.composite
def dags(draw):
    n = draw(st.integers(1, 12))
    names = [f"m{i}" for i in range(n)]
    # edges only to lower indices: acyclic by construction
    return {names[i]: draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else [] for i in range(n)}


@given(dags(), st.data())
def test_any_dag_orders_every_module_after_all_its_dependencies(graph, data):
    wanted = data.draw(st.lists(st.sampled_from(sorted(graph)), min_size=1, unique=True))
    order = load_order(wanted, graph)
    assert len(order) == len(set(order))
    position = {m: i for i, m in enumerate(order)}
    for m in order:
        assert all(position[d] < position[m] for d in graph[m])
    assert set(wanted) <= set(order)


def test_strip_signature_removes_exactly_the_appended_signature():
    body = b"\x7fELF" + bytes(range(256)) * 4
    sig = b"S" * 0x2A9
    info = struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, len(sig))
    assert strip_signature(body + sig + info + SIGNATURE_MAGIC) == body
    assert strip_signature(body) == body  # unsigned: unchanged


def test_a_signature_longer_than_the_module_is_an_error():
    info = struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, 10_000)
    with pytest.raises(ModuleError):
        strip_signature(b"tiny" + info + SIGNATURE_MAGIC)


def _compile_fake_module(tmp_path: Path, name: str, depends: str) -> Path:
    """A relocatable ELF (what a .ko is) with a .modinfo section, made by the host's gcc."""
    src = tmp_path / f"{name}.c"
    src.write_text(
        'static const char info[] __attribute__((section(".modinfo"), used)) =\n'
        f'  "license=GPL\\0depends={depends}\\0name={name}\\0vermagic=6.1.0 SMP\\0";\n'
        "int init_module(void) { return 0; }\n"
    )
    ko = tmp_path / "kernel" / "drivers" / f"{name}.ko"
    ko.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-c", "-o", str(ko), str(src)], check=True)
    return ko


def test_modinfo_of_a_real_elf_object(tmp_path):
    ko = _compile_fake_module(tmp_path, "nd_pmem", "libnvdimm,nd_btt")
    info = parse_modinfo(ko.read_bytes())
    assert info.name == "nd_pmem"
    assert info.depends == ("libnvdimm", "nd_btt")


def test_an_elf_without_modinfo_is_rejected(tmp_path):
    src = tmp_path / "plain.c"
    src.write_text("int x;\n")
    subprocess.run(["gcc", "-c", "-o", str(tmp_path / "plain.o"), str(src)], check=True)
    with pytest.raises(ModuleError, match="modinfo"):
        parse_modinfo((tmp_path / "plain.o").read_bytes())


def test_module_tree_reads_depends_from_the_files(tmp_path):
    for name, deps in REAL.items():
        _compile_fake_module(tmp_path, name, ",".join(deps))
    tree = ModuleTree(tmp_path)
    assert tree.order(["nd_pmem", "erofs"]) == ["libnvdimm", "nd_btt", "nd_pmem", "libcrc32c", "erofs"]
    assert tree.path("nd-pmem").name == "nd_pmem.ko"
    with pytest.raises(ModuleError):
        tree.order(["virtio_blk"])


def test_module_tree_rejects_a_file_whose_modinfo_names_another_module(tmp_path):
    ko = _compile_fake_module(tmp_path, "erofs", "")
    ko.rename(ko.with_name("overlay.ko"))
    with pytest.raises(ModuleError, match="calls itself"):
        ModuleTree(tmp_path).order(["overlay"])
