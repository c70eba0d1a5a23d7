"""Timeline plots (loadgen/suite/timeline.py) from hand-made documents: a run's intervals with a profile's phases,
and a paired cell's slices as points (the real documents: tests/test_bench.py, tests/test_overload.py)."""

from __future__ import annotations

from loadgen.suite import timeline as tl


def interval(i, phase=None, span=0.1, **kw):
    return {"i": i, "t_s": round((i + 1) * span, 6), "span_s": span, "msgs_per_s": 1000.0 + i, "offered_per_s": 1000.0,
            "p50_us": 50.0, "p99_us": 200.0 + i, "p999_us": 400.0, "errors": 0, "server_cpu_pct": 40.0,
            "server_rss_mb": 20.0, "phase": phase, **kw}


def test_phases_merge_consecutive_intervals_of_one_kind():
    t = [interval(0, "hold"), interval(1, "hold"), interval(2, "spike"), interval(3, "spike"), interval(4, "hold")]
    assert [(k, round(a, 6), round(b, 6)) for k, a, b in tl.phases(t)] == [
        ("hold", 0.0, 0.2), ("spike", 0.2, 0.4), ("hold", 0.4, 0.5)]
    assert tl.phases([interval(0)]) == []


def test_a_paired_cells_slices_become_points_timed_from_its_first_slice():
    cell = {"slices": [
        {"started_at": 1000.5, "wall_s": 0.4, "msgs_per_s": 2.0, "p50_us": 5.0, "p99_us": 9.0, "errors": 0,
         "server_ns": 200_000_000},
        None,  # a slice that failed
        {"started_at": 1000.0, "wall_s": 0.4, "msgs_per_s": 1.0, "p50_us": 4.0, "p99_us": 8.0, "errors": 0,
         "server_ns": 100_000_000},
    ]}
    got = tl.paired_timeline(cell)
    assert [e["msgs_per_s"] for e in got] == [1.0, 2.0]  # in the order they ran
    assert [round(e["t_s"], 6) for e in got] == [0.4, 0.9] and all(e["span_s"] == 0.4 for e in got)
    assert [round(e["server_cpu_pct"], 6) for e in got] == [25.0, 50.0]
    assert tl.paired_timeline({"slices": [{"msgs_per_s": 1.0, "wall_s": 0.4}]}) == []  # written before start times


def test_a_run_and_a_paired_cell_are_drawn_and_an_empty_timeline_is_not(tmp_path):
    run = {"result": {"timeline": [interval(i, "spike" if 3 <= i < 6 else "hold") for i in range(10)]},
           "config": {"server": "m", "conns": 2, "size": 1024, "profile": "hold:1x:0.3s"}}
    assert tl.plot_timeline(run, tmp_path / "run.png").stat().st_size > 10_000
    cell = {"result": {"timeline": tl.paired_timeline({"slices": [
        {"started_at": 10.0 + k, "wall_s": 0.3, "msgs_per_s": 100.0 + k, "p50_us": 5.0, "p99_us": 9.0, "errors": 0,
         "server_ns": 10**8} for k in range(6)]})}, "config": {"server": "m", "conns": 2, "size": 1024}}
    assert tl.plot_timeline(cell, tmp_path / "cell.png", title="m_c2 (paired slices)", points=True).stat().st_size > 10_000
    assert tl.plot_timeline({"result": {"timeline": []}}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
