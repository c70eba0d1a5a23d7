"""make bench without running it: the shipped matrices and what they plan, the report's tiers, summary and
ranking tables from synthetic cells, the processes per cell (the pipeline on a tiny matrix: tests/test_bench.py)."""

from __future__ import annotations

import pytest

from servers import registry


@pytest.mark.parametrize("name", ["default", "full"])
def test_shipped_matrices_cover_the_issue(name):
    from loadgen.suite.bench import load_matrix, plan

    m = load_matrix(name)
    models, skipped, cells = plan(m, None)
    assert set(models) | set(skipped) | set(m["run"].get("exclude", [])) == set(registry.MODELS)
    assert m["run"]["trials"] >= 3
    conns = {c for t, c, s in cells if s == 1024 and t == "tcp"}
    sizes = {s for t, c, s in cells if c == 10 and t == "tcp"}
    assert {1, 10, 100, 1000} <= conns and {64, 1024, 16384, 262144} <= sizes
    transports = {t for t, c, s in cells if (c, s) == (10, 1024)}
    assert transports - {"tls", "tcp-py"} == {"tcp", "unix", "udp"}  # the transport comparison
    if name == "full":
        assert 10000 in conns and len(sizes) > 4
        assert m["connections"]["levels"][-1] >= 50000  # connection scale: memory per connection per model
        # overload and recovery for every model, as make bench-overload runs it
        from loadgen.suite import overload

        assert overload.config_from_table(m["overload"]) == overload.OverloadConfig()
        assert m["overload"].get("models", "all") == "all"
        # TLS against plain TCP on one engine, at a small and a large message
        assert {(t, s) for t, c, s in cells if t in ("tls", "tcp-py")} == {(t, s) for t in ("tls", "tcp-py")
                                                                         for s in (1024, 65536)}
    cap = m["capacity"]  # capacity at p99 <= 1 ms for every model, at the main load
    assert cap["slo"] == ["p99=1ms"] and (cap["conns"], cap["size"]) == (10, 1024) and cap.get("models", "all") == "all"
    assert (cap.get("sweep") and cap["precision"] <= 0.05) if name == "full" else cap["precision"] <= 0.10


def test_the_connections_matrix_runs_connection_scale_alone():
    from loadgen.suite.bench import load_matrix, plan

    m = load_matrix("connections")
    models, skipped, cells = plan(m, None)
    assert cells == [("tcp", 10000, 1024)]  # the one busy cell: 10,000 connections all sending, with fairness
    assert m["connections"]["levels"][-1] >= 50000 and set(models) | set(skipped) == set(registry.MODELS)


def test_the_tls_matrix_runs_plain_and_tls_side_by_side_for_the_models_that_serve_tls():
    from loadgen.suite.bench import cell_models, load_matrix, plan

    m = load_matrix("tls")
    models, skipped, cells = plan(m, None)
    assert cells == [(t, 10, s) for s in (1024, 65536) for t in ("tcp-py", "tls")]
    assert set(cell_models(m, list(registry.MODELS), "tls")) == {n for n, x in registry.MODELS.items() if x.tls}


def test_tiers_tie_models_within_each_others_noise():
    from loadgen.suite.report import tiers

    items = [("a", 100, 95, 105), ("b", 98, 90, 101), ("c", 80, 78, 82), ("d", 60, 55, 79)]
    assert tiers(items, True) == [["a", "b"], ["c", "d"]]  # b overlaps a; d overlaps c
    # no chaining: each overlaps the next, but the third is far from the first, so it starts a tier of its own
    chain = [("x", 100, 90, 110), ("y", 88, 80, 95), ("z", 76, 70, 85)]
    assert tiers(chain, True) == [["x", "y"], ["z"]]
    assert tiers([("x", 5.0, 4.9, 5.1), ("y", 4.0, 3.9, 4.1)], False) == [["y"], ["x"]]  # lower is better


