"""Load kernel modules with finit_module (no modprobe fork: forks are slow under TCG)."""
import errno
import logging
import os

from ..errors import InvalidArgument, SetupFailed
from ..linux.system import finit_module

log = logging.getLogger(__name__)
_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def module_name(path: str) -> str:
    """'kernel/fs/overlayfs/overlay.ko.xz' -> 'overlay' (the name /proc/modules and /sys/module use)."""
    base = os.path.basename(path)
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def parse_list(text: str) -> list[str]:
    """modules.list: one path per line relative to /lib/modules/<release>/, '#' comments."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def parse_proc_modules(text: str) -> set[str]:
    return {line.split(" ", 1)[0] for line in text.splitlines() if line}


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep -> {name: [paths to load, dependencies first]}."""
    table = {}
    for line in text.splitlines():
        path, sep, deps = line.partition(":")
        if sep:
            table[module_name(path)] = list(reversed(deps.split())) + [path]
    return table


class ModuleLoader:
    def __init__(self, release: str | None = None, root: str = "/lib/modules"):
        self.directory = os.path.join(root, release or os.uname().release)

    def loaded(self) -> set[str]:
        try:
            with open("/proc/modules") as f:
                return parse_proc_modules(f.read())
        except FileNotFoundError:
            return set()

    def load_file(self, relative_path: str) -> bool:
        """finit_module one .ko; False if it was already there."""
        path = os.path.join(self.directory, relative_path)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            finit_module(fd, compressed=not path.endswith(".ko"))
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                return False
            raise
        finally:
            os.close(fd)
        return True

    def load_list(self, list_path: str) -> list[str]:
        """Load every module of a list file that is not loaded yet, in its order; returns those loaded."""
        try:
            with open(list_path) as f:
                paths = parse_list(f.read())
        except FileNotFoundError:
            log.info("no %s: no extra modules to load", list_path)
            return []
        loaded, done = self.loaded(), []
        for path in paths:
            name = module_name(path)
            if name in loaded:
                continue
            try:
                if self.load_file(path):
                    done.append(name)
            except OSError as exc:
                log.error("loading module %s: %s", path, exc)
            loaded.add(name)
        return done

    def ensure(self, names: list[str] | tuple[str, ...], list_path: str) -> None:
        """SetupSandbox's kernel_modules: names (or .ko paths) that must be loaded or built in."""
        dep_table = self._table(list_path)
        for i, wanted in enumerate(names):
            name = module_name(wanted) if wanted.endswith(_SUFFIXES) else wanted.replace("-", "_")
            if os.path.exists(f"/sys/module/{name}"):
                continue  # loaded, or built in with parameters
            paths = [wanted] if wanted.endswith(_SUFFIXES) else dep_table.get(name)
            if not paths:
                raise InvalidArgument(f"kernel_modules[{i}]", f"unknown module {wanted!r}")
            loaded = self.loaded()
            for path in paths:
                if module_name(path) in loaded:
                    continue
                try:
                    self.load_file(path)
                except OSError as exc:
                    raise SetupFailed(f"loading module {path}", str(exc)) from None

    def _table(self, list_path: str) -> dict[str, list[str]]:
        try:
            with open(os.path.join(self.directory, "modules.dep")) as f:
                return parse_modules_dep(f.read())
        except FileNotFoundError:
            pass
        try:
            with open(list_path) as f:
                return {module_name(p): [p] for p in parse_list(f.read())}
        except FileNotFoundError:
            return {}
