"""The shim's launcher (rund/shim/launcher.py): Python without site for the thin `start`, site loaded for the rest."""
import os
import subprocess
import sys

from rund import __version__
from rund.shim import launcher


def test_the_launcher_starts_python_without_site_and_imports_this_rund(tmp_path):
    path = tmp_path / "containerd-shim-rund-v2"
    assert launcher.write(str(path)) is True
    assert launcher.write(str(path)) is False                # unchanged: not rewritten
    assert os.stat(path).st_mode & 0o777 == 0o755
    first = path.read_text().splitlines()[0]
    assert first == f"#!{sys.executable} -S"


def test_the_launchers_other_actions_get_site_packages(tmp_path):
    """-v goes past the thin path: full_site() must bring site-packages back (protobuf is only there)."""
    path = tmp_path / "containerd-shim-rund-v2"
    launcher.write(str(path))
    out = subprocess.run([str(path), "-v"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"Version: {__version__}" in out.stdout
    probe = ("import sys; sys.path.insert(0, %r); from rund.shim.main import full_site; import importlib.util as u; "
             "before = u.find_spec('google') is not None; full_site(); "
             "print(before, u.find_spec('google') is not None)") % launcher.script().split("'")[1]
    out = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "True"], out.stderr


def test_the_thin_start_imports_nothing_from_site_packages(tmp_path):
    """What `start` imports before it can hand over to the fork server: the standard library and rund only."""
    root = launcher.script().split("'")[1]
    probe = ("import sys; sys.path.insert(0, %r); import rund.shim.main, rund.shim.client; "
             "print(sorted(m for m, v in sys.modules.items() if 'site-packages' in (getattr(v, '__file__', '') or '')))"
             % root)
    out = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
