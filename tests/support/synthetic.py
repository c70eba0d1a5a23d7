"""Synthetic result documents for the gates' tests: suites with seeded noise (``loadgen/suite/compare.py``'s
wall-clock and capacity verdicts) and cost documents (its cost verdicts). Shared by the unit tests of the verdicts
(tests/unit/) and the end-to-end tests of the ``compare`` command (tests/test_compare.py, tests/test_cost.py)."""

from __future__ import annotations

import numpy as np

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


def make_pair(factor_thr=1.0, factor_us=1.0, cv=0.02, n=7, machine=1.0, seed=1):
    """Baseline and current; 'model' changes by the factors; the machine factor slows everything alike."""
    base = suite({REF: three_metrics(noisy(100e3, cv, n, seed), noisy(10, cv, n, seed + 1), noisy(200, cv, n, seed + 2)),
                  "model": three_metrics(noisy(120e3, cv, n, seed + 3), noisy(8, cv, n, seed + 4), noisy(180, cv, n, seed + 5))})
    cur = suite({REF: three_metrics(noisy(100e3 * machine, cv, n, seed + 6), noisy(10 / machine, cv, n, seed + 7), noisy(200, cv, n, seed + 8)),
                 "model": three_metrics(noisy(120e3 * machine * factor_thr, cv, n, seed + 9),
                                        noisy(8 / machine * factor_us, cv, n, seed + 10), noisy(180, cv, n, seed + 11))})
    return base, cur


def with_capacity(s: dict, caps: dict[str, tuple[float | None, float | None]], slos=("p99=1ms",)) -> dict:
    """Add a capacity section: {model: (held, broke)}."""
    s["capacity"] = {"slos": list(slos), "conns": 10, "size": 1024, "precision": 0.1,
                     "models": {m: {"msgs_per_s": lo, "bracket": [lo, hi], "complete": hi is not None}
                                for m, (lo, hi) in caps.items()}}
    return s


def cost_doc(models: dict[str, tuple[float, float]], **config) -> dict:
    cfg = {"transport": "tcp", "conns": 10, "size": 1024, "n1": 1000, "n2": 3000, "repeats": 2, **config}
    return {"kind": "echobench-cost", "schema_version": 1, "timestamp": "2026-11-23T00:00:00+00:00",
            "env": {"git_commit": "x"}, "config": cfg,
            "models": {k: {"instructions_per_msg": v, "spread": s, "runs": [v], "functions": []}
                       for k, (v, s) in models.items()}}
