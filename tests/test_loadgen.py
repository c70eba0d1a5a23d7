"""loadgen/run.py as a user runs it: real processes, real sockets, real and broken servers."""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest

from servers import registry

from conftest import MODEL_PARAMS, ROOT_DIR, model_params

RUN = [sys.executable, str(ROOT_DIR / "loadgen" / "run.py")]
QUICK = ["--duration", "0.8", "--warmup", "0.2"]
DEFAULT_MODEL = "uvloop-protocol" if registry.get("uvloop-protocol").unavailable_reason() is None else "asyncio-protocol"


def loadgen(tmp_path, *args, engine=None, timeout=90, preexec_fn=None, cwd=ROOT_DIR):
    """Run the load generator (on ``engine``, or its default); return (CompletedProcess, result document or None)."""
    path = tmp_path / f"r{time.perf_counter_ns()}.json"
    extra = ["--engine", engine] if engine else []
    out = subprocess.run([*RUN, *args, *extra, "--json", str(path)], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, preexec_fn=preexec_fn)
    doc = json.loads(path.read_text()) if path.exists() else None
    return out, doc


def assert_one_line_error(out):
    lines = [x for x in out.stderr.strip().splitlines() if not x.startswith("loadgen: ")]
    assert len(lines) == 1, f"expected one error line, got:\n{out.stderr}"
    assert "Traceback" not in out.stderr


# -- a clean run and its document -------------------------------------------------------------

def test_clean_run_writes_a_complete_versioned_document(tmp_path, engine):
    hdr = tmp_path / "lat.hdr"
    out, doc = loadgen(tmp_path, "--server", DEFAULT_MODEL, "--conns", "10", *QUICK, "--hdr", str(hdr), engine=engine)
    assert out.returncode == 0, out.stderr
    assert doc["schema_version"] == 2 and doc["result"]["capacity"] is None
    assert dt.datetime.fromisoformat(doc["timestamp"]).utcoffset() == dt.timedelta(0)
    for key in ("cpu_model", "cpu_count", "kernel", "python", "uvloop", "echobench", "git_commit"):
        assert key in doc["env"]
    assert doc["config"]["conns"] == 10 and doc["config"]["server"] == DEFAULT_MODEL
    assert doc["config"]["engine"] == engine and doc["config"]["engine_note"] is None
    r = doc["result"]
    assert r["complete"] is True and r["integrity_failures"] == 0 and r["errors"] == {}
    assert r["messages"] > 0 and r["bytes"] == r["messages"] * 1024
    assert r["msgs_per_s"] == pytest.approx(r["messages"] / r["duration_s"], rel=0.01)
    for k in ("p50", "p90", "p99", "p999", "p9999", "max", "mean"):
        assert r["latency_us"][k] > 0
    assert r["latency_us"]["p50"] <= r["latency_us"]["p99"] <= r["latency_us"]["max"]
    assert r["latency_us"]["count"] == r["messages"]
    assert r["latency_uncorrected_us"] is None  # closed loop
    assert r["cpu"]["server_us_per_msg"] > 0 and r["cpu"]["loadgen_pct"] > 0
    assert r["verdict"] in ("server-bound", "client-bound", "both-saturated", "neither")
    assert r["fairness"]["connections"] == 10 and 0 < r["fairness"]["jain"] <= 1
    assert len(r["timeline"]) >= 1 and all("msgs_per_s" in t and "p99_us" in t for t in r["timeline"])
    assert r["histogram"] and r["connections"] == {"requested": 10, "established": 10}
    assert set(doc["pinning"]["loadgen_cpus"]).isdisjoint(doc["pinning"]["server_cpus"]) or len(os.sched_getaffinity(0)) == 1
    assert "Percentile" in hdr.read_text()
    assert "throughput" in out.stdout and "verdict" in out.stdout


@pytest.mark.parametrize("model", MODEL_PARAMS)
def test_1000_connections_against_every_model(tmp_path, model, engine):
    out, doc = loadgen(tmp_path, "--server", model, "--conns", "1000", "--duration", "1", "--warmup", "0.5", "--quiet",
                       engine=engine)
    assert out.returncode == 0, out.stderr
    r = doc["result"]
    assert r["connections"]["established"] == 1000
    assert r["integrity_failures"] == 0 and r["complete"]
    # every connection's first echo completes (warm-up, window or drain) however slow the machine
    assert r["fairness"]["connections"] == 1000 and r["messages_total"] >= 1000
    assert out.stderr == ""  # --quiet


