import subprocess
import sys

from rund import __version__


def _rund(*args):
    return subprocess.run([sys.executable, "-m", "rund.cli", *args], capture_output=True, text=True, timeout=60)


def test_version():
    r = _rund("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"rund {__version__}"


def _finding_lines(stdout: str) -> list[tuple[str, str]]:
    """(status, name) of each finding line of `rund check` (advice lines are indented further)."""
    out = []
    for line in stdout.splitlines():
        if line.startswith("  ") and line[2:6].strip() in ("ok", "BAD", "warn"):
            out.append((line[2:6].strip(), line[7:].split("  ")[0].strip()))
    return out


def test_check_reports_every_host_fact_and_exits_nonzero_only_on_bad_lines():
    r = _rund("check", "--no-kubernetes")
    found = _finding_lines(r.stdout)
    assert [name for _, name in found] == ["acceleration", "vhost-vsock", "cgroups", "qemu", "guest image",
                                           "templates dir", "rootfs cache", "KSM", "swap", "THP"]
    bad = [name for status, name in found if status == "BAD"]
    assert r.returncode == (1 if bad else 0)
    accel = r.stdout.splitlines()[1]
    assert " kvm " in accel or " tcg " in accel
    assert "kubernetes:" not in r.stdout


def test_check_without_containerd_config_says_what_to_do(tmp_path):
    r = _rund("check", "--containerd-config", str(tmp_path / "missing.toml"))
    assert r.returncode == 1
    assert ("BAD", "containerd config") in _finding_lines(r.stdout)
    assert "does not exist" in r.stdout and "containerd config default" in r.stdout
    assert "cannot run a rund pod" in r.stdout.splitlines()[-1]


def test_check_rejects_a_broken_config(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("nonsense = true\n")
    r = _rund("--config", str(p), "check")
    assert r.returncode == 2 and "unknown key 'nonsense'" in r.stderr
