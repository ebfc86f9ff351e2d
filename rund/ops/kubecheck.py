"""`rund check`, the Kubernetes side: what containerd's CRI plugin needs to run a rund pod on this node.

    containerd config   the file parses (containerd's own `config dump` adds its defaults and `imports`)
    CRI plugin          not disabled
    rund handler        a CRI runtime whose runtime_type is io.containerd.rund.v2 (its ConfigPath loads)
    containerd          answers on its address
    sandbox image       CRI's pause image is in the k8s.io namespace
    CNI                 a network config in conf_dir whose plugins are in bin_dir

Config versions 1 (`plugins.cri`), 2 (`plugins."io.containerd.grpc.v1.cri"`, containerd 1.x) and 3 (containerd
2.x: `io.containerd.cri.v1.runtime` / `.images`) are read.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from rund import config as rund_config
from rund.errors import RundError
from rund.hostcheck import Finding

RUNTIME_TYPE = "io.containerd.rund.v2"
DEFAULT_CONFIG = "/etc/containerd/config.toml"
DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
DEFAULT_SANDBOX_IMAGE = "registry.k8s.io/pause:3.6"       # containerd 1.6's; a version's own comes from config dump
DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CNI_BIN_DIR = "/opt/cni/bin"
CRI_NAMESPACE = "k8s.io"



def stanza(cri_plugin: str = "io.containerd.grpc.v1.cri") -> str:
    """The handler's table, for the config's CRI plugin name."""
    table = "plugins.cri" if cri_plugin == "cri" else f'plugins."{cri_plugin}"'
    return f'[{table}.containerd.runtimes.rund]\n  runtime_type = "{RUNTIME_TYPE}"'


class ContainerdConfigError(RundError):
    pass


@dataclass(frozen=True)
class CriConfig:
    """The parts of containerd's config the CRI plugin needs for a rund pod."""
    path: str
    version: int
    disabled_plugins: tuple[str, ...] = ()
    address: str = DEFAULT_ADDRESS
    handlers: dict[str, dict] = field(default_factory=dict)     # runtime name -> its table
    sandbox_image: str = DEFAULT_SANDBOX_IMAGE
    cni_conf_dir: str = DEFAULT_CNI_CONF_DIR
    cni_bin_dirs: tuple[str, ...] = (DEFAULT_CNI_BIN_DIR,)
    cri_plugin: str = "io.containerd.grpc.v1.cri"

    @property
    def cri_disabled(self) -> bool:
        return any(p in self.disabled_plugins for p in (self.cri_plugin, "cri", "io.containerd.grpc.v1.cri"))

    def rund_handlers(self) -> dict[str, dict]:
        return {name: t for name, t in self.handlers.items() if t.get("runtime_type") == RUNTIME_TYPE}


def parse(doc: dict, path: str = "") -> CriConfig:
    """A containerd config (as parsed TOML, or `containerd config dump`) -> CriConfig."""
    version = int(doc.get("version", 1))
    plugins = doc.get("plugins", {}) or {}
    address = (doc.get("grpc", {}) or {}).get("address") or DEFAULT_ADDRESS
    disabled = tuple(doc.get("disabled_plugins", []) or ())
    if version >= 3:
        runtime = plugins.get("io.containerd.cri.v1.runtime", {}) or {}
        images = plugins.get("io.containerd.cri.v1.images", {}) or {}
        sandbox = ((images.get("pinned_images") or {}).get("sandbox") or images.get("sandbox_image")
                   or "registry.k8s.io/pause:3.10")
        cri_plugin, cri = "io.containerd.cri.v1.runtime", runtime
    else:
        cri_plugin = "io.containerd.grpc.v1.cri" if version == 2 else "cri"
        cri = plugins.get(cri_plugin, {}) or {}
        sandbox = cri.get("sandbox_image") or DEFAULT_SANDBOX_IMAGE
    handlers = ((cri.get("containerd") or {}).get("runtimes") or {})
    cni = cri.get("cni") or {}
    bins = cni.get("bin_dirs") or ([cni["bin_dir"]] if cni.get("bin_dir") else [DEFAULT_CNI_BIN_DIR])
    return CriConfig(path=path, version=version, disabled_plugins=disabled, address=address,
                     handlers={k: v for k, v in handlers.items() if isinstance(v, dict)}, sandbox_image=sandbox,
                     cni_conf_dir=cni.get("conf_dir") or DEFAULT_CNI_CONF_DIR, cni_bin_dirs=tuple(bins),
                     cri_plugin=cri_plugin)