# -- every byte checked -----------------------------------------------------------------------

def test_one_corrupt_byte_in_a_million_is_caught(tmp_path, fault_server, engine):
    s = fault_server("corrupt", "--every", "1000000")
    # 16 KiB messages: the millionth byte is in message 61, reached however slow the machine
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--conns", "4", "--size", "16k", *QUICK, engine=engine)
    r = doc["result"]
    assert out.returncode != 0
    assert r["integrity"].get("corrupt", 0) >= 1, r["integrity"]
    assert "integrity failure" in out.stderr


def test_a_dropped_byte_is_caught(tmp_path, fault_server, engine):
    s = fault_server("drop", "--every", "1000000")
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--conns", "4", "--size", "16k", *QUICK, "--timeout", "0.5",
                       engine=engine)
    r = doc["result"]
    assert out.returncode != 0
    assert r["integrity"].get("lost", 0) >= 1, r["integrity"]


def test_reordered_messages_are_caught(tmp_path, fault_server, engine):
    s = fault_server("reorder", "--every", "100000", "--size", "1024")
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--conns", "2", "--depth", "2", *QUICK, engine=engine)
    r = doc["result"]
    assert out.returncode != 0
    assert r["integrity"].get("sequence", 0) >= 1, r["integrity"]


def test_reported_count_matches_what_the_server_echoed(tmp_path, fault_server, engine):
    s = fault_server("count")
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--conns", "8", "--workers", "2", "--size", "100", *QUICK,
                       engine=engine)
    assert out.returncode == 0, out.stderr
    s.proc.send_signal(signal.SIGTERM)
    echoed = int(s.proc.stdout.readline().split()[1])
    r = doc["result"]
    assert echoed == r["messages_total"] * 100
    assert 0 < r["messages"] < r["messages_total"]  # warm-up and drain are not in the measured count
    assert sum(t["msgs_per_s"] > 0 for t in r["timeline"]) >= 1


# -- coordinated omission -----------------------------------------------------------------------

def test_open_loop_latency_shows_a_stall_that_closed_timing_hides(tmp_path, fault_server, engine):
    s = fault_server("stall", "--after-s", "1.0")  # 0.5 s without reading, 1 s after the first byte
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--conns", "1", "--rate", "1000",
                       "--duration", "3", "--warmup", "0.5", "--timeout", "3", engine=engine)
    assert out.returncode == 0, out.stderr
    r = doc["result"]
    corrected, uncorrected = r["latency_us"], r["latency_uncorrected_us"]
    assert corrected["p999"] >= 250_000, corrected  # hundreds of messages waited behind the stall
    # timed from the late send, the stall shrinks to the one message caught in it (the exact p99.9 depends on
    # how fast the client catches up, i.e. on machine load: not asserted)
    assert uncorrected["p999"] < corrected["p999"], (uncorrected, corrected)
    assert uncorrected["max"] >= 400_000  # the one message caught in the stall
    # never ahead of the schedule, however the catch-up went: 1,000/s over warm-up and window (3.5 s) puts 3,500
    # messages due before the end. (The window alone may see more than its 3,000 when messages due in the warm-up
    # were sent late, after it opened: how many depends on machine load, so it is not asserted.)
    assert 0 < r["messages"] <= r["messages_total"] <= 3500, (r["messages"], r["messages_total"])


# -- faults -------------------------------------------------------------------------------------

def test_no_server_listening_is_a_one_line_error(tmp_path, engine):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = s.getsockname()[1]
        # a 300 s run: that it returns at all (within the helper's deadline) shows it did not wait for it
        out, doc = loadgen(tmp_path, "--port", str(port), "--conns", "5", "--duration", "300", engine=engine)
    assert out.returncode == 3
    assert_one_line_error(out)
    assert "refused" in out.stderr
    assert doc["result"]["complete"] is False and doc["result"]["messages"] == 0
    assert doc["result"]["connections"]["established"] == 0


