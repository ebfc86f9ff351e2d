import subprocess
import sys

from rund import __version__


def _rund(*args):
    return subprocess.run([sys.executable, "-m", "rund.cli", *args], capture_output=True, text=True, timeout=60)


def test_version():
    r = _rund("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"rund {__version__}"


def test_check_reports_every_host_fact_and_exits_nonzero_only_on_bad_lines():
    r = _rund("check")
    lines = r.stdout.splitlines()
    names = [line[4:].split("  ")[0].strip() for line in lines]
    assert names == ["acceleration", "vhost-vsock", "cgroups", "qemu", "guest image", "templates dir"]
    bad = [line for line in lines if line.startswith("BAD")]
    assert r.returncode == (1 if bad else 0)
    accel = lines[0]
    assert " kvm " in accel or " tcg " in accel


def test_check_rejects_a_broken_config(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("nonsense = true\n")
    r = _rund("--config", str(p), "check")
    assert r.returncode == 2 and "unknown key 'nonsense'" in r.stderr
