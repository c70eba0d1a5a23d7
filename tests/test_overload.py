"""make bench-overload end to end on one real model (loadgen/suite/overload.py), kept short: a capacity found,
a profile built from it and run, one recovery entry per spike, the files. What the figures say depends on the
host: only their form and the schedule's counts are asserted (the summary's logic: tests/unit/test_overload.py)."""

from __future__ import annotations

import json

import pytest

from loadgen import profile as pf
from loadgen.suite import overload as ov

pytestmark = pytest.mark.timeout(300)


def test_one_model_gets_a_capacity_a_profile_from_it_and_a_recovery_entry_per_spike(tmp_path):
    cfg = ov.OverloadConfig(models=("selectors",), slo="p99=50ms", conns=5, depth=4, spikes=(2.0,), hold_s=0.5,
                            spike_s=0.5, recover_s=1.0, precision=0.3, step_s=0.4, step_warmup_s=0.1,
                            start_rate=1000, max_steps=8, results=str(tmp_path))
    out_dir, doc = ov.run(cfg, log=lambda m: None)
    (e,) = doc["entries"]
    assert "error" not in e, e
    found = e["capacity"]["msgs_per_s"]
    assert found >= 1000 and e["profile"] == pf.parse("hold:0.5x:0.5s,spike:2x:0.5s,hold:0.5x:1s", base=found).canonical()
    (s,) = e["spikes"]
    assert s["times_capacity"] == 2.0 and s["due"] == pf.parse(e["profile"]).per_phase()[1]
    assert {"peak_p99_us", "peak_backlog", "recover_s", "peak_rss_mb", "fell_behind"} <= set(s)
    run = json.loads((out_dir / "runs" / "selectors.json").read_text())
    assert sum(x["due"] for x in run["result"]["timeline"]) == pf.parse(e["profile"]).total
    assert run["config"]["depth"] == 4 and run["result"]["recovery"][0]["due"] == s["due"]
    assert (out_dir / "timelines" / "selectors.png").stat().st_size > 10_000
    md = (out_dir / "overload.md").read_text()
    assert "| selectors |" in md and ("Fastest to recover" in md or "Not recovered" in md)
    assert (tmp_path / "latest-overload").resolve() == out_dir.resolve()
