"""Kernel modules without kmod: read .modinfo, order by depends=, strip signatures.

The pure functions (parse_modinfo, load_order, strip_signature) do no I/O; ModuleTree reads a lib/modules/<release> tree.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from guest import elf
from guest.errors import ElfError, ModuleError

SIGNATURE_MAGIC = b"~Module signature appended~\n"
_SIGNATURE_INFO = struct.Struct(">BBBBB3xI")  # algo, hash, id_type, signer_len, key_id_len, pad, sig_len


@dataclass(frozen=True)
class ModInfo:
    name: str
    depends: tuple[str, ...]


def canonical_name(name: str) -> str:
    """Module names treat '-' and '_' alike; the kernel reports '_'."""
    return name.replace("-", "_")


def parse_modinfo(data: bytes) -> ModInfo:
    section = elf.section_bytes(data, ".modinfo")
    if section is None:
        raise ModuleError("no .modinfo section")
    fields: dict[str, str] = {}
    for entry in section.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            fields.setdefault(key.decode(), value.decode())
    if "name" not in fields:
        raise ModuleError(".modinfo has no name=")
    depends = tuple(canonical_name(d) for d in fields.get("depends", "").split(",") if d)
    return ModInfo(canonical_name(fields["name"]), depends)


def load_order(
    wanted: Iterable[str], depends: Mapping[str, Sequence[str]], already: Iterable[str] = ()
) -> list[str]:
    """`wanted` plus everything they depend on, minus `already`, each module after its dependencies.

    Deterministic: dependencies are visited in the order listed, roots in the order given.
    """
    done = set(already)
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = " -> ".join(visiting[visiting.index(name) :] + [name])
            raise ModuleError(f"dependency cycle: {cycle}")
        if name not in depends:
            raise ModuleError(f"module {name!r} not found")
        visiting.append(name)
        for dep in depends[name]:
            visit(dep)
        visiting.pop()
        done.add(name)
        order.append(name)

    for name in wanted:
        visit(canonical_name(name))
    return order


def strip_signature(data: bytes) -> bytes:
    """The module without its appended PKCS#7 signature (unsigned modules come back unchanged).

    Loading unsigned modules only taints the kernel (MODULE_SIG_FORCE is off in Debian's kernel) and skips the RSA
    check, which is most of the load time under TCG.
    """
    if not data.endswith(SIGNATURE_MAGIC):
        return data
    info_end = len(data) - len(SIGNATURE_MAGIC)
    info_start = info_end - _SIGNATURE_INFO.size
    if info_start < 0:
        raise ModuleError("truncated module signature")
    *_, sig_len = _SIGNATURE_INFO.unpack_from(data, info_start)
    body_end = info_start - sig_len
    if body_end <= 0:
        raise ModuleError("module signature longer than the module")
    return data[:body_end]


class ModuleTree:
    """The .ko files of one kernel release (a lib/modules/<release> directory)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._paths: dict[str, Path] = {}
        for path in sorted(root.glob("kernel/**/*.ko")):
            self._paths.setdefault(canonical_name(path.name[: -len(".ko")]), path)
        self._info: dict[str, ModInfo] = {}

    def path(self, name: str) -> Path:
        try:
            return self._paths[canonical_name(name)]
        except KeyError:
            raise ModuleError(f"module {name!r} not found under {self.root}") from None

    def info(self, name: str) -> ModInfo:
        name = canonical_name(name)
        if name not in self._info:
            try:
                info = parse_modinfo(self.path(name).read_bytes())
            except ElfError as exc:
                raise ModuleError(f"{name}: {exc}") from exc
            if info.name != name:
                raise ModuleError(f"{self.path(name)} calls itself {info.name!r}")
            self._info[name] = info
        return self._info[name]

    def order(self, wanted: Iterable[str], already: Iterable[str] = ()) -> list[str]:
        """Like load_order, reading depends= from the .ko files as needed."""
        wanted = [canonical_name(w) for w in wanted]
        return load_order(wanted, _LazyDepends(self), already)


class _LazyDepends(Mapping[str, Sequence[str]]):
    def __init__(self, tree: ModuleTree) -> None:
        self._tree = tree

    def __getitem__(self, name: str) -> Sequence[str]:
        return self._tree.info(name).depends

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and canonical_name(name) in self._tree._paths

    def __iter__(self):
        return iter(self._tree._paths)

    def __len__(self) -> int:
        return len(self._tree._paths)
