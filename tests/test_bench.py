"""make bench's pipeline on a tiny matrix: run folder, JSON, plots, reports, failures. (The shipped matrices, the
report's tables and tiers: unit/test_bench.py.)"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys

import pytest

from servers import registry

from conftest import ROOT_DIR

MODELS = [m for m in ("asyncio-protocol", "selectors") if registry.get(m).unavailable_reason() is None]

TINY = """
[run]
trials = 2
duration = 0.3
warmup = 0.1
models = {models}
reference = "asyncio-protocol"
spectrum_load = {{ conns = 2, size = 1024 }}

[[sweep]]
name = "connections"
conns = {conns}
sizes = [1024]

[[sweep]]
name = "message size"
conns = [2]
sizes = [64, 1024]

[transports]
compare = ["tcp", "unix", "udp"]
conns = 2
size = 1024
models = "all"
"""


# a generous SLO: the search ramps (x2) until max_steps, so its capacity is a lower bound (">=")
CAPACITY = """
[capacity]
conns = 2
size = 1024
slo = ["p99=1s"]
precision = 0.2
duration = 0.3
warmup = 0.1
max_steps = 3
start = 0.5
sweep = [0.5]

[connections]
levels = [20, 50]
hold = 0.2

# one model, short: as tests/test_overload.py
[overload]
models = ["selectors"]
slo = "p99=50ms"
conns = 5
depth = 4
spikes = [2]
hold = 0.5
spike = 0.5
recover = 1.0
precision = 0.3
step = 0.4
step_warmup = 0.1
start_rate = 1000
max_steps = 8
"""


def bench(tmp_path, conns="[1, 2]", preexec_fn=None, capacity=False, text=None):
    matrix = tmp_path / "tiny.toml"
    matrix.write_text(text or TINY.format(models=json.dumps(MODELS), conns=conns) + (CAPACITY if capacity else ""))
    results = tmp_path / "results"
    out = subprocess.run([sys.executable, "-m", "loadgen.suite.bench", "--matrix", str(matrix), "--results", str(results)],
                         cwd=ROOT_DIR, capture_output=True, text=True, timeout=300, preexec_fn=preexec_fn)
    return out, results


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One run of the tiny matrix with its capacity and connection tables, shared by the tests that read it."""
    return bench(tmp_path_factory.mktemp("tiny"), capacity=True)


