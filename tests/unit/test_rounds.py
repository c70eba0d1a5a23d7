"""make bench's paired rounds (loadgen/suite/rounds.py) and the report's answer (loadgen/suite/answer.py): the
planner, the interval maths and the tiers are pure functions tested with hand-computed values (the cell runner
against real servers, and the user/kernel split against a real process's CPU clock: tests/test_rounds.py).
Nothing here asserts a time or a rate."""

from __future__ import annotations

import itertools

import pytest

from loadgen.suite import answer
from loadgen.suite import rounds as rd
from loadgen.suite.paired import Slice

MODELS = ["a", "b", "c", "d", "e"]


def test_every_round_visits_every_model_once_and_the_rotation_is_balanced():
    for k, n in ((5, 10), (10, 10), (3, 12), (4, 6)):
        models = MODELS[:k] if k <= 5 else [f"m{i}" for i in range(k)]
        plan = rd.plan_rounds(models, n, instances=2)
        assert len(plan) == n
        for r, order in enumerate(plan):
            assert sorted(m for m, _ in order) == sorted(models)  # each once: the reference is in every round
            assert {i for _, i in order} == {(r // 2) % 2}  # one instance of every model per round
        first = [order[0][0] for order in plan]
        last = [order[-1][0] for order in plan]
        counts_first = [first.count(m) for m in models]
        counts_last = [last.count(m) for m in models]
        # balanced: equally often first and last (to within one when the rounds are not a multiple of the models)
        assert max(counts_first) - min(counts_first) <= 1 and max(counts_last) - min(counts_last) <= 1
        if n % k == 0:
            assert set(counts_first) == set(counts_last) == {n // k}
        # each model's two instances get as many rounds as each other when the rounds are a multiple of 4
        inst = [sum(1 for order in plan if order[0][1] == i) for i in (0, 1)]
        assert abs(inst[0] - inst[1]) <= (0 if n % 4 == 0 else 2)
        # neighbours: of two models next to each other, each runs just before the other about as often
        for a, b in itertools.combinations(models, 2):
            ab = sum(1 for o in plan for x, y in zip(o, o[1:]) if (x[0], y[0]) == (a, b))
            ba = sum(1 for o in plan for x, y in zip(o, o[1:]) if (x[0], y[0]) == (b, a))
            assert abs(ab - ba) <= 1


@pytest.mark.parametrize("bad", [dict(rounds=0), dict(models=[]), dict(instances=0)])
def test_the_planner_refuses_nothing_to_plan(bad):
    args = {"models": MODELS, "rounds": 4, "instances": 2, **bad}
    with pytest.raises(ValueError):
        rd.plan_rounds(**args)


@pytest.mark.parametrize("n, lo, hi", [(6, 1, 6), (7, 1, 7), (8, 1, 8), (9, 2, 8), (10, 2, 9), (11, 2, 10),
                                       (12, 3, 10), (13, 3, 11), (14, 3, 12), (15, 4, 12), (17, 5, 13), (20, 6, 15)])
def test_the_interval_is_the_textbook_one(n, lo, hi):
    # the distribution-free 95% interval of a median (the sign test's table): ranks (lo, hi) of n sorted values
    xs = [float(x) for x in range(n, 0, -1)]
    assert rd.interval(xs)["ci"] == [float(lo), float(hi)]
    assert rd.interval(xs)["coverage"] >= 0.95


def _slices(values_by_model: dict[str, list[float]], drift: list[float]) -> dict[str, list[Slice]]:
    """Synthetic rounds: each model's server CPU per message is its value times the host's speed in that round."""
    out = {}
    for m, vals in values_by_model.items():
        out[m] = [Slice(msgs_per_s=1e9 / (v * d), p99_us=v * d, server_ns_per_msg=v * d, messages=1000,
                        client_pct=50.0, errors=0) for v, d in zip(vals, drift)]
    return out


# the host's speed moves by 1.6x from round to round: paired ratios must not see it
DRIFT = [1.0, 1.6, 1.1, 1.45, 1.2, 1.0, 1.55, 1.3, 1.05, 1.5]
JITTER = [1.004, 0.997, 1.002, 0.995, 1.001, 0.999, 1.003, 0.996, 1.0, 0.998]  # +-0.5%, symmetric


def _tiers(per_round, metric="server_ns_per_msg"):
    order = sorted(per_round, key=lambda m: sorted(s.server_ns_per_msg / d for s, d in zip(per_round[m], DRIFT))[5])

    def is_tied(a, b):
        return rd.tied(rd.pair_ratios(per_round, b, a, metric))
    return rd.tiers(order, is_tied)


def test_tiers_from_paired_intervals_tie_order_and_do_not_chain():
    base = [1000.0] * 10
    # tied: the same cost, each round's jitter in opposite directions
    tied = _slices({"a": base, "b": [v * j for v, j in zip(base, JITTER)]}, DRIFT)
    assert _tiers(tied) == [["a", "b"]]
    # ordered: 3% apart, under a drift of 60%: the rounds tell them apart
    ordered = _slices({"a": base, "b": [1030.0 * j for j in JITTER]}, DRIFT)
    assert _tiers(ordered) == [["a"], ["b"]]
    r = rd.interval(rd.pair_ratios(ordered, "b", "a", "server_ns_per_msg"))
    assert 1.0 < r["ci"][0] and r["ci"][1] < 1.04
    # not chaining: b is tied with a and with c, a and c are apart: a's tier takes b, c starts the next
    ab = [0.985, 0.995, 1.005, 1.01, 1.012, 1.015, 1.018, 1.02, 1.025, 1.03]  # b/a per round: 95% CI .995-1.025
    bc = list(reversed(ab))  # c/b: the same interval; c/a = ab x bc > 1 in every round
    chain = _slices({"a": [1000.0] * 10, "b": [1000.0 * x for x in ab],
                     "c": [1000.0 * x * y for x, y in zip(ab, bc)]}, DRIFT)
    assert rd.tied(rd.pair_ratios(chain, "b", "a", "server_ns_per_msg"))
    assert rd.tied(rd.pair_ratios(chain, "c", "b", "server_ns_per_msg"))
    assert rd.tied(rd.pair_ratios(chain, "c", "a", "server_ns_per_msg")) is False
    assert _tiers(chain) == [["a", "b"], ["c"]]
    # too few rounds for a 95% interval: nothing is ordered
    few = {m: xs[:4] for m, xs in ordered.items()}
    assert rd.tied(rd.pair_ratios(few, "b", "a", "server_ns_per_msg")) is None
    assert rd.tiers(["a", "b"], lambda a, b: rd.tied(rd.pair_ratios(few, b, a, "server_ns_per_msg"))) == [["a", "b"]]


def test_a_round_a_model_missed_is_left_out_of_its_ratios_only():
    per_round = _slices({"a": [1000.0] * 10, "b": [1100.0] * 10}, DRIFT)
    per_round["b"][3] = None
    assert len(rd.pair_ratios(per_round, "b", "a", "server_ns_per_msg")) == 9
    assert all(abs(x - 1.1) < 1e-9 for x in rd.pair_ratios(per_round, "b", "a", "server_ns_per_msg"))


def test_the_split_adds_up_to_the_total_and_its_interval_narrows_with_ticks():
    lo, hi = rd.wilson(20, 100)
    assert lo < 0.2 < hi and abs(lo - 0.1333) < 1e-3 and abs(hi - 0.2888) < 1e-3  # the textbook Wilson interval
    assert rd.wilson(0, 0) == (0.0, 1.0)
    few = [Slice(1.0, 1.0, 5000.0, 1000, 50.0, 0, server_user_s=0.02, server_kernel_s=0.08)]
    many = few * 50
    for xs in (few, many):
        sp = rd.split_us(xs, (5.0, 4.8, 5.2))
        assert sp["user_us_per_msg"] + sp["kernel_us_per_msg"] == pytest.approx(5.0)
        assert sp["user_share"] == pytest.approx(0.2)
        assert sp["user_ci"][0] <= sp["user_us_per_msg"] <= sp["user_ci"][1]
    narrow, wide = rd.split_us(many, (5.0, 4.8, 5.2)), rd.split_us(few, (5.0, 4.8, 5.2))
    assert narrow["user_ci"][1] - narrow["user_ci"][0] < wide["user_ci"][1] - wide["user_ci"][0]
    assert rd.split_us([Slice(1.0, 1.0, 5000.0, 1000, 50.0, 0)], (5.0, 4.8, 5.2)) is None  # no ticks: no split


def test_a_paired_matrix_needs_its_keys_and_says_which_in_one_line(tmp_path):
    from loadgen.suite.bench import MatrixError, load_matrix

    base = "[run]\ntrials = 1\nduration = 0.1\nwarmup = 0.0\n{extra}\n[[sweep]]\nname = \"x\"\nconns = [1]\nsizes = [64]\n"
    for extra, fragment in (('mode = "paired"\nslice = 0.1\nslice_warmup = 0.0', "needs rounds"),
                            ('mode = "paired"\nrounds = 2\nslice = 0.1\nslice_warmup = 0.0', "rounds: an integer >= 3"),
                            ('mode = "paired"\nrounds = 6\nslice = 0\nslice_warmup = 0.0', "slice: seconds > 0"),
                            ('mode = "paired"\nrounds = 6\nslice = 0.1\nslice_warmup = 0.0\ninstances = 0', "instances"),
                            ('mode = "fast"', "mode")):
        p = tmp_path / "m.toml"
        p.write_text(base.format(extra=extra))
        with pytest.raises(MatrixError, match=fragment):
            load_matrix(str(p))
    p.write_text(base.format(extra='mode = "paired"\nrounds = 6\nslice = 0.1\nslice_warmup = 0.0'))
    assert load_matrix(str(p))["run"]["rounds"] == 6


def test_the_answer_ranks_by_paired_intervals_and_names_the_saturated():
    def cell(m, us, user, vs, lo, hi, pairs, sat=0):
        return {"model": m, "median": {"server_us_per_msg": us, "msgs_per_s": 1e6 / us},
                "ci": {"server_us_per_msg": {"median": us, "ci": [us * 0.98, us * 1.02]}},
                "split": {"user_us_per_msg": user, "kernel_us_per_msg": us - user, "user_ci": [user * 0.9, user * 1.1]},
                "vs_reference": {"server_ns_per_msg": {"median": vs, "ci": [lo, hi]}} if vs else {},
                "pairs": {"server_ns_per_msg": pairs, "msgs_per_s": {k: [1 / v[0], 1 / v[2], 1 / v[1]]
                                                                      for k, v in pairs.items()}},
                "client_bound_trials": sat}
    cells = [cell("uv", 4.0, 0.6, 0.80, 0.78, 0.82, {"ref": [0.8, 0.78, 0.82], "go": [0.99, 0.97, 1.01]}, sat=3),
             cell("go", 4.05, 0.5, 0.81, 0.79, 0.83, {"ref": [0.81, 0.79, 0.83], "uv": [1.01, 0.99, 1.03]}),
             cell("ref", 5.0, 1.5, None, None, None, {"uv": [1.25, 1.22, 1.28], "go": [1.23, 1.2, 1.26]})]
    assert answer.cost_tiers(cells) == [["uv", "go"], ["ref"]]
    assert answer.throughput_tiers(cells) == ([["go"], ["ref"]], ["uv"])  # saturated: never ranked on msgs/s
    suite = {"paired": {"reference": "ref", "rounds": 10}, "matrix": {"run": {"reference": "ref"}}}
    text = answer.answer(suite, cells, 10, 1024, None)
    assert "`uv`, `go` (tied)" in text and "0.80x [0.78-0.82]" in text and "saturated in some slice for `uv`" in text
    cost = {"models": {"uv": {"instructions_per_msg": 4500}, "go": {"instructions_per_msg": 3000},
                       "ref": {"instructions_per_msg": 12000}}}
    assert answer.disagreements(cells, cost) == []  # more instructions, more user time, pair by pair
    cost["models"]["go"]["instructions_per_msg"] = 6000  # go counts more but spends less user time: 33% apart
    bad = answer.disagreements(cells, cost)
    assert len(bad) == 1 and bad[0].startswith("`uv` 4,500") and bad[0].endswith("(user-time intervals overlap)")
    assert answer._agrees(cells, cost)  # overlapping intervals: the split cannot order them, no contradiction
    cells[1]["split"]["user_ci"] = [0.3, 0.4]  # go's user time now clearly below uv's: a real disagreement
    assert not answer._agrees(cells, cost) and answer.disagreements(cells, cost)[0].endswith("intervals apart)")


def test_instruction_counts_are_taken_from_the_same_commit_only(tmp_path):
    import json

    for name, commit, ts in (("a-cost", "abc", "2026-01-01T00:00:00"), ("b-cost", "abc", "2026-01-02T00:00:00"),
                             ("c-cost", "def", "2026-01-03T00:00:00")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cost.json").write_text(json.dumps({"kind": "echobench-cost", "timestamp": ts,
                                                               "env": {"git_commit": commit}, "models": {}}))
    assert answer.cost_at_commit(tmp_path, "abc")["path"].endswith("b-cost/cost.json")
    assert answer.cost_at_commit(tmp_path, "zzz") is None and answer.cost_at_commit(tmp_path, None) is None
