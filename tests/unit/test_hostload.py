"""Other processes on a run's CPUs (loadgen/hostload.py) and what the paired rounds do with them
(loadgen/suite/rounds.py): hand-made snapshots and a fake cell, no server, no socket, nothing timed. The same
accounting against real processes: tests/test_hostload.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from loadgen import hostload as hl
from loadgen.suite import rounds as rd
from loadgen.suite.paired import Slice

S, L = (0,), (1,)  # the server's CPU and the load generator's


def snap(t, procs, own=(), steal=None):
    return hl.Snapshot(t, steal or {0: 0.0, 1: 0.0}, {pid: hl.Proc(*v) for pid, v in procs.items()}, frozenset(own))


def P(cpu_s, allowed, last=None, children_s=0.0, name="x", ppid=1, start=0):
    return (cpu_s, children_s, frozenset(allowed), last, ppid, name, start)


def test_own_processes_are_never_foreign_whatever_they_use():
    a = snap(0.0, {10: P(0.0, S), 11: P(0.0, L), 12: P(0.0, {0, 1}, 0)}, own=(10, 11, 12))
    b = snap(1.0, {10: P(0.9, S), 11: P(0.8, L), 12: P(0.5, {0, 1}, 0)}, own=(10, 11, 12))
    h = hl.between(a, b, S, L)
    assert h.server_foreign_s == h.loadgen_foreign_s == 0.0 and not h.disturbed()


def test_a_foreign_process_counts_on_the_side_it_may_run_on_or_last_ran_on():
    a = snap(0.0, {20: P(1.0, S), 21: P(0.0, L), 22: P(5.0, {0, 1}, 0), 23: P(0.0, {0, 1}, 1), 24: P(0.0, {2, 3}, 2)})
    b = snap(2.0, {20: P(1.5, S), 21: P(0.2, L), 22: P(5.1, {0, 1}, 0), 23: P(0.3, {0, 1}, 1), 24: P(1.9, {2, 3}, 2)})
    h = hl.between(a, b, S, L)
    # 20 pinned to the server's CPU, 22 last ran there; 21 pinned to the load generator's, 23 last ran there; 24
    # may not run on the run's CPUs at all
    assert h.server_foreign_s == pytest.approx(0.6) and h.loadgen_foreign_s == pytest.approx(0.5)
    assert h.share("server") == pytest.approx(0.3) and h.share("loadgen") == pytest.approx(0.25)
    assert h.disturbed() and h.worst_share == pytest.approx(0.3)


def test_born_in_the_window_counts_from_zero_gone_is_left_out_reaped_children_count():
    a = snap(0.0, {30: P(9.0, S), 31: P(1.0, S, children_s=2.0)})
    b = snap(1.0, {31: P(1.0, S, children_s=2.25), 32: P(0.125, S)})
    h = hl.between(a, b, S, L)
    assert h.server_foreign_s == pytest.approx(0.375)  # 0.25 reaped by 31 in the window, 0.125 by 32 since birth


def test_a_process_tree_that_ends_in_the_window_is_not_counted_again_by_the_ancestor_that_reaps_it():
    # 50 (a test runner) started 51 (a bench), which started 52 (a server): by the first snapshot 51 had used 3 s
    # and 52 40 s; both end in the window, 50 reaps the whole tree: 43.5 s, of which 0.5 s in the window
    a = hl.Snapshot(0.0, {0: 0.0}, {50: hl.Proc(*P(1.0, S)), 51: hl.Proc(*P(3.0, S, ppid=50)),
                                    52: hl.Proc(*P(40.0, S, ppid=51))}, frozenset(), 1000.0)
    b = hl.Snapshot(1.0, {0: 0.0}, {50: hl.Proc(*P(1.0, S, children_s=43.5))}, frozenset(), 1100.0)
    assert hl.between(a, b, S, L).server_foreign_s == pytest.approx(0.5)
    # and whatever the accounting missed, no process counts for more than the run's CPUs for the whole window
    c = hl.Snapshot(1.0, {0: 0.0}, {50: hl.Proc(*P(1.0, S, children_s=90.0))}, frozenset(), 1100.0)
    assert hl.between(a, c, S, L).server_foreign_s == pytest.approx(1.0)  # the server's one CPU x 1 s


def test_a_long_lived_child_that_ends_is_not_counted_twice_and_a_missed_process_not_at_all():
    # 33 had used 1.5 s by the first snapshot and 0.25 s more before it ended; its parent 31 reaped all 1.75 s
    a = hl.Snapshot(0.0, {0: 0.0}, {31: hl.Proc(*P(1.0, S)), 33: hl.Proc(*P(1.5, S, ppid=31))}, frozenset(), 1000.0)
    b = hl.Snapshot(1.0, {0: 0.0}, {31: hl.Proc(*P(1.0, S, children_s=1.75)),
                                    34: hl.Proc(*P(5.0, S, start=500)),  # older than the first snapshot: missed
                                    35: hl.Proc(*P(0.5, S, start=1050))}, frozenset(), 1100.0)
    assert hl.between(a, b, S, L).server_foreign_s == pytest.approx(0.25 + 0.5)


def test_steal_counts_towards_a_disturbance_and_one_set_of_cpus_tells_one_figure():
    a = snap(0.0, {40: P(0.0, {0})}, steal={0: 1.0, 1: 1.0})
    b = snap(1.0, {40: P(0.02, {0})}, steal={0: 1.05, 1: 1.05})
    h = hl.between(a, b, S, L)
    assert h.steal_share == pytest.approx(0.05) and h.worst_share == pytest.approx(0.07)
    assert h.disturbed(0.05) and not h.disturbed(0.08)
    one = hl.between(a, b, (0,), (0,))  # a 1-CPU machine: the server and the load generator share CPU 0
    assert one.server_foreign_s == one.loadgen_foreign_s == pytest.approx(0.02)
    d = h.as_dict()
    assert d["server_foreign_share"] == pytest.approx(0.02) and d["busiest"] == [["x", 0.02]]


def test_descendants_follow_parent_links():
    procs = {1: hl.Proc(0, 0, frozenset(), None, 0), 5: hl.Proc(0, 0, frozenset(), None, 1),
             6: hl.Proc(0, 0, frozenset(), None, 5), 7: hl.Proc(0, 0, frozenset(), None, 6),
             8: hl.Proc(0, 0, frozenset(), None, 1)}
    assert hl.descendants(procs, (5,)) == {5, 6, 7}
    assert hl.descendants(procs, (5, 8, 0)) == {5, 6, 7, 8}


def test_a_real_snapshot_holds_this_process_and_its_children_as_own():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        s = hl.snapshot((0,))
        assert os.getpid() in s.own and child.pid in s.own
        assert os.getppid() not in s.own and 1 not in s.own  # the test runner's parent, init: foreign
        assert s.procs[os.getpid()].cpu_s > 0 and s.procs[child.pid].allowed
    finally:
        child.stdin.close()
        child.wait(timeout=30)


# -- the paired rounds: a disturbed round is rerun, a cell that runs out of reruns is marked -----------------------

class _Server:
    def __init__(self, pid):
        self.pid, self.addr = pid, ("127.0.0.1", pid)

    def alive(self):
        return True

    def stderr_tail(self):
        return ""


class _Pool:
    instances = 2
    failed: dict = {}

    def __init__(self, models):
        self.servers = {(m, i): _Server(100 + 2 * k + i) for k, m in enumerate(models) for i in range(2)}

    def get(self, m, i):
        return self.servers[(m, i)]


def _fake_cell(monkeypatch, models, disturbed_calls: set[int], rounds=6, max_reruns=None):
    calls = []

    def fake_slice(cfg, pid, addr, children=True):
        n = len(calls)
        calls.append(pid)
        share = 0.3 if n in disturbed_calls else 0.001
        host = {"wall_s": 0.2, "server_cpus": [0], "loadgen_cpus": [1], "server_foreign_s": share * 0.2,
                "loadgen_foreign_s": 0.0, "steal_s": 0.0, "worst_share": share}
        cost = 10_000.0 * (1 + models.index(next(m for (m, _i), s in pool.servers.items() if s.pid == pid)))
        return Slice(msgs_per_s=1000.0, p99_us=100.0, server_ns_per_msg=cost, messages=200, client_pct=50.0,
                     errors=0, host=host)

    monkeypatch.setattr(rd, "run_slice", fake_slice)
    monkeypatch.setattr(rd, "process_cpu_ns", lambda pid, children=True: 0)
    pool = _Pool(models)
    runs, idle, _wall = rd.measure_cell(None, models, pool, rounds, {m: False for m in models}, max_reruns=max_reruns)
    return runs, idle, calls


def test_a_disturbed_round_is_discarded_and_run_again_in_the_same_order(monkeypatch):
    models = ["a", "b", "c"]
    runs, idle, calls = _fake_cell(monkeypatch, models, disturbed_calls={4})  # round 2's second slice
    assert [r for r, _x in idle.reruns] == [1] and not idle.kept_disturbed
    assert all(len(runs[m].slices) == 6 for m in models)  # the planned rounds, all clean
    assert len(calls) == 7 * 3 and calls[3:6] == calls[6:9]  # the same models and instances, in the same order
    assert sum(len(runs[m].discarded) for m in models) == 3
    cells = rd.summarise(runs, "a", 2, "tcp", 10, 1024, bool(idle.kept_disturbed))
    assert all(not c["disturbed"] and c["host"]["worst_slice_share"] == 0.001 for c in cells)
    assert {c["reruns"] for c in cells} == {1}
    # the round's share: one slice of three lost 30% of its CPU, the others 0.1%
    assert idle.host_dict()["rerun"] == [{"round": 2, "share": pytest.approx(0.1007, abs=1e-4)}]
    assert not idle.host_dict()["disturbed"]


def test_a_cell_that_runs_out_of_reruns_keeps_the_round_and_is_marked_disturbed(monkeypatch):
    models = ["a", "b", "c"]
    # every slice of the first three attempts at round 1 is disturbed: 2 reruns allowed, the third attempt is kept
    runs, idle, calls = _fake_cell(monkeypatch, models, disturbed_calls=set(range(9)), max_reruns=2)
    assert len(idle.reruns) == 2 and [r for r, _x in idle.kept_disturbed] == [0]
    assert idle.host_dict()["disturbed"]
    cells = {c["model"]: c for c in rd.summarise(runs, "a", 2, "tcp", 10, 1024, bool(idle.kept_disturbed))}
    assert all(c["disturbed"] for c in cells.values())  # the whole load: its ratios are not tiered
    assert cells["b"]["host"]["worst_slice_share"] == 0.3 and cells["b"]["host"]["server_foreign_share"] > 0

    assert all(len(runs[m].slices) == 6 for m in models) and len(calls) == 8 * 3


def test_a_quiet_cell_reruns_nothing_and_its_models_are_not_marked(monkeypatch):
    models = ["a", "b"]
    runs, idle, calls = _fake_cell(monkeypatch, models, disturbed_calls=set())
    assert len(calls) == 12 and not idle.reruns and not idle.kept_disturbed
    cells = rd.summarise(runs, "a", 2, "tcp", 10, 1024, bool(idle.kept_disturbed))
    assert all(not c["disturbed"] and c["host"]["worst_slice_share"] == 0.001 for c in cells)


def test_a_round_is_judged_on_its_share_not_on_its_worst_slice():
    def sl(server_s, loadgen_s=0.0, steal_s=0.0):
        return Slice(msgs_per_s=1.0, p99_us=1.0, server_ns_per_msg=1.0, messages=1, client_pct=1.0, errors=0,
                     host={"wall_s": 0.2, "server_cpus": [0], "loadgen_cpus": [1], "server_foreign_s": server_s,
                           "loadgen_foreign_s": loadgen_s, "steal_s": steal_s,
                           "worst_share": max(server_s, loadgen_s) / 0.2 + steal_s / 0.4})
    burst = [sl(0.025)] + [sl(0.0)] * 9  # a 25 ms burst in one slice of ten: 1.25% of the round
    assert rd.host_share(burst) == pytest.approx(0.0125) and burst[0].disturbance == pytest.approx(0.125)
    hog = [sl(0.02)] * 10  # 10% of the server's CPU all round long
    assert rd.host_share(hog) == pytest.approx(0.10)
    assert rd.host_share([sl(0.0, 0.01, 0.02)] * 4 + [None]) == pytest.approx(0.05 + 0.05)
    assert rd.host_share([None]) == 0.0


def test_a_host_busy_for_longer_than_reruns_can_wait_is_not_waited_out(monkeypatch):
    models = ["a", "b"]
    runs, idle, calls = _fake_cell(monkeypatch, models, disturbed_calls=set(range(1000)), rounds=8)
    # 4 reruns allowed, but the third disturbed attempt in a row gives up: every round is kept, marked
    assert rd.default_reruns(8) == 4 and len(idle.reruns) == rd.GIVE_UP_AFTER - 1
    assert len(idle.kept_disturbed) == 8 and len(calls) == (8 + rd.GIVE_UP_AFTER - 1) * 2


def test_the_ab_and_pythons_reports_say_whether_their_rounds_were_disturbed():
    from loadgen.suite.ab import host_line

    quiet = {"threshold": 0.05, "rerun": [{"round": 3, "share": 0.2}], "kept_disturbed": [], "disturbed": False,
             "max_round_share": 0.021}
    busy = {**quiet, "kept_disturbed": [{"round": 5, "share": 0.31}], "disturbed": True}
    assert host_line({"a": {"host": quiet}}).startswith("The host was quiet: other processes took at most 2.1%")
    assert "1 was" in host_line({"a": {"host": quiet}})
    line = host_line({"a": {"host": quiet}, "b": {"host": busy}})
    assert line.startswith("**Disturbed**") and "b (1 rounds, up to 31%)" in line and "a (" not in line
    assert host_line({"a": {}}) == "Other processes on the run's CPUs: not measured."


def test_the_reports_first_line_says_quiet_or_which_loads_were_disturbed_and_how_much():
    from loadgen.suite import answer

    def load(conns, rerun=(), kept=(), mx=0.02):
        return {"transport": "tcp", "conns": conns, "size": 1024, "threshold": 0.05, "reruns_allowed": 5,
                "rerun": [{"round": r, "share": 0.3} for r in rerun],
                "kept_disturbed": [{"round": r, "share": x} for r, x in kept], "disturbed": bool(kept),
                "max_round_share": mx, "busiest": [["stress-ng-cpu", 1.5], ["kdamond.0", 0.1]]}

    def suite(*loads):
        return {"paired": {"disturbed_share": 0.05, "host": {f"l{i}": h for i, h in enumerate(loads)}},
                "cells": [{"host": {"steal_share": 0.004}}]}

    quiet = answer.host_text(suite(load(10), load(100, rerun=[3])))
    assert quiet.startswith("**The host was quiet**: in every round kept, other processes took at most 2.0%")
    assert "1 was: 1 at 100 conns x 1 KiB" in quiet and "`stress-ng-cpu`" in quiet and "steal at most 0.4%" in quiet
    busy = answer.host_text(suite(load(10, rerun=[1, 1], kept=[(1, 0.22), (2, 0.41)], mx=0.41), load(100)))
    assert busy.startswith("**The host was busy.**") and "at 1 of 2 loads: 10 conns x 1 KiB (2 of its rounds, up to 41%)" in busy
    assert "not tiered or ranked" in busy and "2 disturbed rounds discarded and rerun" in busy
    assert answer.host_text({"paired": {}, "cells": []}) is None  # a run from before the host was watched
