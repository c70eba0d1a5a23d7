"""make bench beside other processes (loadgen/hostload.py, loadgen/suite/rounds.py): a busy loop on the server's
CPU is seen, its rounds rerun and the load marked and said first in the report; a tiny bench's own processes are
never counted as other processes' CPU. Nothing here asserts a time or a rate: the disturbance is a busy loop
that always takes a share of its CPU, and the quiet run is checked against an independent count of the same
CPUs, which a loaded machine only makes larger. (The accounting on hand-made snapshots: unit/test_hostload.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from servers import registry

from conftest import ROOT_DIR

MODELS = [m for m in ("asyncio-protocol", "selectors") if registry.get(m).unavailable_reason() is None]

MATRIX = """
[run]
mode = "paired"
rounds = 6
slice = 0.1
slice_warmup = 0.05
max_reruns = 2
trials = 1
duration = 0.1
warmup = 0.05
models = {models}
reference = "asyncio-protocol"
spectrum_load = {{ conns = 2, size = 1024 }}

[[sweep]]
name = "main"
conns = [2]
sizes = [1024]
"""


def _cpus():
    from loadgen.config import LoadConfig
    from loadgen.runner import plan_cpus

    client, server = plan_cpus(LoadConfig(server="placeholder"))
    return client, server


def _bench(tmp_path, extra_env=None, preexec=None):
    matrix = tmp_path / "m.toml"
    matrix.write_text(MATRIX.format(models=json.dumps(MODELS)))
    results = tmp_path / "results"
    out = subprocess.run([sys.executable, "-m", "loadgen.suite.bench", "--matrix", str(matrix), "--results", str(results)],
                         cwd=ROOT_DIR, capture_output=True, text=True, timeout=300, preexec_fn=preexec,
                         env={**os.environ, **(extra_env or {})})
    assert out.returncode == 0, out.stderr
    run = (results / "latest").resolve()
    return run, json.loads((run / "suite.json").read_text()), out


@pytest.mark.skipif(len(MODELS) < 2, reason="needs asyncio-protocol and selectors")
def test_a_busy_loop_on_the_server_cpu_is_seen_rerun_marked_and_said_first(tmp_path):
    _client, server = _cpus()
    # a busy loop at the same priority as the servers, pinned to their CPU for the whole run: every round takes a
    # large share of that CPU, so the reruns cannot find a clean one and the load is kept as disturbed
    hog = subprocess.Popen([sys.executable, "-c", "import os, sys\nos.sched_setaffinity(0, {%d})\nwhile True: pass"
                            % server[0]])
    try:
        run, suite, out = _bench(tmp_path)
    finally:
        hog.kill()
        hog.wait(timeout=30)
    host = suite["paired"]["host"]["paired_c2_s1024"]
    assert len(host["rerun"]) == 2 and host["kept_disturbed"] and host["disturbed"], host
    assert all(x["share"] > suite["paired"]["disturbed_share"] for x in host["rerun"] + host["kept_disturbed"])
    cells = suite["cells"]
    assert cells and all(c["disturbed"] and c["rounds"] == 6 and c["reruns"] == 2 for c in cells)
    assert all(c["host"]["server_foreign_share"] > 0.05 for c in cells)
    # the hog is named: the slices record the busiest other processes
    assert any(name.startswith("python") for name, _s in host["busiest"]), host["busiest"]
    # the discarded rounds' slices are kept in each model's cell document
    doc = json.loads(next((run / "cells").glob("selectors_*.json")).read_text())
    assert len(doc["discarded"]) == 2 and len(doc["slices"]) == 6
    md = (run / "report.md").read_text()
    first = md.split("## The answer")[0]
    assert "## The host" in first and "**The host was busy.**" in first and "2 conns x 1 KiB" in first, md[:1500]
    assert "not tiered or ranked" in md.split("## The answer")[1].split("##")[0]  # the answer does not rank
    assert "(host busy: not tiered)" in md
    assert out.stdout.startswith("**The host was busy.**")  # stdout's summary says it first too
    # the README quotes quiet runs only: asked for this run's block, one line and exit 3
    r = subprocess.run([sys.executable, "-m", "loadgen.suite.report", str(run), "--readme"], cwd=ROOT_DIR,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and not r.stdout and len(r.stderr.splitlines()) == 1 and "busy" in r.stderr, r


@pytest.mark.skipif(len(MODELS) < 2, reason="needs asyncio-protocol and selectors")
def test_a_tiny_bench_never_counts_its_own_processes_as_other_processes(tmp_path):
    """The CPU the bench reports as other processes', summed over its slices, is at most what an independent count
    finds over the whole run: every CPU's busy time from /proc/stat minus the CPU of the bench's whole process
    tree (its servers, load generator workers and itself, reaped). Counting one of its own servers or workers
    would put roughly a CPU's worth of each slice on the bench's side of this inequality."""
    def busy_s():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4] - v[7]) / os.sysconf("SC_CLK_TCK")  # user .. softirq, not idle/iowait/steal

    t0, b0 = os.times(), busy_s()
    run, suite, _out = _bench(tmp_path)
    t1, b1 = os.times(), busy_s()
    tree = (t1.children_user + t1.children_system) - (t0.children_user + t0.children_system)
    mine = (t1.user + t1.system) - (t0.user + t0.system)
    independent = (b1 - b0) - tree - mine
    reported = 0.0
    for p in (run / "cells").glob("*.json"):
        for s in json.loads(p.read_text())["slices"] + json.loads(p.read_text())["discarded"]:
            h = s["host"]
            assert h is not None and h["wall_s"] > 0
            reported += h["server_foreign_s"] + (h["loadgen_foreign_s"] if h["loadgen_cpus"] != h["server_cpus"] else 0)
    slices_s = sum(c["host"]["slices"] for c in suite["cells"]) * 0.1
    # tolerance: /proc/stat's 10 ms units on each CPU at both ends, and 5% of the slices' time
    assert reported <= max(0.0, independent) + 0.02 * os.cpu_count() + 0.05 * slices_s, (reported, independent, tree)
    assert "## The host" in (run / "report.md").read_text().split("## The answer")[0]


@pytest.mark.parametrize("command", [["loadgen/run.py", "--server", "asyncio-protocol", "--duration", "0.2"],
                                     ["-m", "loadgen.suite.bench", "--matrix", "default"],
                                     ["-m", "loadgen", "overload"]])
def test_quiet_host_refuses_to_start_beside_a_busy_loop_and_names_it(command, tmp_path):
    client, server = _cpus()
    hog = subprocess.Popen([sys.executable, "-c", "import os\nos.sched_setaffinity(0, {%d})\nwhile True: pass" % server[0]])
    try:
        out = subprocess.run([sys.executable, *command, "--quiet-host", "--results" if "-m" in command else "--json",
                              str(tmp_path / "out")], cwd=ROOT_DIR, capture_output=True, text=True, timeout=120)
    finally:
        hog.kill()
        hog.wait(timeout=30)
    assert out.returncode == 3, out
    assert len(out.stderr.splitlines()) == 1 and "--quiet-host: other processes used" in out.stderr, out.stderr
    assert "python" in out.stderr and not out.stdout and not (tmp_path / "out").exists()
