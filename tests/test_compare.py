"""The regression gate's command (``python -m loadgen.suite.compare``): exit codes, reports and bad input, on
synthetic suites. (The statistics behind its verdicts: unit/test_compare.py.)

Deterministic by construction: every suite here is synthetic (seeded noise). The end-to-end check on the real
machine (an injected server cost must show in a wall-clock suite) asserts a ratio of timings, which a loaded
machine can push either way, so it lives outside ``make test``: ``make bench-gate-check``
(tests/benchmarks/test_gate_wallclock.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT_DIR
from support.synthetic import REF, make_pair, with_capacity


def run_compare(*args):
    return subprocess.run([sys.executable, "-m", "loadgen.suite.compare", *map(str, args)], cwd=ROOT_DIR,
                          capture_output=True, text=True, timeout=120)


def write(tmp_path, name, s):
    p = tmp_path / name
    p.mkdir()
    (p / "suite.json").write_text(json.dumps(s))
    return p


def test_command_exit_codes_and_reports(tmp_path):
    base, cur = make_pair(factor_thr=0.7, factor_us=1.4)
    b, c = write(tmp_path, "b", base), write(tmp_path, "c", cur)
    out = run_compare(b, c, "--md", tmp_path / "r.md", "--json", tmp_path / "r.json")
    assert out.returncode == 1, out.stderr
    assert "REGRESSED" in (tmp_path / "r.md").read_text()
    verdicts = json.loads((tmp_path / "r.json").read_text())["verdicts"]
    assert {v["verdict"] for v in verdicts} >= {"regressed"}
    same = run_compare(b, b)
    assert same.returncode == 0 and "regressed" not in same.stdout.replace("0 regressed", "")


@pytest.mark.parametrize("case", ["missing", "schema", "cells", "kind", "reference"])
def test_bad_input_exits_2_with_one_line(tmp_path, case):
    base, cur = make_pair()
    if case == "schema":
        cur["schema_version"] = 99
    elif case == "cells":
        cur["cells"][1]["conns"] = 100
    elif case == "kind":
        cur["kind"] = "something-else"
    b = write(tmp_path, "b", base)
    c = tmp_path / "nope" if case == "missing" else write(tmp_path, "c", cur)
    extra = ["--reference", "no-such-model"] if case == "reference" else []
    out = run_compare(b, c, *extra)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "error" in out.stderr, out.stderr


# -- capacity at the SLO: one search per model per run, judged by its bracket -------------------------------------

def test_the_command_fails_on_a_capacity_regression(tmp_path):
    base, cur = make_pair()
    with_capacity(base, {REF: (100e3, 105e3), "model": (150e3, 157e3)})
    with_capacity(cur, {REF: (100e3, 105e3), "model": (100e3, 105e3)})
    out = run_compare(write(tmp_path, "b", base), write(tmp_path, "c", cur), "--json", tmp_path / "r.json")
    assert out.returncode == 1 and "capacity at the SLO" in out.stderr
    assert "### Capacity at p99=1ms" in out.stdout
    doc = json.loads((tmp_path / "r.json").read_text())
    assert {v["model"]: v["verdict"] for v in doc["capacity"]}["model"] == "regressed"