def test_tiny_matrix_writes_run_folder_json_plots_and_reports(tiny):
    out, results = tiny
    assert out.returncode == 0, out.stderr
    run = (results / "latest").resolve()
    assert run.parent == results.resolve() and "-" in run.name  # <UTC stamp>-<git sha>
    suite = json.loads((run / "suite.json").read_text())
    # 3 TCP loads, plus Unix and UDP at 2 x 1 KiB (both models claim both): 5 cells per model, 2 trials each
    assert suite["complete"] and suite["runs_done"] == suite["runs_planned"] == len(MODELS) * 5 * 2
    assert {c["model"] for c in suite["cells"]} == set(MODELS)
    assert {(c["transport"], c["model"]) for c in suite["cells"] if c["transport"] != "tcp"} == {
        (t, m) for t in ("unix", "udp") for m in MODELS}
    udp = [c for c in suite["cells"] if c["transport"] == "udp"]
    assert all(c["median"]["loss_pct"] is not None for c in udp)
    assert all(c["status"] == "ok" and c["trials_ok"] == 2 for c in suite["cells"])
    assert set(suite["pinning"]["server_cpus"]).isdisjoint(suite["pinning"]["loadgen_cpus"]) or len(suite["pinning"]["server_cpus"]) == 1
    cells = sorted((run / "cells").glob("*.json"))
    assert len(cells) == suite["runs_planned"]
    doc = json.loads(cells[0].read_text())
    assert doc["schema_version"] == 2 and doc["result"]["verdict"] in ("server-bound", "client-bound", "both-saturated", "neither")
    # trials interleaved across models: trial 0 of every cell precedes any trial 1
    order = sorted(cells, key=lambda p: json.loads(p.read_text())["bench"]["seq"])
    trials = [json.loads(p.read_text())["bench"]["trial"] for p in order]
    assert trials == sorted(trials)
    # capacity at the SLO: one search per model after the matrix, starting at half the closed-loop msgs/s (which
    # steps meet the SLO depends on the machine: the search itself is tested in unit/test_capacity.py and test_loadgen.py)
    cap = suite["capacity"]
    assert cap["complete"] and set(cap["models"]) == set(MODELS) and cap["slos"] == ["p99=1s"]
    for m, e in cap["models"].items():
        closed = next(c["median"]["msgs_per_s"] for c in suite["cells"] if c["model"] == m and c["transport"] == "tcp"
                      and (c["conns"], c["size"]) == (2, 1024))
        assert e["start_rate"] == pytest.approx(closed * 0.5) and e["closed_loop_msgs_per_s"] == closed
        # first the host's latency at a light load (a tenth of the start rate), apart from the capacity
        assert e["steps"][0]["phase"] == "floor" and e["floor"]["rate"] == pytest.approx(closed * 0.05)
        assert e["steps"][1]["rate"] == pytest.approx(closed * 0.5)
        # max_steps 3: the floor and two steps, unless the first was invalid (on a loaded machine the client can
        # wait for its CPU or run its timers late), which ends a search that has nothing held yet, saying why; a
        # stall that breaks the generous SLO is tried again, within the same 3 steps
        rest = e["steps"][1:]
        assert len(rest) == 2 or (len(rest) == 1 and not rest[0]["valid"]
                                  and e["stopped"].startswith("step at") and rest[0]["reason"] in e["stopped"])
        assert e["msgs_per_s"] is None or e["msgs_per_s"] in [st["rate"] for st in e["steps"]]
        assert [st["of_capacity"] for st in e["sweep"]] == ([0.5] if e["msgs_per_s"] else [])
    conn = suite["connections"]  # connection scale: every connection held or counted, memory read per level
    assert conn["complete"] and set(conn["models"]) == set(MODELS) and conn["levels"] == [20, 50]
    for m, e in conn["models"].items():
        assert [lv["attempted"] for lv in e["levels"]] == [20, 50]
        assert all(lv["attempted"] == lv["established"] + lv["failed"] for lv in e["levels"])
        assert e["per_conn_bytes"] is not None and (e["held_all_at"] == 50) == (e["stopped"] is None)
    assert sorted(p.name for p in (run / "connections").glob("*.json")) == sorted(f"{m}.json" for m in MODELS)
    steps = sum(len(e["steps"]) + len(e["sweep"]) for e in cap["models"].values())
    assert len(list((run / "capacity").glob("*.json"))) == steps
    for name in ("throughput_vs_conns", "server_cpu_per_msg", "latency_spectrum", "p99_vs_conns", "mbps_vs_size",
                 "transports", "latency_vs_load", "rss_vs_conns"):
        assert (run / f"{name}.png").stat().st_size > 5000
        assert (run / f"{name}.svg").exists()
    md = (run / "report.md").read_text()
    assert "vs asyncio-protocol" in md and "1.00x" in md
    assert "## Transports: 2 connections, 1 KiB messages" in md
    transport_rows = [x for x in md.split("## Transports")[1].split("## Connections")[0].split("## Notes")[0].splitlines()
                      if x.startswith("| ")]
    assert len(transport_rows) == 1 + len(MODELS)  # header + one row per model
    assert "UDP loss" in transport_rows[0] and "Unix vs TCP us/msg" in transport_rows[0]
    # the ranking tables are TCP only: one row per model in each
    ranking = md.split("## Ranking")[1].split("## Transports")[0]
    assert ranking.count("| asyncio-protocol |") == 3
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 8 and "<img" in html
    assert "## Connections: memory per idle connection" in md and "**Memory per idle connection**" in md
    assert md.startswith(f"# echobench report: {run.name}\n\n## In short")
    assert "capacity at p99 <= 1s" in ranking  # the column beside closed-loop throughput
    assert "msgs/s" in out.stdout  # the main table on stdout
    keys = {p.stem.rpartition("_t")[0] for p in cells}  # a timeline per cell: its first trial, interval by interval
    assert sorted(p.stem for p in (run / "timelines").glob("*.png")) == sorted(keys)
    assert "## Timelines" in md and all(f"(timelines/{k}.png)" in md for k in keys)
    over = suite["overload"]  # overload and recovery (the [overload] table): one model, one spike
    assert over["complete"] and [e["model"] for e in over["entries"]] == ["selectors"], over
    (e,) = over["entries"]
    assert "error" not in e and len(e["spikes"]) == 1 and e["spikes"][0]["times_capacity"] == 2.0, e
    assert (run / "overload" / "runs" / "selectors.json").exists()
    assert (run / "overload" / "timelines" / "selectors.png").stat().st_size > 10_000
    section = md.split("## Overload and recovery")[1].split("## Notes")[0]
    assert "| selectors |" in section and "(overload/timelines/selectors.png)" in section
    assert "Overload and recovery" in html