@pytest.mark.parametrize("mode", ["die", "reset"])
def test_server_death_mid_run_keeps_results_so_far(tmp_path, fault_server, mode, engine):
    s = fault_server(mode, "--after-s", "1.0")
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--conns", "4", "--duration", "60", "--warmup", "0.2",
                       engine=engine)
    assert out.returncode == 3, out.stderr
    r = doc["result"]
    assert r["complete"] is False and r["incomplete_reason"]
    assert r["messages"] > 0 and r["duration_s"] < 30  # ended by the death, not by --duration
    assert sum(r["errors"].values()) >= 1
    assert "Traceback" not in out.stderr


def run_and_interrupt(*args) -> tuple[int, str]:
    """Start the load generator, wait for its first progress line, send SIGINT; (exit code, stderr)."""
    # SIGINT back to its default in the child: a shell starts background jobs (`make test &`, nohup) with SIGINT
    # ignored, the child would inherit that, and Python installs no KeyboardInterrupt handler then
    proc = subprocess.Popen([*RUN, *args], cwd=ROOT_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 30
        for line in proc.stderr:  # progress lines (stderr is not a terminal): a readiness signal
            if "msgs/s" in line or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        # generous: the run has 30 s of --duration left, so an ignored Ctrl-C still fails (exit 0, not 3); a
        # fresh-clone run beside heavy connection storms once needed more than 15 s to drain and stop its server
        _stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stderr


def test_ctrl_c_writes_partial_results(tmp_path, engine):
    path = tmp_path / "r.json"
    code, stderr = run_and_interrupt("--server", DEFAULT_MODEL, "--conns", "4", "--duration", "30", "--warmup", "0.2",
                                     "--json", str(path), "--engine", engine)
    assert code == 3, stderr
    r = json.loads(path.read_text())["result"]
    assert r["complete"] is False and r["incomplete_reason"] == "interrupted"
    # echoes still in flight when the user stopped the run were cut short, not lost: no integrity failure
    assert r["messages"] > 0 and r["integrity_failures"] == 0 and r["errors"] == {}, r
    assert "Traceback" not in stderr


def test_too_few_file_descriptors_is_refused_before_connecting(tmp_path):
    def low():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    out, doc = loadgen(tmp_path, "--port", "1", "--conns", "1000", preexec_fn=low)
    assert out.returncode == 2
    assert_one_line_error(out)
    assert "file descriptors" in out.stderr
    assert doc is None


@pytest.mark.parametrize("args, fragment", [
    (["--conns", "0"], "at least 1"),
    (["--size", "1x"], "invalid size"),
    (["--rate", "-5"], "rate"),
    (["--cpus", "0", "--server-cpus", "0"], "overlap"),
    (["--server", "nope"], "invalid choice"),
    (["--server-workers", "2"], "needs --server"),
    (["--duration", "0"], "duration"),
])
def test_bad_arguments(tmp_path, args, fragment):
    out = subprocess.run([*RUN, *args], cwd=ROOT_DIR, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert_one_line_error(out)
    assert fragment in out.stderr


def test_existing_json_is_not_overwritten(tmp_path):
    path = tmp_path / "keep.json"
    path.write_text("precious")
    out = subprocess.run([*RUN, "--json", str(path)], cwd=ROOT_DIR, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "exists" in out.stderr
    assert path.read_text() == "precious"


def test_c_reference_client_builds_and_checks_echoes(start_server):
    from loadgen.suite import cref

    binary, reason = cref.build()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"C reference client: {reason}")
        pytest.skip(reason)
    server = start_server(DEFAULT_MODEL)
    out = subprocess.run([str(binary), server.host, str(server.port), "4", "1024", "0.5", "0.2"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "measure-start"
    r = json.loads(lines[1])
    assert r["messages"] > 0 and r["errors"] == 0 and r["mismatches"] == 0


def test_loadgen_drives_the_go_reference_beside_uvloop(tmp_path):
    reason = registry.get("go").unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    figures = {}
    for model in ("go", DEFAULT_MODEL):  # one after the other, same settings, same pinning
        out, doc = loadgen(tmp_path, "--server", model, "--conns", "10", *QUICK, "--quiet")
        assert out.returncode == 0, out.stderr
        r = doc["result"]
        assert r["complete"] and r["integrity_failures"] == 0 and r["messages"] > 0
        assert r["cpu"]["server_us_per_msg"] > 0
        figures[model] = (r["msgs_per_s"], r["cpu"]["server_us_per_msg"], r["verdict"])
    print("go vs", DEFAULT_MODEL, figures)
    # How the two compare is a benchmark's question (make bench), not a test's: two runs one after the other on
    # a shared machine can differ by any factor.


def _python_without_dependencies() -> str:
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(cand) and subprocess.run([cand, "-c", "import hdrh"], capture_output=True, timeout=30).returncode:
            return cand
    pytest.skip("no Python without the project's packages on this machine")


def test_run_py_typed_with_a_bare_python_reruns_under_the_venv_or_says_how(tmp_path):
    """The card's command, typed as a newcomer would, with a system Python that lacks hdrh, numpy, ..."""
    bare = _python_without_dependencies()
    if not (ROOT_DIR / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv here (make venv creates it)")
    out = subprocess.run([bare, str(ROOT_DIR / "loadgen" / "run.py"), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--engine" in out.stdout, out.stderr  # re-ran under .venv/bin/python
    # a checkout with no .venv: one line saying what to do, exit 2
    (tmp_path / "loadgen").symlink_to(ROOT_DIR / "loadgen")
    out = subprocess.run([bare, str(tmp_path / "loadgen" / "run.py"), "--conns", "1000"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert_one_line_error(out)
    assert "make venv" in out.stderr and "hdrh" in out.stderr


# -- capacity at a latency SLO (the search itself is tested on model servers in unit/test_capacity.py) ----------------

def _disturbed(step: dict) -> bool:
    """A step the machine's load can spoil, labelled as such: the client could not offer the rate (it waited for
    its CPU, its timers ran late), or under 99% of the rate came back (a stall at the window's end is enough)."""
    return (not step["valid"] and step["reason"].startswith("client cannot offer")) or \
        (step["valid"] and step["meets"] is False and (step["note"] or "").startswith("the server fell behind"))


def test_find_capacity_end_to_end_reports_every_step_and_the_capacity(tmp_path):
    # a generous SLO (p99 <= 1 s at 500-1,000 msgs/s holds on any machine) and max_rate bound the search to two
    # steps. A loaded machine can still spoil a 0.5 s step (see _disturbed); such a run must say so, and is tried
    # again, up to three times in all: the answer is asserted on the first undisturbed run
    for _ in range(3):
        out, doc = loadgen(tmp_path, "--server", DEFAULT_MODEL, "--find-capacity", "--slo", "p99=1s", "--start-rate",
                           "500", "--max-rate", "1000", "--max-steps", "4", "--duration", "0.5", "--warmup", "0.2",
                           "--quiet")
        cap = doc["result"]["capacity"]
        assert cap["slos"] == ["p99=1s"] and doc["config"]["find_capacity"] and doc["config"]["slos"] == ["p99=1s"]
        if not any(_disturbed(st) for st in cap["steps"]):
            break
        assert out.returncode in (0, 3), out.stderr  # labelled: a lower bound or an incomplete search, said so
        assert out.returncode == 0 or "capacity search incomplete" in out.stderr, out.stderr
    else:
        pytest.fail(f"three runs in a row were disturbed by the machine's load: {cap['steps']}")
    assert out.returncode == 0, out.stderr
    assert cap["complete"] and cap["msgs_per_s"] == 1000 and "still holds at max_rate" in cap["stopped"]
    # the host's latency at a light load first (a tenth of the start rate), apart from the capacity
    assert cap["steps"][0]["phase"] == "floor" and cap["floor"]["rate"] == 50 and cap["floor"]["latency_us"]["p99"]
    rest = cap["steps"][1:]
    assert [s["rate"] for s in rest] == [500, 1000] and all(s["valid"] and s["meets"] for s in rest)
    assert "capacity 1,000 msgs/s" in out.stdout


def test_find_capacity_when_no_rate_meets_the_slo(tmp_path):
    out, doc = loadgen(tmp_path, "--server", DEFAULT_MODEL, "--find-capacity", "--slo", "p50=1ns", "--start-rate", "400",
                       "--max-steps", "3", "--duration", "0.3", "--warmup", "0.1", "--quiet")
    assert out.returncode == 3, out.stderr  # stopped by max_steps, said in one line
    cap = doc["result"]["capacity"]
    assert cap["msgs_per_s"] is None and not cap["complete"]
    assert "capacity search incomplete" in out.stderr
    first = cap["steps"][1]  # after the floor step
    if not first["valid"]:  # a loaded machine can spoil the first step (the client waited for its CPU): that
        assert len(cap["steps"]) == 2 and first["reason"] in cap["stopped"]  # ends the search, with the reason
        return
    # the break is tried again before it counts (2 of 3): floor, the start rate, its retry; then max_steps
    assert [s["phase"] for s in cap["steps"]] == ["floor", "ramp", "retry"]
    assert "no rate met the SLO" in out.stdout


def test_sweep_runs_every_rate_and_judges_each_step(tmp_path):
    out, doc = loadgen(tmp_path, "--server", DEFAULT_MODEL, "--sweep", "300,600", "--slo", "p99=1s", "--duration", "0.4",
                       "--warmup", "0.2", "--quiet")
    assert out.returncode == 0, out.stderr
    sw = doc["result"]["sweep"]
    assert doc["result"]["capacity"] is None and sw["slos"] == ["p99=1s"] and sw["of_capacity"] is None
    assert [s["rate"] for s in sw["steps"]] == [300, 600] and [s["phase"] for s in sw["steps"]] == ["sweep", "sweep"]
    # judged, each (a stall on a loaded machine may break a 0.4 s step: which way is not asserted)
    assert all(s["latency_us"]["p99"] is not None and (s["meets"] in (True, False) if s["valid"] else s["reason"])
               for s in sw["steps"])
    assert doc["config"]["sweep"] == "300,600" and doc["config"]["rate"] is None  # the run's own configuration
    assert "sweep: 2 open-loop steps" in out.stdout


def test_the_search_finds_a_known_capacity_and_sweeps_fractions_of_it(tmp_path, fault_server):
    """A paced server echoes at most RATE messages a second (a fixed service time), so its capacity is known: the
    search must bracket it, never report more than it (beyond the 99% shortfall a step is allowed), and sit near
    the server's closed-loop throughput. The lower bounds are loose on purpose: a stall on a loaded machine can
    only make a step break early, never pass a rate the server cannot echo."""
    rate = 2000
    s = fault_server("paced", "--rate", str(rate))
    out, closed = loadgen(tmp_path, "--port", str(s.port), "--duration", "1.5", "--warmup", "0.5", "--quiet")
    assert out.returncode == 0, out.stderr
    closed_rate = closed["result"]["msgs_per_s"]
    assert closed_rate <= rate * 1.01  # the pacing holds: nobody gets more than RATE echoes a second
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--find-capacity", "--slo", "p90=50ms", "--start-rate",
                       str(rate * 0.3), "--precision", "0.05", "--max-steps", "12", "--duration", "1", "--warmup", "0.3",
                       "--sweep", "0.5x,1.5x", "--quiet", timeout=180)
    cap = doc["result"]["capacity"]
    lo, hi = cap["bracket"]
    # physics, whatever the machine's load: the server cannot echo more than RATE a second, so no step beyond the
    # 99% shortfall a step is allowed meets the SLO, and the capacity is never above it
    assert not [st for st in cap["steps"] if st["rate"] > rate * 1.011 and st["meets"]]
    assert lo is None or lo <= rate * 1.011
    if out.returncode == 3:  # a step the client could not offer (a starved client): a lower bound, said so
        assert not cap["complete"] and "client cannot offer" in cap["stopped"]
        return
    assert out.returncode == 0, out.stderr
    assert cap["complete"] and cap["msgs_per_s"] == lo and hi / lo - 1 <= 0.05 and hi <= rate * 1.3
    assert lo >= rate * 0.5 and lo >= closed_rate * 0.5  # loose: a stall can only make a step break early
    over = [st for st in cap["steps"] if st["rate"] > rate * 1.02 and st["valid"]]
    assert all(st["meets"] is False and st["overload"] for st in over)  # beyond the server: it fell behind
    # the bracket's top is a step that ran, was valid and broke (beyond the server, or below it when a stall broke
    # it early); a step beyond the server that was not valid (the client's timers late) is a ceiling, never a break
    assert any(st["rate"] == hi and st["valid"] and st["meets"] is False for st in cap["steps"]), cap["steps"]
    sw = doc["result"]["sweep"]
    assert sw["of_capacity"] == [0.5, 1.5] and sw["capacity_msgs_per_s"] == lo
    assert [st["rate"] for st in sw["steps"]] == [pytest.approx(0.5 * lo), pytest.approx(1.5 * lo)]
    assert sw["steps"][1]["meets"] is False or not sw["steps"][1]["valid"]  # past what the server can echo


def test_a_client_that_cannot_offer_the_rate_gets_that_answer_not_a_capacity(tmp_path):
    # the load generator shares the server's one CPU, so at an absurd planned rate it cannot offer it whatever the
    # machine's speed: it is saturated, or it waits for its CPU while the server runs (either says so). Not left
    # to the Python engine being slower than the server, which a slow spell of the host can turn round.
    cpu = min(os.sched_getaffinity(0))
    out, doc = loadgen(tmp_path, "--server", DEFAULT_MODEL, "--find-capacity", "--slo", "p99=60s", "--start-rate",
                       "1e9", "--max-steps", "2", "--duration", "0.6", "--warmup", "0.2", "--quiet", engine="python",
                       preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))  # one usable CPU: both sides on it
    assert out.returncode == 3, out.stderr
    cap = doc["result"]["capacity"]
    steps = [s for s in cap["steps"] if s["phase"] != "floor"]  # the floor, a tenth of the start rate, is apart
    assert cap["msgs_per_s"] is None and not cap["complete"] and len(steps) == 1
    assert "client cannot offer this rate" in cap["stopped"] and "client cannot offer this rate" in out.stdout
    assert steps[0]["valid"] is False


@pytest.mark.parametrize("args, fragment", [
    (["--sweep", "0.5x"], "fractions (0.5x) are of the capacity"),
    (["--sweep", "fast"], "invalid --sweep entry"),
    (["--sweep", "1000", "--rate", "5"], "drop --rate"),
    (["--find-capacity"], "needs at least one --slo"),
    (["--find-capacity", "--slo", "p99=1ms", "--rate", "100"], "drop --rate"),
    (["--find-capacity", "--slo", "p98=1ms"], "invalid SLO"),
    (["--slo", "p99=1ms"], "applies to --find-capacity"),
    (["--precision", "0.1"], "applies to --find-capacity"),
    (["--find-capacity", "--slo", "p99=1ms", "--precision", "2"], "--precision"),
    (["--find-capacity", "--slo", "p99=1ms", "--start-rate", "0.5"], "--start-rate"),
    (["--find-capacity", "--slo", "p99=1ms", "--start-rate", "100", "--max-rate", "50"], "--max-rate"),
])
def test_bad_capacity_arguments(tmp_path, args, fragment):
    out = subprocess.run([*RUN, *args], cwd=ROOT_DIR, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert_one_line_error(out)
    assert fragment in out.stderr


@pytest.mark.parametrize("model", model_params(["asyncio-protocol", "reuseport", "go"]))
def test_a_load_generator_killed_outright_leaves_no_server_behind(model):
    """SIGKILL gives run.py no chance to stop the server it started: the server stops itself when its parent dies
    (the Go binary too, exec'd by ``python -m servers``; reuseport's workers with their parent). Its own worker
    processes end too: each sees its pipe's end-of-file (a worker that kept a copy of the parent's end once waited
    on it forever)."""
    import queue
    import threading

    import psutil

    proc = subprocess.Popen([*RUN, "--server", model, "--conns", "2", "--duration", "60", "--warmup", "0"],
                            cwd=ROOT_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr] and None, daemon=True).start()
    server = None
    try:
        deadline = time.monotonic() + 60
        while server is None:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if m := re.search(rf"started {re.escape(model)} \(pid (\d+)\)", line):
                server = psutil.Process(int(m.group(1)))
        family = [server] + server.children(recursive=True)
        assert len(family) >= (2 if model == "reuseport" else 1)
        while not re.search(r"\d+\.\d/60 s", line):  # the progress log: traffic runs, so its workers are up
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        workers = [c for c in psutil.Process(proc.pid).children() if c.pid != server.pid]
        assert workers, "the load generator started no worker process"

        def sockets(pid):
            return {x for x in (os.readlink(f) for f in glob.glob(f"/proc/{pid}/fd/*")) if x.startswith("socket:")}

        for w in workers:  # a worker holding the parent's end of its pipe would never see the parent die
            assert not sockets(w.pid) & sockets(proc.pid), (w.pid, sockets(w.pid) & sockets(proc.pid))
        family += workers
    finally:
        proc.kill()
        proc.wait(10)
    gone, alive = psutil.wait_procs(family, timeout=20)
    for p in alive:
        p.kill()
    assert not alive, f"still running after the load generator was killed: {[p.pid for p in alive]}"
