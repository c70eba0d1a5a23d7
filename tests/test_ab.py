"""make bench-ab end to end (loadgen/suite/ab.py): the base's servers from a git worktree beside the head's.

Each test works on its own clone of this repository's committed HEAD, with throwaway commits made by the test.
Instruction counts repeat, so cost deltas are asserted exactly; wall-clock verdicts depend on the host's noise, so
only their form is asserted here (what they conclude is a benchmark: the README's bench-ab figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from loadgen.suite import worktree

from conftest import ROOT_DIR, require_tool

pytestmark = pytest.mark.timeout(900)  # each cost run is several callgrind runs of a few seconds
SMALL_COST = ["--n1", "300", "--n2", "900", "--repeats", "1"]
SHORT_WALL = ["--rounds", "6", "--slice", "0.2", "--warmup", "0.05"]
GIT_ID = ["-c", "user.name=echobench test", "-c", "user.email=test@echobench.invalid"]


def git(repo, *args):
    out = subprocess.run(["git", "-C", str(repo), *GIT_ID, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def clone(tmp_path: Path, name: str = "repo") -> Path:
    dest = tmp_path / name
    subprocess.run(["git", "clone", "-q", str(ROOT_DIR), str(dest)], check=True, timeout=120)
    return dest


def commit_edit(repo: Path, path: str, old: str, new: str, message: str) -> None:
    f = repo / path
    text = f.read_text()
    assert old in text, f"{path} no longer holds {old!r}: update the test's edit"
    f.write_text(text.replace(old, new, 1))
    git(repo, "commit", "-q", "-am", message)


def bench_ab(repo: Path, results: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadgen", "ab", "--repo", str(repo), "--results", str(results),
                           *args], cwd=ROOT_DIR, capture_output=True, text=True, timeout=840)


def our_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob(worktree.PREFIX + "*"))


def assert_nothing_left(repo: Path, before: set[Path]) -> None:
    trees = [line for line in git(repo, "worktree", "list", "--porcelain").splitlines() if line.startswith("worktree ")]
    assert trees == [f"worktree {repo}"], trees
    assert our_folders() <= before, our_folders() - before


def load(results: Path) -> dict:
    docs = list(results.glob("[0-9]*-ab/ab.json"))
    assert len(docs) == 1, docs
    return json.loads(docs[0].read_text())


@pytest.fixture
def tools():
    for tool in ("valgrind", "callgrind_annotate", "callgrind_control", "setarch", "taskset"):
        require_tool(tool)


def test_a_against_a_gives_exact_zero_cost_deltas_and_paired_wall_clock_ratios(tmp_path, tools):
    repo = clone(tmp_path)
    before = our_folders()
    # one model: two sides of it already run at once (the next test takes two models through the cost)
    out = bench_ab(repo, tmp_path / "results", "--base", "HEAD", "--models", "asyncio-protocol", *SMALL_COST, *SHORT_WALL)
    assert out.returncode in (0, 1), out.stderr  # 1 only if a wall-clock interval was beyond 3% on a noisy host
    doc = load(tmp_path / "results")
    assert doc["kind"] == "echobench-ab" and doc["schema_version"] == 1
    assert doc["sides"]["base"]["commit"] == doc["sides"]["head"]["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert doc["env"]["python_build"]["version"] and doc["env"]["libraries"]
    assert set(doc["cost"]) == set(doc["wall"]["models"]) == {"asyncio-protocol"}
    for m in ("asyncio-protocol",):  # single-threaded: its counts repeat exactly
        c = doc["cost"][m]
        assert c["change"] == 0.0 and c["base"] == c["head"] > 1000 and c["verdict"] == "no change", c
        w = doc["wall"]["models"][m]
        for key in ("server_ns_per_msg", "msgs_per_s", "p99_us"):
            assert w[key]["rounds"] == 6 and len(w[key]["ratios"]) == 6 and all(r > 0 for r in w[key]["ratios"])
            lo, hi = w[key]["ci"]
            assert lo <= w[key]["median"] <= hi
            assert w[key]["verdict"] in ("slower", "faster", "no change", "not told apart")
        split = w["split_us_per_msg"]
        assert split["base"]["user"] + split["base"]["kernel"] > 0 and split["head"]["user"] + split["head"]["kernel"] > 0
    assert all(": wall clock " in line for line in doc["regressions"])  # never the cost: it is exact
    md = (tmp_path / "results" / "latest-ab" / "ab.md").read_text()
    assert "### Cost" in md and "### Wall clock" in md and "| user base | user head |" in md and "| asyncio-protocol |" in md
    assert out.stdout == md  # the report on stdout is the file, ready to post
    assert_nothing_left(repo, before)


def test_a_commit_that_adds_work_to_one_model_is_flagged_there_and_nowhere_else(tmp_path, tools):
    repo = clone(tmp_path)
    # a checksum of every chunk received: ~1,000 more instructions per 1 KiB echo, in zlib's crc32
    commit_edit(repo, "servers/select_loop.py", "            if inject is not None:\n                inject()\n",
                "            zlib.crc32(view[:n])\n            if inject is not None:\n                inject()\n",
                "selectors: checksum every chunk (a throwaway regression)")
    commit_edit(repo, "servers/select_loop.py", "import selectors\n", "import selectors\nimport zlib\n",
                "selectors: import zlib")
    before = our_folders()
    out = bench_ab(repo, tmp_path / "results", "--base", "HEAD~2", "--head", "HEAD", "--only", "cost",
                   "--models", "selectors,asyncio-protocol", *SMALL_COST)
    assert out.returncode == 1, out.stderr
    doc = load(tmp_path / "results")
    sel, other = doc["cost"]["selectors"], doc["cost"]["asyncio-protocol"]
    assert sel["verdict"] == "slower" and sel["change"] > 0.01, sel
    # untouched: no change. Not always exactly 0 here: in one clean-clone run of several (2026-12-06) asyncio-protocol
    # counted 0.01 instructions per message less on the head (6 in 600 messages, 4e-7 of its count) although its
    # code did not change; the cause is not known (the two trees differ in select_loop.py, which it does not load).
    # That is far below the 1% gate and 10,000 times below selectors' change; the A/A test above stays exact.
    assert other["verdict"] == "no change" and abs(other["change"]) < 1e-4 < sel["change"] / 100, other
    assert "crc32" in sel["functions"][0]["function"] and sel["functions"][0]["delta"] > 0, sel["functions"]
    assert doc["wall"] is None
    errs = [line for line in out.stderr.splitlines() if line.startswith("regressed:")]
    assert len(errs) == 1 and "selectors: cost +" in errs[0]
    md = (tmp_path / "results" / "latest-ab" / "ab.md").read_text()
    assert "**REGRESSED**" in md and "crc32" in md and "Where the instructions moved" in md
    assert_nothing_left(repo, before)


def _one_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def test_a_base_that_does_not_exist_is_one_line_and_exit_2(tmp_path):
    repo = clone(tmp_path)
    before = our_folders()
    out = bench_ab(repo, tmp_path / "results", "--base", "no-such-branch", "--quiet")
    assert out.returncode == 2 and "'no-such-branch' is not a commit" in _one_line(out)
    assert not (tmp_path / "results").exists() and out.stdout == ""
    assert_nothing_left(repo, before)


def test_a_folder_left_by_a_killed_run_is_removed_by_the_next(tmp_path):
    repo = clone(tmp_path)
    before = our_folders()
    dead = subprocess.Popen(["true"])
    dead.wait(30)  # its PID names an owner that is gone, as a run killed with SIGKILL leaves it
    stale = Path(tempfile.mkdtemp(prefix=worktree.PREFIX))
    (stale / worktree.OWNER).write_text(f"{dead.pid}\n")
    git(repo, "worktree", "add", "--detach", "--quiet", str(stale / "base"), "HEAD")
    (stale / "base" / "servers" / "half-written.tmp").write_text("a killed run's leftovers")  # and dirty
    out = bench_ab(repo, tmp_path / "results", "--base", "no-such-branch")
    assert out.returncode == 2
    assert f"removed {stale}" in out.stderr and "left by an earlier run" in out.stderr
    assert not stale.exists()
    assert_nothing_left(repo, before)


def test_a_base_whose_servers_do_not_start_is_exit_3_and_leaves_nothing(tmp_path):
    repo = clone(tmp_path)
    commit_edit(repo, "servers/__init__.py", '"""', 'raise ImportError("broken on purpose")\n"""', "break the servers")
    before = our_folders()
    out = bench_ab(repo, tmp_path / "results", "--base", "HEAD", "--head", "HEAD~1", "--quiet", *SMALL_COST)
    assert out.returncode == 3
    line = _one_line(out)
    assert "base" in line and "do not import" in line and "broken on purpose" in line
    assert not (tmp_path / "results").exists()
    assert_nothing_left(repo, before)


def test_a_base_that_needs_other_dependencies_says_which_and_exits_2(tmp_path):
    repo = clone(tmp_path)
    commit_edit(repo, "pyproject.toml", '"psutil>=5.9"', '"psutil>=999"', "a dependency nobody has")
    before = our_folders()
    out = bench_ab(repo, tmp_path / "results", "--base", "HEAD", "--head", "HEAD~1", "--quiet")
    assert out.returncode == 2
    line = _one_line(out)
    assert "needs other dependencies" in line and "psutil>=999" in line
    assert_nothing_left(repo, before)


@pytest.mark.parametrize("args", [["--base"], ["--base", "HEAD", "--rounds", "0"], ["--base", "HEAD", "--threshold", "2"],
                                  ["--base", "HEAD", "--n1", "900", "--n2", "300"], ["--nonsense"], []])
def test_bad_arguments_are_one_line_and_write_nothing(tmp_path, args):
    out = subprocess.run([sys.executable, "-m", "loadgen", "ab", "--results", str(tmp_path / "r"), *args],
                         cwd=ROOT_DIR, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    _one_line(out)
    assert not (tmp_path / "r").exists()


def test_help_exits_0_for_the_command_and_the_dispatcher():
    for argv in (["ab", "--help"], ["--help"], []):
        out = subprocess.run([sys.executable, "-m", "loadgen", *argv], cwd=ROOT_DIR, capture_output=True, text=True,
                             timeout=60, env={**os.environ})
        assert out.returncode == 0 and "usage:" in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "loadgen", "nonsense"], cwd=ROOT_DIR, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and out.stdout == "" and "unknown command" in _one_line(out)


def test_a_run_stopped_by_sigterm_removes_its_worktree_and_writes_nothing(tmp_path, tools):
    import select
    import signal

    repo = clone(tmp_path)
    before = our_folders()
    p = subprocess.Popen([sys.executable, "-m", "loadgen", "ab", "--repo", str(repo), "--results", str(tmp_path / "r"),
                          "--base", "HEAD", "--only", "cost", "--models", "selectors", *SMALL_COST], cwd=ROOT_DIR,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # the line that says which models it measures comes once both trees exist, before the first measurement
        said = b""
        while b"models: selectors\n" not in said:
            ready, _, _ = select.select([p.stderr], [], [], 120)
            assert ready, f"bench-ab said only {said!r} within 120 s"
            chunk = os.read(p.stderr.fileno(), 4096)
            assert chunk, f"bench-ab ended early: {said!r}"
            said += chunk
        assert our_folders() - before, "the run's folder should exist while it runs"
        p.send_signal(signal.SIGTERM)  # what a CI cancel sends
        out, err = p.communicate(timeout=300)
        out, err = out.decode(), said.decode() + err.decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(30)
    assert p.returncode == 3, err
    assert "interrupted" in err and "Traceback" not in err and out == ""
    assert not (tmp_path / "r").exists()
    assert_nothing_left(repo, before)