def test_report_regenerates_from_json_alone(tiny, tmp_path):
    out, results = tiny
    assert out.returncode == 0, out.stderr
    run = tmp_path / (results / "latest").resolve().name  # a copy under the run's own name: the shared run stays whole
    shutil.copytree((results / "latest").resolve(), run)
    before = (run / "report.md").read_text()
    for f in list(run.glob("*.png")) + list(run.glob("*.svg")) + [run / "report.md", run / "report.html"]:
        f.unlink()
    again = subprocess.run([sys.executable, "-m", "loadgen.suite.report", str(run)], cwd=ROOT_DIR, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert (run / "report.md").read_text() == before
    assert (run / "report.html").exists() and (run / "latency_spectrum.png").exists()


def test_a_failing_cell_is_reported_and_the_suite_goes_on(tmp_path):
    def low_fds():  # 400 connections cannot be opened: those cells fail, the rest must still run
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    # one trial, the connections sweep alone: the cells that fail and one that does not
    text = TINY.format(models=json.dumps(MODELS), conns="[1, 400]").replace("trials = 2", "trials = 1")
    text = text.split('[[sweep]]\nname = "message size"')[0]
    out, results = bench(tmp_path, text=text, preexec_fn=low_fds)
    assert out.returncode == 1, out.stderr
    suite = json.loads((results / "latest" / "suite.json").read_text())
    failed = [c for c in suite["cells"] if c["status"] == "failed"]
    assert {c["conns"] for c in failed} == {400}
    assert all("file descriptors" in c["failures"][0]["reason"] for c in failed)
    assert any(c["status"] == "ok" for c in suite["cells"])
    assert "**Failed**" in (results / "latest" / "report.md").read_text()


def bad_matrix(tmp_path, text: str) -> subprocess.CompletedProcess:
    """``loadgen.suite.bench`` on a matrix written from ``text``: expected to refuse it."""
    matrix = tmp_path / "m.toml"
    matrix.write_text(text)
    return subprocess.run([sys.executable, "-m", "loadgen.suite.bench", "--matrix", str(matrix), "--results", str(tmp_path)],
                          cwd=ROOT_DIR, capture_output=True, text=True, timeout=60)


def test_bad_matrix_is_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "loadgen.suite.bench", "--matrix", str(tmp_path / "nope.toml")],
                         cwd=ROOT_DIR, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "no matrix" in out.stderr


