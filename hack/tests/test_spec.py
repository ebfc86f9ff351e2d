"""hack/spec.py: the aims block judges the figures it is given, and every aim names a figure its benchmark emits."""
from pathlib import Path

import pytest

from hack.spec import SPEC, Aim, aims_block, fig, ratio

HACK = Path(__file__).resolve().parent.parent


def test_an_aim_is_met_not_met_or_has_no_figure():
    aim = Aim("x", fig("a"), "<=", 3)
    assert aim.check({"a": 2}) == (2.0, True)
    assert aim.check({"a": 4}) == (4.0, False)
    assert aim.check({"a": None}) == (None, None)
    assert aim.check({}) == (None, None)
    assert aim.check({"a": True}) == (None, None)     # a flag is not a figure


def test_a_ratio_needs_both_figures_and_a_nonzero_denominator():
    r = ratio("a", "b")
    assert r.of({"a": 9, "b": 3}) == 3.0
    assert r.of({"a": 9, "b": 0}) is None
    assert r.of({"a": 9}) is None
    assert r.of({"a": None, "b": 3}) is None


def test_the_block_says_which_aims_a_run_meets():
    lines = aims_block("coldstart", {"rund_single_ms_p50": 880.0, "runc_single_ms_p50": 126.0,
                                     "rund_burst50_ms_p99": None, "runc_burst50_ms_p99": 3800.0, "failures": 0})
    assert lines[0].startswith("aims (issue 18")
    single, burst, failures = lines[1:]
    assert "6.984" in single and single.endswith("NOT met")
    assert "n/a" in burst and not burst.rstrip().endswith("met")
    assert failures.endswith(" met")


@pytest.mark.parametrize("bench", sorted(SPEC))
def test_every_aim_names_a_figure_of_its_benchmark(bench):
    """A renamed JSON key would leave an aim at n/a forever: each key an aim reads is named in its benchmark (the
    docstring lists the JSON line's keys where the code builds them)."""
    source = (HACK / f"bench_{bench}.py").read_text()
    for aim in SPEC[bench][1]:
        for key in aim.figure.keys:
            assert f'"{key}"' in source, (bench, key)
