"""The spare VM keeper's bookkeeping without VMs: its pool's counts, how many it makes at once, when it retires.
Spares made, taken and adopted with real QEMU: rund/tests/test_spares_vm.py."""
from __future__ import annotations

import time
from pathlib import Path

from rund import config
from rund.runtime import spares
from rund.templates import Launcher, shape_from_config


def _request(tmp_path: Path, count: int, **extra) -> dict:
    cfg = config.load(None)
    launcher = Launcher(shape_from_config(cfg), work_dir=tmp_path, templates_dir=tmp_path / "templates",
                        build_templates=False)
    request = launcher.spare_request(count, tmp_path / "spares")
    (tmp_path / "templates" / request["key"]).mkdir(parents=True)     # the template is there: it does not retire
    return {**request, **extra}


def test_a_new_keepers_statistics_and_how_many_it_makes_at_once(tmp_path):
    k = spares.Keeper(_request(tmp_path, 50))
    assert k.statistics() == {"count": 50, "ready": 0, "starting": 0, "handed": 0, "taken": 0, "failed": 0}
    assert k.parallel == spares.PARALLEL_STARTS         # one per host CPU, not fifty clones side by side
    assert spares.Keeper(_request(tmp_path / "one", 1)).parallel == 1


def test_a_keeper_retires_after_its_idle_time_and_never_with_zero(tmp_path):
    k = spares.Keeper(_request(tmp_path, 2, idle_exit_s=5.0))
    assert k._retire() is None
    k.last_take = time.monotonic() - 6
    assert k._retire() == "no spare taken for 5 s"
    forever = spares.Keeper(_request(tmp_path / "forever", 2, idle_exit_s=0.0))
    forever.last_take = time.monotonic() - 10**6
    assert forever._retire() is None


def test_the_request_a_sandbox_sends_carries_the_class_settings(tmp_path):
    (tmp_path / "c.toml").write_text(f'state_dir = "{tmp_path}"\n[templates]\nspare_vms = 3\n'
                                     f'spare_idle_exit_s = 0\n[admission]\nmax_starts = 5\n')
    cfg = config.load(tmp_path / "c.toml")
    launcher = Launcher(shape_from_config(cfg), work_dir=tmp_path, templates_dir=tmp_path / "t", build_templates=False)
    request = spares.keeper_request(cfg, launcher, tmp_path / "root")
    assert request["count"] == 3 and request["idle_exit_s"] == 0 and request["admission_slots"] == 5
    assert request["admission_dir"] == str(tmp_path / "admission")
