"""The load generator over UDP and Unix sockets: real servers, and UDP servers that lose, repeat,
reorder, corrupt or delay datagrams on purpose (tests/support/fault_udp_server.py)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import tempfile
from pathlib import Path

import pytest
from test_loadgen import QUICK, assert_one_line_error, loadgen, run_and_interrupt

from conftest import ServerProcess, assert_clean_exit, transport_params


@pytest.fixture
def fault_udp(fault_server):
    return lambda mode, *args: fault_server(mode, *args, script="fault_udp_server.py")


def affected(server: ServerProcess) -> int:
    """Stop a fault server; how many datagrams its fault touched."""
    server.proc.send_signal(signal.SIGTERM)
    line = server.proc.stdout.readline().decode()  # it exits right after printing; the pipe closes
    assert line.startswith("affected "), line
    return int(line.split()[1])


def assert_clean(out, doc):
    assert out.returncode == 0, out.stderr
    r = doc["result"]
    assert r["complete"] and r["integrity_failures"] == 0 and r["messages"] > 0, r
    return r


# -- clean runs over every transport a model claims -----------------------------------------------

@pytest.mark.parametrize("model", transport_params("udp"))
def test_udp_run_against_every_udp_model(tmp_path, model):
    # --timeout 10: a datagram is declared lost only after 10 s, so a paused process on a loaded machine is not a loss
    out, doc = loadgen(tmp_path, "--server", model, "--transport", "udp", "--conns", "8", "--size", "512", "--timeout", "10",
                       *QUICK)
    r = assert_clean(out, doc)
    u = r["udp"]
    assert doc["target"]["transport"] == "udp"
    assert doc["config"]["engine"] == "python"  # UDP always runs on the Python engine
    assert u["sent"] == u["delivered"] == r["messages_total"]  # loopback at depth 1 loses nothing
    assert u["lost"] == u["duplicated"] == u["late"] == 0 and u["loss_pct"] == 0
    assert r["cpu"]["server_us_per_msg"] > 0


@pytest.mark.parametrize("model", transport_params("unix"))
def test_unix_run_against_every_stream_model(tmp_path, model, engine):
    out, doc = loadgen(tmp_path, "--server", model, "--transport", "unix", "--conns", "8", *QUICK, engine=engine)
    r = assert_clean(out, doc)
    assert doc["config"]["engine"] == engine
    assert doc["target"]["transport"] == "unix" and doc["target"]["path"].endswith(".sock")
    assert r["udp"] is None
    assert not Path(doc["target"]["path"]).parent.exists()  # the load generator's temporary folder is gone


def test_unix_run_with_a_relative_path_and_the_server_removes_its_file(tmp_path):
    folder = Path(tempfile.mkdtemp(prefix="eb-", dir="/tmp"))
    try:
        # relative to the load generator's working directory, not the server's (the repo root)
        out, doc = loadgen(tmp_path, "--server", "uvloop-protocol", "--transport", "unix", "--path", "rel.sock",
                           "--conns", "4", *QUICK, cwd=folder)
        assert_clean(out, doc)
        assert doc["target"]["path"] == str(folder / "rel.sock")
        assert list(folder.iterdir()) == []  # the server removed its socket file on exit
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_unix_run_against_an_external_server_path(tmp_path, start_server):
    folder = tempfile.mkdtemp(prefix="eb-", dir="/tmp")
    path = f"{folder}/s.sock"
    try:
        s = start_server("selectors", "--transport", "unix", "--path", path)
        assert s.addr == (path, None)
        out, doc = loadgen(tmp_path, "--transport", "unix", "--path", path, "--server-pid", str(s.proc.pid),
                           "--conns", "4", *QUICK)
        r = assert_clean(out, doc)
        assert r["cpu"]["server_us_per_msg"] is not None
    finally:
        Path(path).unlink(missing_ok=True)
        Path(folder).rmdir()


def test_udp_open_loop_keeps_its_schedule(tmp_path):
    out, doc = loadgen(tmp_path, "--server", "selectors", "--transport", "udp", "--conns", "4",
                       "--rate", "2000", "--duration", "2", "--warmup", "0.5", "--timeout", "10")
    r = assert_clean(out, doc)
    # never ahead of the schedule: 2,000/s over warm-up and window (2.5 s) puts 5,000 datagrams due before the end,
    # and none is sent early, however late the client runs. (The window alone may see more than its 4,000: datagrams
    # due during the warm-up but sent late, after the window opened, are echoed inside it; how many depends on load.)
    assert 0 < r["messages"] <= r["messages_total"] <= r["udp"]["sent"] <= 4 * 1250, (r["messages"], r["udp"])
    assert r["latency_uncorrected_us"] is not None and r["send_lag_us"] is not None


def test_udp_open_loop_latency_shows_a_stall_that_closed_timing_hides(tmp_path, fault_udp):
    s = fault_udp("stall", "--hold-s", "1.0")  # holds every datagram for 0.5 s, 1 s after the first
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--transport", "udp", "--conns", "1", "--rate", "1000",
                       "--duration", "3", "--warmup", "0.5", "--timeout", "5")
    r = assert_clean(out, doc)
    corrected, uncorrected = r["latency_us"], r["latency_uncorrected_us"]
    assert corrected["p999"] >= 250_000, corrected  # hundreds of datagrams were due during the stall
    assert uncorrected["p999"] < corrected["p999"], (uncorrected, corrected)  # timed from the late send: shrinks
    assert uncorrected["max"] >= 400_000  # the one datagram caught in the stall
    assert r["udp"]["lost"] == 0


# -- each kind of datagram trouble is counted on its own ------------------------------------------

def test_dropped_datagrams_are_counted_lost_after_the_deadline(tmp_path, fault_udp):
    s = fault_udp("drop", "--every", "500")
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--transport", "udp", "--conns", "4", "--timeout", "0.2", *QUICK)
    r = doc["result"]
    assert out.returncode == 0, out.stderr  # loss is UDP's contract, reported, not an integrity failure
    u = r["udp"]
    dropped = affected(s)
    assert dropped > 0
    # a pause of either process over 0.2 s adds a loss whose echo then comes back late, counted late; only during
    # the final drain can such an echo come back after its connection closed, at most one per connection (4 x
    # depth 1): what never came back is the server's drops, plus at most those
    assert 0 <= u["lost"] - u["late"] - dropped <= 4 and u["duplicated"] == 0, (u, dropped)
    assert u["sent"] == u["delivered"] + u["lost"] and u["unresolved"] == 0
    assert 0 <= u["lost_in_window"] <= u["lost"]
    assert r["integrity_failures"] == 0


def test_duplicated_datagrams_are_counted_not_taken_as_echoes(tmp_path, fault_udp):
    s = fault_udp("dup", "--every", "200")
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--transport", "udp", "--conns", "4", "--timeout", "10", *QUICK)
    r = assert_clean(out, doc)
    u = r["udp"]
    dups = affected(s)
    # the copy of a datagram answered last may arrive after its connection closed
    assert dups - 4 <= u["duplicated"] <= dups and dups > 0
    assert u["sent"] == u["delivered"] and u["lost"] == 0


def test_reordered_datagrams_are_counted(tmp_path, fault_udp):
    s = fault_udp("reorder", "--every", "200")
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--transport", "udp", "--conns", "4", "--depth", "4",
                       "--timeout", "2", *QUICK)
    r = assert_clean(out, doc)
    u = r["udp"]
    held = affected(s)
    # a datagram held when its connection stopped sending is never released: lost, not reordered
    assert held - 4 <= u["reordered"] <= held and held > 0
    assert u["reordered"] + u["lost"] == held
    assert u["duplicated"] == 0


def test_corrupted_datagrams_are_integrity_failures(tmp_path, fault_udp):
    s = fault_udp("corrupt", "--every", "300")
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--transport", "udp", "--conns", "2", "--timeout", "10", *QUICK)
    r = doc["result"]
    assert out.returncode == 1
    assert r["integrity"].get("corrupt", 0) == affected(s) > 0
    assert "integrity failure" in out.stderr


def test_a_datagram_echoed_after_its_deadline_is_late_and_lost(tmp_path, fault_udp):
    s = fault_udp("delay", "--every", "300", "--hold-s", "0.4")
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--transport", "udp", "--conns", "2", "--timeout", "0.1", *QUICK)
    r = assert_clean(out, doc)
    u = r["udp"]
    delayed = affected(s)
    # every delayed datagram is lost; a pause over 0.1 s on a loaded machine may add losses that come back late
    assert u["lost"] >= delayed > 0
    # what never came back at all are delayed ones whose connection closed first
    assert 0 <= u["lost"] - u["late"] <= delayed
    assert u["late"] > 0 and u["duplicated"] == 0


def test_a_server_that_answers_nothing_ends_in_bounded_time(tmp_path, fault_udp):
    s = fault_udp("blackhole")
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--transport", "udp", "--conns", "3", "--timeout", "0.2", *QUICK)
    r = doc["result"]
    u = r["udp"]
    assert r["messages"] == 0 and u["delivered"] == 0
    assert u["lost"] == u["sent"] == affected(s) > 0
    assert u["loss_pct"] == 100


# -- faults and bad input -----------------------------------------------------------------------

def test_no_udp_server_is_a_one_line_error(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        # connected elsewhere: the port stays ours (no other test can take it) but accepts nothing from the load
        # generator, so the kernel answers its datagrams with ICMP port unreachable
        s.connect(("127.0.0.1", 9))
        port = s.getsockname()[1]
        out, doc = loadgen(tmp_path, "--port", str(port), "--transport", "udp", "--conns", "2", *QUICK)
    assert out.returncode == 3
    assert_one_line_error(out)
    assert "connection refused" in out.stderr
    assert doc is not None and doc["result"]["complete"] is False


def test_udp_server_death_mid_run_keeps_results_so_far(tmp_path, fault_udp):
    s = fault_udp("die", "--hold-s", "1.0")
    # a long run and a short deadline: the closed port is hit (ICMP) long before the run could end by itself
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--transport", "udp", "--conns", "2", "--timeout", "0.2",
                       "--duration", "10", "--warmup", "0.5")
    assert out.returncode == 3, out.stderr
    r = doc["result"]
    assert not r["complete"] and "port is closed" in r["incomplete_reason"]
    assert r["udp"]["delivered"] > 0


def test_interrupted_udp_run_counts_datagrams_in_flight_as_unresolved_not_lost(tmp_path, fault_udp):
    s = fault_udp("blackhole")
    path = tmp_path / "r.json"
    code, stderr = run_and_interrupt("--port", str(s.port), "--transport", "udp", "--conns", "4", "--depth", "8",
                                     "--timeout", "20", "--duration", "30", "--warmup", "0.2", "--json", str(path))
    assert code == 3, stderr
    r = json.loads(path.read_text())["result"]
    assert r["incomplete_reason"] == "interrupted"
    u = r["udp"]
    # every datagram sent was swallowed, none has had its 20 s: unresolved, not lost; no loss rate to give
    assert u["unresolved"] == u["sent"] == 32 and u["lost"] == 0 and u["loss_pct"] is None


def test_missing_unix_socket_is_a_one_line_error(tmp_path):
    out, doc = loadgen(tmp_path, "--transport", "unix", "--path", str(tmp_path / "none.sock"), "--conns", "2", *QUICK)
    assert out.returncode == 3
    assert_one_line_error(out)
    assert "no such socket file" in out.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--transport", "unix"], "needs --path"),
    (["--path", "/tmp/x.sock"], "only to --transport unix"),
    (["--transport", "udp", "--size", "8"], "--size over UDP"),
    (["--transport", "udp", "--size", "65508"], "--size over UDP"),
    (["--transport", "udp", "--server", "reuseport"], "does not support --transport udp"),
    (["--transport", "udp", "--server", "asyncio-streams"], "does not support --transport udp"),
    (["--transport", "unix", "--path", "/tmp/" + "x" * 120], "107"),
])
def test_bad_transport_arguments(tmp_path, args, fragment):
    out, doc = loadgen(tmp_path, *args, *QUICK)
    assert out.returncode == 2
    assert_one_line_error(out)
    assert fragment in out.stderr and doc is None


def test_managed_unix_server_is_cleaned_up_when_it_fails_to_start(tmp_path):
    before = set(Path(tempfile.gettempdir()).glob("echobench-*"))
    out, doc = loadgen(tmp_path, "--server", "threads", "--transport", "unix", "--server-arg=--workers=2", *QUICK)
    assert out.returncode == 3
    assert_one_line_error(out)
    assert set(Path(tempfile.gettempdir()).glob("echobench-*")) == before


def test_server_process_fixture_reports_unix_address(start_server):
    folder = tempfile.mkdtemp(prefix="eb-", dir="/tmp")
    path = f"{folder}/a.sock"
    s = start_server("threads", "--transport", "unix", "--path", path)
    assert s.addr == (path, None) and Path(path).exists()
    rc, elapsed, leftover = s.stop(signal.SIGTERM)
    assert_clean_exit(s, rc, elapsed, leftover)
    assert not Path(path).exists()
    Path(folder).rmdir()
