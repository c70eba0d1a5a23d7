"""The paired-rounds core (loadgen/suite/paired.py) against real processes: a process's CPU clock read from outside,
and ``compare`` refusing cost documents from another environment. Its pure functions and the A/B verdicts built on
them are tested with hand-computed values in unit/test_paired.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loadgen.suite.paired import process_cpu_ns, process_user_kernel_s


def test_process_cpu_clock_counts_threads_that_already_ended():
    # the child burns CPU in a thread that exits, then reports its own process CPU time and waits for us: our
    # reading of its clock must include the dead thread's time (schedstat of the main thread would not)
    code = ("import threading, time, sys\n"
            "def burn():\n    t = time.thread_time_ns()\n    while time.thread_time_ns() - t < 200_000_000: pass\n"
            "th = threading.Thread(target=burn); th.start(); th.join()\n"
            "print(time.process_time_ns(), flush=True); sys.stdin.read()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        own = int(p.stdout.readline())
        seen = process_cpu_ns(p.pid)
        assert own >= 200_000_000  # the thread's burn, as the child counts it
        assert seen >= own  # our reading came later: it can only be larger
        main_thread = int(open(f"/proc/{p.pid}/schedstat").read().split()[0])
        assert main_thread < 200_000_000 <= seen  # the main thread alone did not do that work
        user, kernel = process_user_kernel_s(p.pid)  # ticks: sampled, but 200 ms of burning shows
        assert user > 0 and kernel >= 0
    finally:
        p.stdin.close()
        p.wait(30)
    with pytest.raises(ProcessLookupError):
        process_cpu_ns(p.pid)


def _cost_doc(python="3.11.7", build="main May  9 2026", gevent="26.9.0"):
    return {"kind": "echobench-cost", "schema_version": 1, "timestamp": "2026-12-05T00:00:00+00:00",
            "env": {"git_commit": "abc", "python": python, "python_implementation": "CPython", "uvloop": "0.23.0",
                    "python_build": {"version": python, "implementation": "CPython", "build": build,
                                     "compiler": "GCC 12.2.0", "optimizations": False, "lto": False, "debug": False},
                    "libraries": {"uvloop": "0.23.0", "gevent": gevent}},
            "config": {"transport": "tcp", "conns": 10, "size": 1024},
            "models": {"uvloop-protocol": {"instructions_per_msg": 4539.19, "spread": 0.0, "runs": [4539.19]}}}


@pytest.mark.parametrize("change,named", [
    ({"python": "3.12.1"}, "Python 3.11.7 vs 3.12.1"),
    ({"build": "main Jan  1 2026"}, "Python build build"),
    ({"gevent": "24.2.1"}, "gevent 26.9.0 vs 24.2.1"),
])
def test_compare_refuses_cost_documents_from_another_environment(tmp_path, change, named):
    (tmp_path / "base.json").write_text(json.dumps(_cost_doc()))
    cur = _cost_doc(**change)
    cur["models"]["uvloop-protocol"]["instructions_per_msg"] = 5192.0  # what 3.12.1 counts for the same commit
    (tmp_path / "cost.json").write_text(json.dumps(cur))
    md = tmp_path / "c.md"
    argv = [sys.executable, "-m", "loadgen.suite.compare", str(tmp_path / "base.json"), str(tmp_path / "cost.json"),
            "--md", str(md)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and not md.exists(), out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "--allow-env-mismatch" in err[0] and "Traceback" not in out.stderr
    out = subprocess.run([*argv, "--allow-env-mismatch"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr  # judged: +14.4% is a regression, and the report says on what ground
    first = md.read_text().splitlines()[0]
    assert first.startswith("**Judged despite different environments**") and named in first


def test_compare_accepts_the_same_environment(tmp_path):
    (tmp_path / "base.json").write_text(json.dumps(_cost_doc()))
    (tmp_path / "cost.json").write_text(json.dumps(_cost_doc()))
    out = subprocess.run([sys.executable, "-m", "loadgen.suite.compare", str(tmp_path / "base.json"),
                          str(tmp_path / "cost.json")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "unchanged" in out.stdout and "different environments" not in out.stdout
