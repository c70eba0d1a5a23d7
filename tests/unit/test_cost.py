"""The cost gate's verdict logic (loadgen/suite/compare.py) and report (loadgen/suite/cost.py) on synthetic cost
documents: no valgrind (real callgrind runs and the command's refusals: tests/test_cost.py)."""

from __future__ import annotations

import pytest

from loadgen import compare as cmp
from loadgen import cost

from support.synthetic import cost_doc


@pytest.mark.parametrize("cur, expected", [
    (10_200, "regressed"), (10_080, "unchanged"), (9_800, "improved"), (10_120, "too noisy"),
])
def test_cost_verdicts(cur, expected):
    base = cost_doc({"m": (10_000, 0.0001)})
    current = cost_doc({"m": (cur, 0.005 if expected == "too noisy" else 0.0001)})
    (v,) = cmp.compare_cost(base, current, 0.01)
    assert v.verdict == expected, v


def test_the_report_shows_where_instructions_go_and_a_side_by_side():
    d = cost_doc({"a": (30_000, 0.0), "b": (10_000, 0.0)})
    d["models"]["a"]["functions"] = [{"function": "task_step", "self_per_msg": 9_000.0, "inclusive_per_msg": 18_000.0}]
    d["models"]["b"]["functions"] = [{"function": "sock_recv", "self_per_msg": 1_000.0, "inclusive_per_msg": 1_500.0}]
    md = cost.markdown(d, ("a", "b"))
    assert "`a` vs `b`" in md and "task_step" in md and "+9,000" in md and "3.00x" in md


def test_a_model_new_since_the_cost_baseline_is_listed_not_judged_and_a_vanished_one_is_refused():
    base = cost_doc({"m": (10_000, 0.0001)})
    current = cost_doc({"m": (10_000, 0.0001), "newcomer": (5_000, 0.0001)})
    (v,) = cmp.compare_cost(base, current, 0.01)
    assert v.model == "m" and v.verdict == "unchanged"
    assert "Not judged (no baseline yet" in cmp.cost_markdown([v], base, current, 0.01)
    with pytest.raises(cmp.CompareError, match="only in baseline"):
        cmp.compare_cost(current, base, 0.01)


def test_runs_at_once_keep_the_tasks_order_and_give_each_a_cpu_and_a_folder_of_one_length(monkeypatch):
    import os
    import threading

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 5})
    both = threading.Barrier(2, timeout=10)  # two at once, or this times out
    seen = []

    def measure(task, cpu, work):
        if task < 2:
            both.wait()
        seen.append((cpu, str(work)))
        assert work.is_dir()
        return task * 10

    assert cost.measure_at_once([0, 1, 2, 3, 4], measure, 2, "eb-test-") == [0, 10, 20, 30, 40]
    assert {c for c, _ in seen} == {3, 5} and len({len(w) for _, w in seen}) == 1 and len({w for _, w in seen}) == 2
    one = []
    assert cost.measure_at_once(["x"], lambda t, c, w: one.append(c) or t, 4, "eb-test-") == ["x"] and one == [3]