def load(path: str, containerd: str | None = "containerd") -> CriConfig:
    """The file as containerd sees it: its own `config dump` when the binary is there (defaults of this containerd
    version, `imports` merged), else the file alone with containerd 1.6's defaults. ContainerdConfigError."""
    try:
        with open(path, "rb") as f:
            tomllib.load(f)
    except FileNotFoundError:
        raise ContainerdConfigError(f"{path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ContainerdConfigError(f"{path} does not parse: {e}") from None
    binary = shutil.which(containerd) if containerd else None
    if binary:
        res = subprocess.run([binary, "--config", path, "config", "dump"], capture_output=True, text=True,
                             timeout=30)
        if res.returncode != 0:
            raise ContainerdConfigError(f"containerd rejects {path}: {res.stderr.strip()[-300:]}")
        try:
            return parse(tomllib.loads(res.stdout), path)
        except (tomllib.TOMLDecodeError, ValueError, TypeError, AttributeError):
            pass                      # an odd dump: read the file itself
    with open(path, "rb") as f:
        return parse(tomllib.load(f), path)


def normalize_image(ref: str) -> str:
    """docker-style short names as containerd's CRI stores them: `pause:3.9` -> docker.io/library/pause:3.9."""
    name, digest = ref.split("@", 1) if "@" in ref else (ref, "")
    first = name.split("/", 1)[0]
    if "/" not in name or not ("." in first or ":" in first or first == "localhost"):
        name = ("docker.io/" + name) if "/" in name else f"docker.io/library/{name}"
    if not digest and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


def ctr(address: str, *args: str, timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(["ctr", "--address", address, "--connect-timeout", "3s", *args], capture_output=True,
                          text=True, timeout=timeout)


# ---- the findings ------------------------------------------------------------------------------------------------

def _handler_findings(cri: CriConfig) -> list[Finding]:
    if cri.cri_disabled:
        return [Finding("CRI plugin", False, f"disabled in {cri.path} (disabled_plugins)",
                        f"remove {cri.cri_plugin!r} from disabled_plugins and restart containerd")]
    out = [Finding("CRI plugin", True, f"{cri.cri_plugin} (config version {cri.version})")]
    rund = cri.rund_handlers()
    if not rund:
        others = ", ".join(f"{n} ({t.get('runtime_type', '?')})" for n, t in sorted(cri.handlers.items())) or "none"
        out.append(Finding("rund handler", False, f"no CRI runtime has runtime_type {RUNTIME_TYPE} (handlers: "
                           f"{others})", f"add to {cri.path} and restart containerd:\n{stanza(cri.cri_plugin)}\n"
                           "then a RuntimeClass with `handler: rund` (README, Kubernetes)"))
        return out
    problems, names = [], []
    for name, table in sorted(rund.items()):
        config_path = ((table.get("options") or {}).get("ConfigPath") or "")
        names.append(f"{name}" + (f" (ConfigPath {config_path})" if config_path else ""))
        if config_path:
            try:
                rund_config.load(config_path)
            except RundError as e:
                problems.append(f"handler {name}: {e}")
    if problems:
        out.append(Finding("rund handler", False, "; ".join(problems),
                           "fix the rund config the handler's ConfigPath names (or drop ConfigPath)"))
    else:
        out.append(Finding("rund handler", True, ", ".join(names)))
    return out


def _containerd_findings(cri: CriConfig, address: str) -> list[Finding]:
    path = address.removeprefix("unix://")
    if path.startswith("/") and not os.path.exists(path):
        return [Finding("containerd", False, f"no socket at {address}: containerd is not running there",
                        "start containerd (`systemctl start containerd`) or pass --containerd-address")]
    try:
        res = ctr(address, "--namespace", CRI_NAMESPACE, "images", "ls", "-q")
    except FileNotFoundError:
        return [Finding("containerd", False, "ctr not found", "install containerd (its ctr client)")]
    except subprocess.TimeoutExpired:
        return [Finding("containerd", False, f"no answer on {address}", "is containerd running? "
                        "(`systemctl status containerd`); or pass --containerd-address")]
    if res.returncode != 0:
        return [Finding("containerd", False, f"not reachable on {address}: {res.stderr.strip()[-200:]}",
                        "start containerd (`systemctl start containerd`) or pass --containerd-address")]
    out = [Finding("containerd", True, f"answers on {address}")]
    refs = {normalize_image(line.strip()) for line in res.stdout.splitlines() if line.strip()}
    image = cri.sandbox_image
    if normalize_image(image) in refs:
        out.append(Finding("sandbox image", True, f"{image} present"))
    else:
        out.append(Finding("sandbox image", False, f"{image} (CRI's pause image) is not in namespace "
                           f"{CRI_NAMESPACE}", f"`ctr -n {CRI_NAMESPACE} images pull {image}` (or import it "
                           "from a tar on air-gapped nodes); CRI pulls it for the first pod only if the registry "
                           "is reachable"))
    return out


def _cni_finding(cri: CriConfig) -> Finding:
    conf_dir = Path(cri.cni_conf_dir)
    try:
        files = sorted(p for p in conf_dir.iterdir() if p.suffix in (".conf", ".conflist", ".json"))
    except OSError:
        files = []
    if not files:
        return Finding("CNI", False, f"no network config in {conf_dir}",
                       f"install a CNI network (its .conflist in {conf_dir}, plugins in "
                       f"{', '.join(cri.cni_bin_dirs)}; Debian: containernetworking-plugins), or set "
                       "conf_dir/bin_dir under the CRI plugin's cni table")
    first = files[0]                     # CRI (libcni) uses the first one by name
    try:
        doc = json.loads(first.read_text())
        plugins = doc["plugins"] if "plugins" in doc else [doc]
        types = [p["type"] for p in plugins]
        name = doc.get("name", "?")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return Finding("CNI", False, f"{first} does not parse: {e!r}", f"fix or remove {first}")
    missing = [t for t in types if not any(os.access(Path(d) / t, os.X_OK) for d in cri.cni_bin_dirs)]
    if missing:
        return Finding("CNI", False, f"{first} (network {name}) needs plugins {', '.join(missing)}, not in "
                       f"{', '.join(cri.cni_bin_dirs)}", "install them (Debian: containernetworking-plugins, "
                       "in /usr/lib/cni) or point the CRI plugin's cni bin_dir at them")
    return Finding("CNI", True, f"{first.name} (network {name}: {', '.join(types)}; plugins in "
                   f"{', '.join(cri.cni_bin_dirs)})")


def gather(config_path: str = DEFAULT_CONFIG, address: str | None = None,
           containerd: str | None = "containerd") -> list[Finding]:
    try:
        cri = load(config_path, containerd)
    except ContainerdConfigError as e:
        advice = (f"create {config_path} with `containerd config default > {config_path}`, add the rund "
                  f"handler:\n{stanza()}\nand restart containerd" if "does not exist" in str(e)
                  else f"fix {config_path} (or pass --containerd-config)")
        return [Finding("containerd config", False, str(e), advice)]
    findings = [Finding("containerd config", True, config_path)]
    findings += _handler_findings(cri)
    findings += _containerd_findings(cri, address or cri.address)
    findings.append(_cni_finding(cri))
    return findings
