"""The regression gate's statistics (loadgen/suite/compare.py) on synthetic suites: wall-clock verdicts, capacity
brackets, models new or vanished since the baseline. (The command's exit codes, reports and bad input:
tests/test_compare.py.)

Deterministic by construction: every suite here is synthetic (seeded noise)."""

from __future__ import annotations

import pytest

from loadgen import compare as cmp

from support.synthetic import REF, make_pair, three_metrics, with_capacity


def verdicts_of(base, cur, **kw):
    v = cmp.compare(base, cur, REF, kw.get("min_effect", 0.10), kw.get("alpha", 0.01), kw.get("normalise", True))
    return {(x.model, x.metric): x for x in v}


def test_unchanged():
    v = verdicts_of(*make_pair())
    assert all(x.verdict == "unchanged" for x in v.values()), {k: x.reason for k, x in v.items()}


def test_regressed():
    v = verdicts_of(*make_pair(factor_thr=0.75, factor_us=1.33))
    assert v[("model", "msgs_per_s")].verdict == "regressed"
    assert v[("model", "server_us_per_msg")].verdict == "regressed"
    assert v[("model", "p99_us")].verdict == "unchanged"


def test_the_gate_judges_tcp_cells_only():
    """A UDP cell of the transport comparison has the same (model, conns, size) as a TCP cell: it must not
    replace it in the gate (UDP at a fraction of the speed would read as a huge regression)."""
    base, cur = make_pair()
    slow = three_metrics([1.0] * 7, [1000.0] * 7, [1e6] * 7)
    for s in (base, cur):
        for c in s["cells"]:
            c["transport"] = "tcp"
    cur["cells"].append({"model": "model", "transport": "udp", "conns": 10, "size": 1024,
                         "per_trial": [{"trial": t, **{m: v[t] for m, v in slow.items()}} for t in range(7)]})
    v = verdicts_of(base, cur)
    assert all(x.verdict == "unchanged" for x in v.values()), {k: x.reason for k, x in v.items()}


def test_improved():
    v = verdicts_of(*make_pair(factor_thr=1.3, factor_us=0.7))
    assert v[("model", "msgs_per_s")].verdict == "improved"
    assert v[("model", "server_us_per_msg")].verdict == "improved"


def test_too_noisy():
    v = verdicts_of(*make_pair(factor_thr=0.85, cv=0.30))
    assert v[("model", "msgs_per_s")].verdict == "too noisy"
    assert "CI" in v[("model", "msgs_per_s")].reason or "not significant" in v[("model", "msgs_per_s")].reason


def test_small_change_is_not_a_regression():
    v = verdicts_of(*make_pair(factor_thr=0.97, factor_us=1.03))
    assert v[("model", "msgs_per_s")].verdict in ("unchanged", "too noisy")
    assert v[("model", "server_us_per_msg")].verdict in ("unchanged", "too noisy")


def test_normalising_cancels_a_slower_machine():
    base, cur = make_pair(machine=0.7)  # everything 30% slower: the machine, not the code
    norm = verdicts_of(base, cur)
    raw = verdicts_of(base, cur, normalise=False)
    assert norm[("model", "msgs_per_s")].verdict == "unchanged"
    assert raw[("model", "msgs_per_s")].verdict == "regressed"


def test_too_few_trials_is_too_noisy():
    v = verdicts_of(*make_pair(n=2))
    assert all(x.verdict == "too noisy" for x in v.values())


# -- capacity at the SLO: one search per model per run, judged by its bracket -------------------------------------

def cap_verdicts(base_caps, cur_caps, **kw):
    base, cur = make_pair()
    v, skipped = cmp.compare_capacity(with_capacity(base, base_caps), with_capacity(cur, cur_caps, **kw), REF, 0.10)
    assert skipped is None
    return {x.model: x for x in v}


def test_capacity_unchanged_within_the_brackets():
    v = cap_verdicts({REF: (100e3, 105e3), "model": (150e3, 157e3)}, {REF: (100e3, 104e3), "model": (148e3, 155e3)})
    assert v["model"].verdict == "unchanged" and v[REF].verdict == "unchanged", v


