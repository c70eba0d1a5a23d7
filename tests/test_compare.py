"""The regression gate: statistics on synthetic suites and bad input.

Deterministic by construction: every suite here is synthetic (seeded noise). The end-to-end check on the real
machine (an injected server cost must show in a wall-clock suite) asserts a ratio of timings, which a loaded
machine can push either way, so it lives outside ``make test``: ``make bench-gate-check``
(tests/benchmarks/test_gate_wallclock.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT_DIR

from loadgen import compare as cmp

REF = "asyncio-protocol"


def suite(cells: dict[str, dict[str, list[float]]], conns=10, size=1024, schema=1) -> dict:
    """A minimal suite: {model: {metric: per-trial values}}."""
    out = []
    for model, metrics in cells.items():
        n = len(next(iter(metrics.values())))
        out.append({"model": model, "conns": conns, "size": size,
                    "per_trial": [{"trial": t, **{m: vals[t] for m, vals in metrics.items()}} for t in range(n)]})
    return {"kind": "echobench-suite", "schema_version": schema, "timestamp": "2026-11-22T00:00:00+00:00",
            "env": {"git_commit": "x"}, "cells": out}


def noisy(mean: float, cv: float, n: int, seed: int) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, mean * cv, n))


def three_metrics(thr, us, p99):
    return {"msgs_per_s": thr, "server_us_per_msg": us, "p99_us": p99}


def verdicts_of(base, cur, **kw):
    v = cmp.compare(base, cur, REF, kw.get("min_effect", 0.10), kw.get("alpha", 0.01), kw.get("normalise", True))
    return {(x.model, x.metric): x for x in v}


def make_pair(factor_thr=1.0, factor_us=1.0, cv=0.02, n=7, machine=1.0, seed=1):
    """Baseline and current; 'model' changes by the factors; the machine factor slows everything alike."""
    base = suite({REF: three_metrics(noisy(100e3, cv, n, seed), noisy(10, cv, n, seed + 1), noisy(200, cv, n, seed + 2)),
                  "model": three_metrics(noisy(120e3, cv, n, seed + 3), noisy(8, cv, n, seed + 4), noisy(180, cv, n, seed + 5))})
    cur = suite({REF: three_metrics(noisy(100e3 * machine, cv, n, seed + 6), noisy(10 / machine, cv, n, seed + 7), noisy(200, cv, n, seed + 8)),
                 "model": three_metrics(noisy(120e3 * machine * factor_thr, cv, n, seed + 9),
                                        noisy(8 / machine * factor_us, cv, n, seed + 10), noisy(180, cv, n, seed + 11))})
    return base, cur


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


# -- the command ------------------------------------------------------------------------------

def run_compare(*args):
    return subprocess.run([sys.executable, "-m", "loadgen.suite.compare", *map(str, args)], cwd=ROOT_DIR,
                          capture_output=True, text=True, timeout=120)


def write(tmp_path, name, s):
    p = tmp_path / name
    p.mkdir()
    (p / "suite.json").write_text(json.dumps(s))
    return p


def test_command_exit_codes_and_reports(tmp_path):
    base, cur = make_pair(factor_thr=0.7, factor_us=1.4)
    b, c = write(tmp_path, "b", base), write(tmp_path, "c", cur)
    out = run_compare(b, c, "--md", tmp_path / "r.md", "--json", tmp_path / "r.json")
    assert out.returncode == 1, out.stderr
    assert "REGRESSED" in (tmp_path / "r.md").read_text()
    verdicts = json.loads((tmp_path / "r.json").read_text())["verdicts"]
    assert {v["verdict"] for v in verdicts} >= {"regressed"}
    same = run_compare(b, b)
    assert same.returncode == 0 and "regressed" not in same.stdout.replace("0 regressed", "")


@pytest.mark.parametrize("case", ["missing", "schema", "cells", "kind", "reference"])
def test_bad_input_exits_2_with_one_line(tmp_path, case):
    base, cur = make_pair()
    if case == "schema":
        cur["schema_version"] = 99
    elif case == "cells":
        cur["cells"][1]["conns"] = 100
    elif case == "kind":
        cur["kind"] = "something-else"
    b = write(tmp_path, "b", base)
    c = tmp_path / "nope" if case == "missing" else write(tmp_path, "c", cur)
    extra = ["--reference", "no-such-model"] if case == "reference" else []
    out = run_compare(b, c, *extra)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "error" in out.stderr, out.stderr


# -- capacity at the SLO: one search per model per run, judged by its bracket -------------------------------------

def with_capacity(s: dict, caps: dict[str, tuple[float | None, float | None]], slos=("p99=1ms",)) -> dict:
    """Add a capacity section: {model: (held, broke)}."""
    s["capacity"] = {"slos": list(slos), "conns": 10, "size": 1024, "precision": 0.1,
                     "models": {m: {"msgs_per_s": lo, "bracket": [lo, hi], "complete": hi is not None}
                                for m, (lo, hi) in caps.items()}}
    return s


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


def test_the_command_fails_on_a_capacity_regression(tmp_path):
    base, cur = make_pair()
    with_capacity(base, {REF: (100e3, 105e3), "model": (150e3, 157e3)})
    with_capacity(cur, {REF: (100e3, 105e3), "model": (100e3, 105e3)})
    out = run_compare(write(tmp_path, "b", base), write(tmp_path, "c", cur), "--json", tmp_path / "r.json")
    assert out.returncode == 1 and "capacity at the SLO" in out.stderr
    assert "### Capacity at p99=1ms" in out.stdout
    doc = json.loads((tmp_path / "r.json").read_text())
    assert {v["model"]: v["verdict"] for v in doc["capacity"]}["model"] == "regressed"


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
