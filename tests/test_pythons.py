"""make bench-pythons end to end (loadgen/suite/pythons.py) on a real interpreter, real virtual environments
(built without packages, so no registry is needed) and real servers: two variants that are the same interpreter
and the same code give exactly the same instruction counts, and paired wall-clock ratios with intervals (what
those conclude depends on the host: only their form is asserted). The pure parts: tests/unit/test_pythons.py."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from loadgen.suite import pythons, worktree

from conftest import ROOT_DIR, require_tool

pytestmark = pytest.mark.timeout(600)
MODELS = ("asyncio-protocol",)  # one model: its tables and figure with several are tested on a hand-made document (unit)


@pytest.fixture
def tools():
    for tool in ("valgrind", "callgrind_annotate", "callgrind_control", "setarch", "taskset"):
        require_tool(tool)


def test_the_same_interpreter_twice_gives_exact_zero_cost_deltas_and_a_missing_one_is_left_out(tmp_path, tools):
    repo = tmp_path / "repo"  # a clone: the variant's @HEAD is a worktree of it, never of this checkout
    subprocess.run(["git", "clone", "-q", str(ROOT_DIR), str(repo)], check=True, timeout=120)
    before = set(worktree.ours(repo))
    cfg = pythons.PythonsConfig(variants=("current", "current@HEAD", "2.1"), packages=(), models=MODELS,
                                n1=100, n2=300, repeats=1, rounds=6, slice_s=0.1, warmup_s=0.05, instances=1,
                                cache=str(tmp_path / "cache"), results=str(tmp_path / "results"), repo=str(repo))
    log = []
    out_dir, doc = pythons.run(cfg, log.append)
    assert pythons.load_pythons(str(out_dir))["kind"] == "echobench-pythons"
    assert set(worktree.ours(repo)) == before  # the worktree of HEAD is gone

    # the variant that cannot be found is listed with its reason, not a crash
    assert list(doc["left_out"]) == ["2.1"] and "no Python 2.1 here" in doc["left_out"]["2.1"]
    assert "\n" not in doc["left_out"]["2.1"]
    a, b = (v["key"] for v in doc["variants"])
    assert doc["reference"] == a and b == a + "@HEAD"
    for v in doc["variants"]:  # which build ran the servers, asked of the interpreter itself
        assert v["build"]["version"] == platform.python_version() and v["build"]["implementation"]
        assert v["packages"] == {}
    assert doc["variants"][1]["commit"] == subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"],
                                                          capture_output=True, text=True).stdout.strip()

    # cost: the counts repeat, so the same interpreter and the same code give exactly the same count
    for m in MODELS:
        cv = doc["cost"][m]["variants"]
        assert cv[a]["instructions_per_msg"] > 1000
        assert cv[b]["instructions_per_msg"] == cv[a]["instructions_per_msg"], (m, cv)
        assert cv[b]["ratio"] == 1.0 and cv[a]["spread"] == cv[b]["spread"] == 0.0
        assert not doc["cost"][m]["moved"]["functions"]

    # wall clock: both variants' servers ran in paired rounds; the ratio to the reference has its interval
    for m in MODELS:
        w = doc["wall"]["models"][m]
        assert w["reference"] == a and set(w["variants"]) == {a, b}
        assert all(v["status"] == "ok" and v["rounds"] == 6 for v in w["variants"].values())
        r = w["variants"][b]["vs_reference"]["server_ns_per_msg"]
        assert r["n"] == 6 and r["ci"][0] <= r["median"] <= r["ci"][1]

    md = (out_dir / "pythons.md").read_text()
    assert f"`{a}` (reference)" in md and "the same on every variant" in md and "Left out: `2.1`" in md
    assert (out_dir / "pythons.png").stat().st_size > 10_000
    assert any("left out 2.1" in line for line in log)


def test_no_variant_that_can_run_is_one_line_exit_2_and_writes_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-m", "loadgen", "pythons", "--variants", "2.1 /no/such/python",
                          "--results", str(tmp_path / "r"), "--cache", str(tmp_path / "c")],
                         cwd=ROOT_DIR, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    lines = [x for x in out.stderr.splitlines() if "error" in x]
    assert len(lines) == 1 and "no variant can run here" in lines[0] and "no Python 2.1" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()