def test_the_summary_ranks_only_cells_where_the_client_had_headroom():
    from loadgen.suite.report import summary_lines

    def cell(model, thr, lo, hi, us, cb=0):
        return {"model": model, "transport": "tcp", "conns": 10, "size": 1024, "status": "ok", "trials_ok": 3,
                "verdict": "client-bound" if cb else "server-bound", "client_bound_trials": cb,
                "median": {"msgs_per_s": thr, "server_us_per_msg": us},
                "spread": {"msgs_per_s": {"min": lo, "max": hi, "n": 3},
                           "server_us_per_msg": {"min": us * 0.98, "max": us * 1.02, "n": 3}}}

    suite = {"matrix": {"run": {"trials": 3, "spectrum_load": {"conns": 10, "size": 1024}}},
             "cells": [cell("fast", 200e3, 195e3, 205e3, 4.0), cell("also-fast", 198e3, 190e3, 201e3, 4.1),
                       cell("slow", 100e3, 98e3, 102e3, 9.0), cell("threads", 150e3, 140e3, 160e3, 6.0, cb=2)],
             "capacity": {"slos": ["p99=1ms"], "conns": 10, "size": 1024, "precision": 0.1,
                          "models": {"fast": {"msgs_per_s": 150e3, "bracket": [150e3, 160e3], "complete": True, "steps": [1]},
                                     "slow": {"msgs_per_s": 60e3, "bracket": [60e3, 66e3], "complete": True, "steps": [1],
                                              "confirmed": False},
                                     "threads": {"msgs_per_s": None, "bracket": [None, 1e3], "complete": False,
                                                 "steps": [1]}}}}
    text = "\n".join(summary_lines(suite))
    assert "first: `fast`, `also-fast` (tied); then `slow`" in text
    assert "Not ranked" in text and "`threads`" in text.split("Not ranked")[1].split("\n")[0]
    # each capacity with the bracket it was found in; one that broke when run again is marked unstable
    assert "`fast` 150,000 (< 160,000), `slow` 60,000 (< 66,000) unstable" in text
    assert "No rate met p99 <= 1ms for: `threads`" in text
    assert "**Where the load generator was the limit**" in text and "`threads` at 10x1 KiB" in text


def test_ranking_tables_give_each_model_relative_to_the_go_reference():
    from loadgen.suite.report import ranking_tables

    def cell(model, us):
        return {"model": model, "transport": "tcp", "conns": 10, "size": 1024, "status": "ok", "trials_ok": 3,
                "verdict": "server-bound", "client_bound_trials": 0, "spread": {"msgs_per_s": None},
                "median": {"msgs_per_s": 1e6 / us, "server_us_per_msg": us, "p50_us": 1, "p99_us": 2,
                           "server_pct": 90, "loadgen_pct": 90}}

    suite = {"matrix": {"run": {"reference": "asyncio-protocol"}},
             "cells": [cell("go", 8.0), cell("asyncio-protocol", 10.0), cell("threads", 12.0)]}
    (title, header, rows), = ranking_tables(suite)
    col = header.index("us/msg vs go")
    assert {r[0]: r[col] for r in rows} == {"go (Go reference)": "1.00x", "asyncio-protocol": "1.25x", "threads": "1.50x"}
    suite["cells"] = suite["cells"][1:]  # no Go row (no toolchain): no Go column
    (title, header, rows), = ranking_tables(suite)
    assert "us/msg vs go" not in header and all(len(r) == len(header) for r in rows)


def test_cell_workers_use_every_cpu_given_to_the_load_generator():
    from loadgen import bench

    upper_half = tuple(range(8, 16))  # what run_suite plans on 16 CPUs
    assert bench.cell_workers(upper_half, 10) == 8
    assert bench.cell_workers(upper_half, 3) == 3  # never more processes than connections
    assert bench.cell_workers(upper_half, 1) == 1
    assert bench.cell_workers((), 10) == 1  # per host, across a cluster (no local client CPUs)
    assert bench.cell_workers((1,), 1000) == 1  # one CPU each side: one process, as before
