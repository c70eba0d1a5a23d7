"""The paired-rounds core (loadgen/suite/paired.py) and the A/B verdicts built on it: pure functions, tested with
hand-computed values (a real process's CPU clock: tests/test_paired.py)."""

from __future__ import annotations

import pytest

from loadgen.suite import ab
from loadgen.suite.paired import Change, ab_verdict, judge, median_ci, slice_order


def test_median_ci_is_the_order_statistics_of_the_binomial_table():
    # the textbook intervals for the median: n=6 [x1, x6] 96.9%, n=10 [x2, x9] 97.9%, n=16 [x4, x13], n=20 [x6, x15]
    for n, lo, hi, cover in ((6, 1, 6, 0.96875), (10, 2, 9, 0.978515625), (16, 4, 13, 0.9787292), (20, 6, 15, 0.9586105)):
        got = median_ci([float(x) for x in reversed(range(1, n + 1))])  # unsorted input
        assert got[:2] == (lo, hi) and abs(got[2] - cover) < 1e-6
    assert median_ci([3.0, 1.0, 2.0])[:2] == (1.0, 3.0)  # too few for 95%: the range, with its lower coverage
    assert median_ci([3.0, 1.0, 2.0])[2] == 0.75


def test_judge_says_met_only_when_the_whole_interval_meets_the_target():
    above = [1.01, 1.02, 1.03, 1.04, 1.05, 1.06, 1.07, 1.08]
    assert judge(above, low=1.0) == "met"
    assert judge(above, high=1.0) == "missed"
    assert judge([0.90, 0.95, 0.97, 0.99, 1.01, 1.02, 1.05, 1.10], low=1.0) == "not told apart"
    assert judge([0.96, 0.97, 0.98, 1.0, 1.01, 1.02, 1.03, 1.04], low=0.95, high=1.05) == "met"
    assert judge([1.10, 1.20, 1.30], low=1.0) == "too few rounds"  # 3 rounds cannot give a 95% interval


def test_calibrate_uses_the_same_interval():
    from loadgen import calibrate

    assert calibrate.median_ci is median_ci and calibrate.judge is judge


# 10 ratios: the 95% interval of the median is [x2, x9] of the sorted values
SLOWER = [1.04, 1.05, 1.05, 1.06, 1.06, 1.06, 1.07, 1.07, 1.08, 1.20]  # [1.05, 1.08]: all beyond +3%
WITHIN = [0.90, 0.98, 0.99, 1.0, 1.0, 1.0, 1.01, 1.01, 1.02, 1.30]  # [0.98, 1.02]: all within 3% (outliers outside)
STRADDLE = [1.00, 1.01, 1.02, 1.03, 1.04, 1.04, 1.05, 1.05, 1.06, 1.07]  # [1.01, 1.06]: crosses +3%


@pytest.mark.parametrize("ratios,worse_up,want", [
    (SLOWER, True, Change.SLOWER),  # CPU per message up: slower
    (SLOWER, False, Change.FASTER),  # msgs/s up: faster
    ([2 - x for x in SLOWER], True, Change.FASTER),
    ([2 - x for x in SLOWER], False, Change.SLOWER),
    (WITHIN, True, Change.NO_CHANGE),
    (STRADDLE, True, Change.NOT_TOLD_APART),
    (SLOWER[:5], True, Change.TOO_FEW),  # 5 rounds cannot give a 95% interval
])
def test_ab_verdict_needs_the_whole_interval_beyond_or_within_the_threshold(ratios, worse_up, want):
    assert ab_verdict(ratios, 0.03, worse_up) is want


def test_slices_alternate_abba_so_neither_side_always_runs_first():
    order = slice_order(4)
    assert order == [(0, "base"), (0, "head"), (1, "head"), (1, "base"), (2, "base"), (2, "head"), (3, "head"), (3, "base")]
    firsts = [order[2 * r][1] for r in range(4)]
    assert firsts.count("base") == firsts.count("head") == 2


def _cost(ipm, spread=0.0, functions=()):
    return {"instructions_per_msg": ipm, "spread": spread, "functions": [
        {"function": f, "self_per_msg": s, "inclusive_per_msg": s} for f, s in functions]}


def test_cost_verdicts_are_exact_and_refuse_to_judge_noise():
    same = ab.cost_verdict(_cost(4539.19), _cost(4539.19), 0.01)
    assert same["change"] == 0.0 and same["verdict"] == "no change" and same["functions"] == []
    up = ab.cost_verdict(_cost(1000.0, functions=[("f", 100.0), ("g", 50.0)]),
                         _cost(1020.0, functions=[("f", 100.0), ("g", 55.0), ("crc32_z", 15.0)]), 0.01)
    assert up["verdict"] == "slower" and up["change"] == pytest.approx(0.02)
    assert [f["function"] for f in up["functions"]] == ["crc32_z", "g"]  # what moved, largest first; f did not
    assert ab.cost_verdict(_cost(1000.0), _cost(980.0), 0.01)["verdict"] == "faster"
    assert ab.cost_verdict(_cost(1000.0), _cost(1005.0), 0.01)["verdict"] == "no change"
    noisy = ab.cost_verdict(_cost(27415.4, spread=0.033), _cost(27415.4, spread=0.001), 0.01)
    assert noisy["verdict"] == ab.NOT_GATEABLE and "repeats 3.3% apart" in noisy["why"]
    edge = ab.cost_verdict(_cost(1000.0, spread=0.004), _cost(1010.0), 0.01)  # +1.0% +- 0.4%: cannot tell
    assert edge["verdict"] == "not told apart"


def _wall(verdict_ratios):
    return {key: {"verdict": v, "median": 1.1, "ci": [1.05, 1.15]} for key, v in verdict_ratios.items()}


def test_the_gate_fails_on_a_cost_rise_or_a_clearly_slower_wall_clock_only():
    doc = {"cost": {"a": {"verdict": "no change", "change": 0.0, "why": ""},
                    "b": {"verdict": ab.NOT_GATEABLE, "change": 0.03, "why": ""},
                    "c": {"verdict": "faster", "change": -0.05, "why": ""}},
           "wall": {"models": {"a": _wall({"server_ns_per_msg": "not told apart", "msgs_per_s": "no change",
                                           "p99_us": "faster"})}}}
    assert ab.regressions(doc) == []
    doc["wall"]["models"]["a"]["p99_us"]["verdict"] = "slower"
    doc["cost"]["c"]["verdict"] = "slower"
    lines = ab.regressions(doc)
    assert len(lines) == 2 and lines[0].startswith("c: cost") and lines[1].startswith("a: wall clock p99")


def test_wall_clock_documents_must_also_share_cpu_and_kernel():
    from loadgen.suite.compare import env_mismatch

    a = {"python": "3.11.7", "cpu_model": "Intel(R) Xeon(R) Processor", "kernel": "6.18.44-fc-v669"}
    b = {**a, "cpu_model": "AMD EPYC", "kernel": "6.18.44-fc-v1272"}
    assert env_mismatch(a, b, wall_clock=False) == []
    assert env_mismatch(a, b, wall_clock=True) == ["CPU Intel(R) Xeon(R) Processor vs AMD EPYC",
                                                   "kernel 6.18.44-fc-v669 vs 6.18.44-fc-v1272"]
    assert env_mismatch({"python": "3.11.7"}, {"python": "3.11.7", "libraries": {"gevent": "1"}}, True) == []
