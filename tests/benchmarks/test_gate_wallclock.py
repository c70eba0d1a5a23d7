"""The wall-clock gate end to end on this machine: an injected server cost must show and be flagged.

Not part of ``make test``: it asserts ratios of timings (the injected cost must lift server CPU per message by
more than 15%), and a loaded or noisy machine can move a whole 30 s run by that much (seen here: an unchanged
model +24% for a whole run). Run it with ``make bench-gate-check``, on a quiet machine, one benchmark at a time.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from servers import registry

from conftest import ROOT_DIR


def run_compare(*args):
    return subprocess.run([sys.executable, "-m", "loadgen.suite.compare", *map(str, args)], cwd=ROOT_DIR,
                          capture_output=True, text=True, timeout=120)


# -- a real, injected regression -----------------------------------------------------------------

MATRIX = """
[run]
trials = 10
duration = 1.0
warmup = 0.3
models = ["asyncio-protocol", "selectors"]
reference = "asyncio-protocol"
spectrum_load = {{ conns = 10, size = 1024 }}
server_args = {{ selectors = {args} }}

[[sweep]]
name = "connections"
conns = [10]
sizes = [1024]
"""


def bench(tmp_path, name, burn_ns):
    m = tmp_path / f"{name}.toml"
    m.write_text(MATRIX.format(args=json.dumps(["--burn-ns", str(burn_ns)] if burn_ns else [])))
    res = tmp_path / name
    out = subprocess.run([sys.executable, "-m", "loadgen.suite.bench", "--matrix", str(m), "--results", str(res), "--quiet"],
                         cwd=ROOT_DIR, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return res / "latest"


@pytest.mark.skipif(registry.get("selectors").unavailable_reason() is not None, reason="selectors unavailable")
def test_injected_regression_is_caught_and_small_one_is_not(tmp_path):
    base = bench(tmp_path, "base", 0)
    again = bench(tmp_path, "again", 0)
    # selectors costs ~7.5-9 us of server CPU per message here: +2.5 us is ~+30%, +0.25 us is ~+3%
    big = bench(tmp_path, "big", 2500)
    small = bench(tmp_path, "small", 250)

    def verdict(cur):
        out = run_compare(base, cur, "--json", tmp_path / "v.json")
        assert out.returncode in (0, 1), out.stderr
        v = json.loads((tmp_path / "v.json").read_text())["verdicts"]
        return out.returncode, {(x["model"], x["metric"]): x for x in v}

    rc, v = verdict(base)
    assert rc == 0, "a run compared with itself regressed"
    rc, v = verdict(again)
    if rc != 0:
        # This shared VM can shift one model for a whole 30 s run (seen once: asyncio-protocol +24% raw server
        # CPU/msg in every trial while selectors moved +2%); the gate then reports what was measured. What must
        # not happen is a false alarm that reproduces: run once more; nothing flagged before may be flagged again.
        first = {k: x["reason"] for k, x in v.items() if x["verdict"] == "regressed"}
        rc, v = verdict(bench(tmp_path, "again2", 0))
        twice = {k: (first[k], x["reason"]) for k, x in v.items() if x["verdict"] == "regressed" and k in first}
        assert not twice, f"unchanged code was flagged as regressed in two honest re-runs: {twice}"
    rc, v = verdict(big)
    cpu = v[("selectors", "server_us_per_msg")]
    assert cpu["raw_ratio"] > 1.15, f"the injected cost did not show: raw ratio {cpu['raw_ratio']}"
    assert rc == 1 and cpu["verdict"] == "regressed", cpu
    rc, v = verdict(small)
    assert v[("selectors", "server_us_per_msg")]["verdict"] != "regressed", v[("selectors", "server_us_per_msg")]
