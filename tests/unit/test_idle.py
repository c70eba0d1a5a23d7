"""Connection scale's plan (loadgen/modes/idle.py): how many load-generator processes and which source addresses
a number of connections needs under a descriptor limit and the local port range, and what it refuses (the runs
themselves: tests/test_idle.py)."""

from __future__ import annotations

import pytest

from loadgen import idle


@pytest.mark.parametrize("n, hard, ports, workers, sources, want", [
    (10_000, 20_000, 28_232, None, None, (1, (None,))),
    (30_000, 20_000, 28_232, None, None, (2, ("127.0.0.1", "127.0.0.2", "127.0.0.3"))),
    (50_000, 20_000, 28_232, None, None, (3, ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"))),
    (50_000, 20_000, 28_232, 5, ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"),
     (5, ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"))),
    (1_000, 256, 28_232, None, None, (6, (None,))),
])
def test_plan_spread(n, hard, ports, workers, sources, want):
    sp = idle.plan_spread(n, "127.0.0.1", hard, ports, workers, sources)
    assert (sp.workers, sp.sources) == want
    assert (sp.why is None) == (want == (1, (None,)) or bool(workers and sources))  # why: only what was chosen for you


@pytest.mark.parametrize("kw, fragment", [
    ({"n": 50_000, "workers": 2}, "at least 3 load-generator processes"),
    ({"n": 50_000, "sources": ("127.0.0.2",)}, "at least 4 source addresses"),
    ({"n": 50_000, "host": "192.0.2.7"}, "pass --source-addrs"),
    ({"n": 10, "hard": 64}, "leaves none"),
])
def test_plan_spread_refuses_what_cannot_hold(kw, fragment):
    args = {"n": 10, "host": "127.0.0.1", "hard": 20_000, "ports": 28_232, "workers": None, "sources": None, **kw}
    with pytest.raises(ValueError, match=fragment):
        idle.plan_spread(args["n"], args["host"], args["hard"], args["ports"], args["workers"], args["sources"])