@pytest.mark.parametrize("table, fragment", [
    ('compare = ["tcp", "sctp"]\nconns = 10\nsize = 1024', "unknown transport(s) 'sctp'"),
    ('conns = 10\nsize = 1024', "needs compare"),
    ('compare = ["udp"]\nconns = 10\nsize = 1024\nmodels = ["nope"]', "unknown model(s) nope"),
])
def test_bad_transports_table_is_a_one_line_error(tmp_path, table, fragment):
    out = bad_matrix(tmp_path, TINY.format(models=json.dumps(MODELS), conns="[1]").split("[transports]")[0]
                     + "[transports]\n" + table)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and fragment in out.stderr, out.stderr


@pytest.mark.parametrize("table, fragment", [
    ('conns = 10\nsize = 1024\nprecision = 0.1\nduration = 1\nwarmup = 0.5\nmax_steps = 5\nstart = 0.5', "needs slo"),
    ('conns = 10\nsize = 1024\nslo = ["p98=1ms"]\nprecision = 0.1\nduration = 1\nwarmup = 0.5\nmax_steps = 5\nstart = 0.5',
     "invalid SLO"),
    ('conns = 10\nsize = 1024\nslo = ["p99=1ms"]\nprecision = 2\nduration = 1\nwarmup = 0.5\nmax_steps = 5\nstart = 0.5',
     "0 < precision < 1"),
    ('conns = 10\nsize = 1024\nslo = ["p99=1ms"]\nprecision = 0.1\nduration = 1\nwarmup = 0.5\nmax_steps = 5\nstart = 0.5\n'
     'sweep = [0.5, -1]', "fractions of the capacity"),
    ('conns = 10\nsize = 1024\nslo = ["p99=1ms"]\nprecision = 0.1\nduration = 1\nwarmup = 0.5\nmax_steps = 5\nstart = 0.5\n'
     'rate = 5', "unknown key(s) rate"),
])
def test_bad_capacity_table_is_a_one_line_error(tmp_path, table, fragment):
    out = bad_matrix(tmp_path, TINY.format(models=json.dumps(MODELS), conns="[1]") + "\n[capacity]\n" + table)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and fragment in out.stderr, out.stderr


@pytest.mark.parametrize("section, table, fragment", [
    ("connections", "levels = [500, 100]", "increasing connection counts"),
    ("connections", "levels = []", "increasing connection counts"),
    ("connections", "levels = [10]\nhold = 0", "seconds > 0"),
    ("connections", "levels = [10]\nrate = 5", "unknown key(s) rate"),
    ("tls", "conns = 2", "conns >= 1 and sizes"),
    ("tls", "conns = 2\nsizes = [1024]\nmodels = [\"selectors\"]", "only models that serve TLS"),
    ("tls", "conns = 2\nsizes = [1024]\nrate = 5", "unknown key(s) rate"),
    ("overload", "rate = 5", "unknown key(s) rate"),
    ("overload", "spikes = [0]", "multiples of the capacity"),
    ("overload", "base = 1.5", "between 0 and 1"),
    ("overload", "slo = \"p90=1ms\"", "judged on p99"),
    ("overload", "hold = -1", "seconds"),
    ("overload", "models = [\"nope\"]", "a list of known models"),
])
def test_bad_connections_or_tls_table_is_a_one_line_error(tmp_path, section, table, fragment):
    out = bad_matrix(tmp_path, TINY.format(models=json.dumps(MODELS), conns="[1]") + f"\n[{section}]\n" + table)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and fragment in out.stderr, out.stderr


TLS_TABLE = """
[tls]
conns = 2
sizes = [1024]
"""