def test_capacity_regressed_only_when_the_whole_interval_is_beyond_the_effect():
    v = cap_verdicts({REF: (100e3, 105e3), "model": (150e3, 157e3)}, {REF: (100e3, 105e3), "model": (110e3, 115e3)})
    assert v["model"].verdict == "regressed" and "beyond 10%" in v["model"].reason
    assert v["model"].change_low < v["model"].change_high < -0.10
    # brackets too wide to tell a 10% change: never a verdict
    v = cap_verdicts({"model": (100e3, 130e3)}, {"model": (85e3, 110e3)})
    assert v["model"].verdict == "too noisy"


def test_capacity_improved():
    v = cap_verdicts({REF: (100e3, 105e3), "model": (100e3, 105e3)}, {REF: (100e3, 105e3), "model": (140e3, 147e3)})
    assert v["model"].verdict == "improved"


def test_a_slower_machine_is_not_a_capacity_regression():
    # every model, the reference too, lost 30%: relative to the reference nothing moved
    v = cap_verdicts({REF: (100e3, 105e3), "model": (150e3, 157e3)}, {REF: (70e3, 73e3), "model": (105e3, 110e3)})
    assert v["model"].verdict == "too noisy" and "reference" in v["model"].reason


def test_a_search_without_a_capacity_or_with_a_lower_bound():
    v = cap_verdicts({"model": (None, None), "other": (100e3, None), "third": (100e3, 105e3)},
                     {"model": (50e3, 55e3), "other": (150e3, 157e3), "third": (150e3, None)})
    assert v["model"].verdict == "too noisy" and "not measured in the baseline" in v["model"].reason
    # a baseline that is only a lower bound cannot rule out a drop
    assert v["other"].change_low == -1 and v["other"].verdict == "too noisy"
    # a current lower bound above the baseline's bracket: improved, with no upper bound on the change
    assert v["third"].change_high is None and v["third"].verdict == "improved"


def test_a_model_that_no_longer_meets_the_slo_at_all_has_regressed():
    # current: no rate met the SLO, and it broke at 40,000: its capacity is below that, far below 150,000
    v = cap_verdicts({REF: (100e3, 105e3), "model": (150e3, 157e3)}, {REF: (100e3, 105e3), "model": (None, 40e3)})
    assert v["model"].verdict == "regressed" and v["model"].change_low == -1 and v["model"].current_text == "< 40,000"


def test_a_reference_that_is_only_a_lower_bound_cannot_confirm_a_change():
    # the reference's baseline bracket has no top: the change relative to it is unbounded, never a crash
    v = cap_verdicts({REF: (100e3, None), "model": (150e3, 157e3)}, {REF: (100e3, 105e3), "model": (100e3, 105e3)})
    assert v["model"].verdict == "too noisy" and "reference" in v["model"].reason
    assert v[REF].base_text == ">= 100,000"


def test_capacity_searched_under_different_slos_is_not_compared():
    base, cur = make_pair()
    v, skipped = cmp.compare_capacity(with_capacity(base, {"model": (1e3, 1.1e3)}),
                                      with_capacity(cur, {"model": (1e3, 1.1e3)}, slos=("p99=2ms",)), REF, 0.10)
    assert v == [] and "different conditions" in skipped


def test_a_model_new_since_the_baseline_is_listed_not_judged_and_a_vanished_one_is_refused():
    base, cur = make_pair()
    cur["cells"].append({**cur["cells"][1], "model": "newcomer"})
    v = cmp.compare(base, cur, REF, 0.10, 0.01, True)
    assert {x.model for x in v} == {REF, "model"}  # the newcomer has no baseline to be judged against
    class A:
        reference, raw, alpha, min_effect = REF, False, 0.01, 0.10
    md = cmp.markdown(v, base, cur, A)
    assert "Not judged (no baseline yet" in md and "newcomer" in md
    with pytest.raises(cmp.CompareError, match="only in baseline"):
        cmp.compare(cur, base, REF, 0.10, 0.01, True)  # a cell that vanished from the current run is not a pass