def test_a_tls_table_runs_plain_and_tls_on_the_python_engine_and_reports_the_cost(tmp_path):
    tls_models = [m for m in MODELS if registry.get(m).tls]
    if not tls_models:
        pytest.skip("no model of the tiny matrix serves TLS here")
    from servers import tls

    if tls.unavailable_reason():
        pytest.skip(tls.unavailable_reason())
    matrix = tmp_path / "tls.toml"
    matrix.write_text(TINY.format(models=json.dumps(MODELS), conns="[2]").split("[[sweep]]")[0] + TLS_TABLE)
    results = tmp_path / "results"
    out = subprocess.run([sys.executable, "-m", "loadgen.suite.bench", "--matrix", str(matrix), "--results", str(results)],
                         cwd=ROOT_DIR, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    run = (results / "latest").resolve()
    suite = json.loads((run / "suite.json").read_text())
    assert {(c["transport"], c["model"]) for c in suite["cells"]} == {(t, m) for t in ("tcp-py", "tls") for m in tls_models}
    assert all(c["status"] == "ok" for c in suite["cells"])
    for p in (run / "cells").glob("*.json"):
        doc = json.loads(p.read_text())
        assert doc["result"]["engine"]["name"] == "python"  # the same engine on both sides of the comparison
        assert doc["config"]["tls"] == (doc["bench"]["transport"] == "tls")
    md = (run / "report.md").read_text()
    section = md.split("## TLS 1.3 against plain TCP: 2 connections, 1 KiB")[1].split("## Notes")[0]
    rows = [x for x in section.splitlines() if x.startswith("| ")]
    assert len(rows) == 1 + len(tls_models) and "TLS cost us/msg" in rows[0], md  # the header, one row per model


PAIRED = """
[run]
mode = "paired"
rounds = 6
rounds_main = 8
slice = 0.1
slice_warmup = 0.05
trials = 1
duration = 0.1
warmup = 0.05
models = {models}
reference = "asyncio-protocol"
spectrum_load = {{ conns = 2, size = 1024 }}

[[sweep]]
name = "connections"
conns = [1, 2]
sizes = [1024]

[transports]
compare = ["tcp", "unix", "udp"]
conns = 2
size = 1024
models = "all"

[tls]
conns = 2
sizes = [1024]
"""


def test_paired_rounds_measure_every_model_in_the_same_rounds_and_the_report_leads_with_the_answer(tmp_path):
    from servers import tls

    matrix = tmp_path / "paired.toml"
    matrix.write_text(PAIRED.format(models=json.dumps(MODELS)) + CAPACITY.split("[connections]")[0])
    results = tmp_path / "results"
    out = subprocess.run([sys.executable, "-m", "loadgen.suite.bench", "--matrix", str(matrix), "--results", str(results)],
                         cwd=ROOT_DIR, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    run = (results / "latest").resolve()
    suite = json.loads((run / "suite.json").read_text())
    tls_models = [m for m in MODELS if registry.get(m).tls] if tls.unavailable_reason() is None else []
    # 2 TCP loads + Unix + UDP for both models, plain and TLS for those that serve it: 6 rounds each, 8 at the
    # main load (2 x 1 KiB over TCP)
    assert suite["mode"] == "paired" and suite["complete"]
    assert suite["runs_done"] == suite["runs_planned"] == 6 * (3 * len(MODELS) + 2 * len(tls_models)) + 8 * len(MODELS)
    assert {(c["transport"], c["model"]) for c in suite["cells"] if c["transport"] in ("tls", "tcp-py")} == {
        (t, m) for t in ("tls", "tcp-py") for m in tls_models}
    for c in suite["cells"]:
        main = (c["transport"], c["conns"], c["size"]) == ("tcp", 2, 1024)
        assert c["status"] == "ok" and c["trials_ok"] == c["rounds"] == (8 if main else 6), c
        assert c["ci"]["server_us_per_msg"]["ci"][0] <= c["median"]["server_us_per_msg"] <= c["ci"]["server_us_per_msg"]["ci"][1]
        others = {x["model"] for x in suite["cells"] if (x["transport"], x["conns"], x["size"]) ==
                  (c["transport"], c["conns"], c["size"])} - {c["model"]}
        assert set(c["pairs"].get("server_ns_per_msg", {})) == others  # every pair's per-round ratio interval
        if c["model"] != "asyncio-protocol":
            r = c["vs_reference"]["server_ns_per_msg"]
            assert r["n"] == c["rounds"] and r["ci"][0] <= r["median"] <= r["ci"][1]
        if c["split"]:
            assert c["split"]["user_us_per_msg"] + c["split"]["kernel_us_per_msg"] == pytest.approx(
                c["median"]["server_us_per_msg"])
    assert suite["paired"]["rounds"] == 6 and suite["paired"]["instances"] == 2 and suite["paired"]["idle"]
    docs = sorted((run / "cells").glob("*.json"))
    assert len(docs) == len(suite["cells"])  # one document per model and cell: its slices, its merged latencies
    doc = json.loads(docs[0].read_text())
    assert doc["kind"] == "echobench-paired-cell" and len(doc["slices"]) == 6 and doc["result"]["histogram"]
    assert suite["capacity"]["complete"] and set(suite["capacity"]["models"]) == set(MODELS)
    md = (run / "report.md").read_text()
    # the first screen: whether the host was quiet (busy on a loaded machine, and then the answer says it does not
    # rank), then the answer
    assert md.startswith(f"# echobench report: {run.name}\n\n## The host\n\n**The host was "), md[:300]
    assert "\n\n## The answer\n\nAt 2 connections x 1 KiB" in md
    first_screen = md.split("## In short")[0]
    assert "95% intervals" in first_screen and "![Server CPU per message" in first_screen
    assert (run / "cost_split.png").stat().st_size > 5000 and (run / "cost_split.svg").exists()
    assert "| model | tier | server us/msg | user us/msg | kernel us/msg |" in md
    assert "**How this was measured**" in md and "Idle servers" in md
    html = (run / "report.html").read_text()
    assert html.index("The answer") < html.index("In short") and "name='viewport'" in html
    assert "At 2 connections x 1 KiB" in out.stdout
    # a timeline per paired cell: its slices, one point each where they ran
    assert sorted(p.stem for p in (run / "timelines").glob("*.png")) == sorted(p.stem for p in docs)
    assert all(s["started_at"] > 0 and s["wall_s"] > 0 for s in doc["slices"])
    assert "paired cell's slices" in md and (run / "timelines" / f"{docs[0].stem}.png").stat().st_size > 10_000


def test_a_paired_run_needs_rounds_and_says_so_in_one_line(tmp_path):
    matrix = tmp_path / "tiny.toml"
    matrix.write_text(TINY.format(models=json.dumps(MODELS), conns="[1]"))
    out = subprocess.run([sys.executable, "-m", "loadgen.suite.bench", "--matrix", str(matrix), "--results", str(tmp_path),
                          "--mode", "paired"], cwd=ROOT_DIR, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1
    assert "needs rounds" in out.stderr and not list(tmp_path.glob("*-*"))


def test_calibrate_paired_runs_every_client_against_one_running_server(tmp_path):
    out_json = tmp_path / "pairs.json"
    out = subprocess.run([sys.executable, "-m", "loadgen.suite.calibrate", "--paired", "2", "--conns", "2", "--duration", "0.3",
                          "--warmup", "0.1", "--model", "asyncio-protocol", "--versus", "", "--json", str(out_json)],
                         cwd=ROOT_DIR, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out_json.read_text())
    clients = {p["client"] for p in doc["pairs"]}
    assert "python" in clients
    for key, runs in doc["rows"].items():
        assert len(runs) == 2 and all(r["msgs_per_s"] > 0 for r in runs)
    if "C" in clients:  # built where a C compiler is (CI has one): each engine's ratios to it, round by round
        assert all(p["msgs_vs_c"] > 0 for p in doc["pairs"] if p["client"] != "C")
    assert "per-round ratios" in out.stdout
    assert {t["verdict"] for t in doc["targets"]} <= {"met", "missed", "not told apart", "too few rounds"}


@pytest.mark.parametrize("args", [["--paired", "0"], ["--trials", "-1"], ["--duration", "0"], ["--paired", "x"]])
def test_calibrate_refuses_bad_counts_in_one_line(args):
    out = subprocess.run([sys.executable, "-m", "loadgen.suite.calibrate", *args], cwd=ROOT_DIR, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "error" in out.stderr
