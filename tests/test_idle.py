"""Connection scale (loadgen/run.py --idle): every connection established or counted as failed by kind, the
server's memory per connection measured (a server that holds a known amount per connection is reported within
10% of it), descriptors running out on either side a counted failure or a one-line error, never a hang. (How
connections are spread over processes and source addresses: unit/test_idle.py.)"""

from __future__ import annotations

import json
import resource
import signal
import subprocess

import psutil
import pytest
from test_loadgen import RUN, assert_one_line_error, loadgen

from loadgen import idle
from servers import registry

from conftest import ROOT_DIR, raise_own_nofile
from support.serverproc import ServerProcess

AVAILABLE = [m for m in registry.MODELS if registry.get(m).unavailable_reason() is None]


def _adds_up(doc) -> dict:
    c = doc["result"]["connect"]
    assert c["attempted"] == c["established"] + sum(c["failures"].values()), c
    lv = doc["result"]["memory"]["levels"]
    assert all(x["attempted"] == x["established"] + x["failed"] for x in lv), lv
    return c


@pytest.mark.parametrize("model", AVAILABLE)
def test_a_connect_storm_against_every_model_adds_up(tmp_path, model):
    raise_own_nofile(2200)
    out, doc = loadgen(tmp_path, "--server", model, "--idle", "500,2000", "--hold", "0.2", "--connect-timeout", "10",
                       "--quiet", timeout=180)
    assert doc is not None, out.stderr
    c = _adds_up(doc)
    assert out.returncode == 0 and c["established"] == 2000 and not c["failures"], (out.stderr, c)
    assert c["per_s"] > 0 and c["latency_us"]["p50"] is not None
    m = doc["result"]["memory"]
    assert m["server_pid"] and m["server_rss_before_bytes"] > 0
    assert [x["attempted"] for x in m["levels"]] == [500, 2000]
    assert doc["result"]["server_alive"] is True


def test_memory_per_connection_is_measured_not_assumed(tmp_path, fault_server):
    per_conn = 256 * 1024
    s = fault_server("hog", "--per-conn-bytes", str(per_conn))
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--server-pid", str(s.proc.pid), "--idle", "100,300",
                       "--hold", "0.2", "--quiet")
    assert out.returncode == 0, out.stderr
    _adds_up(doc)
    m = doc["result"]["memory"]
    for lv in m["levels"]:
        assert lv["server_rss_per_conn_bytes"] == pytest.approx(per_conn, rel=0.10), lv
    assert m["levels"][1]["marginal_per_conn_bytes"] == pytest.approx(per_conn, rel=0.10)
    assert m["server_rss_per_conn_bytes"] == pytest.approx(per_conn, rel=0.10)  # the headline: between the levels


def test_a_trickle_checks_every_echo_while_holding(tmp_path):
    out, doc = loadgen(tmp_path, "--server", AVAILABLE[0], "--idle", "50", "--hold", "1", "--trickle", "0.25",
                       "--size", "100", "--quiet")
    assert out.returncode == 0, out.stderr
    t = doc["result"]["trickle"]
    assert t["every_s"] == 0.25 and not t["failures"] and t["connections_lost"] == 0
    assert t["connections_checked_by_echo"] == 50 and 50 <= t["echoes"] <= 50 * 4
    assert "every byte checked" in out.stdout


def test_a_server_out_of_descriptors_is_a_counted_failure_not_a_hang(tmp_path):
    def low_fds():  # the server can hold ~100 connections; the rest complete the handshake in its backlog only
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    s = ServerProcess("selectors", preexec_fn=low_fds)
    try:
        out, doc = loadgen(tmp_path, "--port", str(s.port), "--idle", "300", "--hold", "0.1", "--quiet", timeout=120)
    finally:
        s.stop()
    assert out.returncode == 3, out.stderr
    c = _adds_up(doc)
    assert 0 < c["established"] < 300 and c["failures"]  # each unaccepted connection failed its echo, by kind
    assert "connections failed" in out.stderr and out.stderr.count("\n") == 1


def test_nothing_listening_is_refused_connections_counted(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out, doc = loadgen(tmp_path, "--port", str(port), "--idle", "20", "--hold", "0.1", "--quiet")
    assert out.returncode == 3
    c = _adds_up(doc)
    assert c["established"] == 0 and c["failures"] == {"refused": 20}
    assert "20 of 20 connections failed or were lost (refused 20)" in out.stderr


@pytest.mark.parametrize("trickle", [None, "0.2"])
def test_connections_the_server_drops_while_held_are_counted_lost(tmp_path, fault_server, trickle):
    s = fault_server("once", "--size", "100")  # echoes the probe, then closes every connection
    extra = ["--trickle", trickle] if trickle else []
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--idle", "30", "--hold", "0.5", "--size", "100", *extra,
                       "--quiet")
    assert out.returncode == 3
    c = _adds_up(doc)
    assert c["established"] == 30  # each probe came back
    t = doc["result"]["trickle"]
    # without a trickle the check after the hold finds each closed; with one, its first echo does
    assert t["connections_lost"] == 30 and sum(t["failures"].values()) == 30, t
    assert "30 of 30 connections failed or were lost" in out.stderr


def test_the_client_out_of_descriptors_is_one_line_before_connecting(tmp_path):
    def low_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    # 1,000 connections under a hard limit of 256 need 6 processes: 2 asked for is refused before any connect
    out = subprocess.run([*RUN, "--port", "1", "--idle", "1000", "--workers", "2"], cwd=ROOT_DIR, capture_output=True,
                         text=True, timeout=60, preexec_fn=low_fds)
    assert out.returncode == 2
    assert_one_line_error(out)
    assert "at least 6 load-generator processes" in out.stderr and "file descriptors" in out.stderr


def _wait_for_line(stream, text: str, timeout: float = 120.0) -> None:
    """Block until a line containing ``text`` arrives on ``stream`` (a text pipe), at most ``timeout`` s."""
    import queue
    import threading

    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in stream] and None, daemon=True).start()
    import time as _t

    end = _t.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.01, end - _t.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no line with {text!r} within {timeout:.0f} s") from None
        if text in line:
            return


def _peers_after_stop(s) -> dict[str, int]:
    """Stop a ``count`` fault server and read the connections it accepted, by client address."""
    s.proc.send_signal(signal.SIGTERM)
    s.proc.wait(30)
    out = s.proc.stdout.read().decode().splitlines()
    line = next(x for x in out if x.startswith("peers"))
    return {a: int(n) for a, n in (x.split("=") for x in line.split()[1:])}


def _low_hard_fds():
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def test_past_one_process_descriptor_limit_the_connections_spread_over_processes(tmp_path, fault_server):
    """Under a hard limit of 256 descriptors, 600 connections need 4 processes (192 each after the reserve):
    chosen by themselves, every connection held, the server saw every one of them."""
    s = fault_server("count", "--size", "100")
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--idle", "200,600", "--hold", "0.3", "--trickle", "0.1",
                       "--size", "100", "--quiet", preexec_fn=_low_hard_fds, timeout=120)
    assert out.returncode == 0, out.stderr
    c = _adds_up(doc)
    assert c["established"] == 600 and not c["failures"]
    sp = doc["result"]["spread"]
    assert sp["workers"] == 4 and "hard limit of 256" in sp["why"], sp
    t = doc["result"]["trickle"]
    assert t["connections_checked_by_echo"] == 600 and not t["failures"], t  # every process's share echoed
    peers = _peers_after_stop(s)
    assert sum(peers.values()) == 600 + idle.WARM_UP_CONNS


def test_connections_come_from_every_source_address_given(tmp_path, fault_server):
    s = fault_server("count", "--size", "100")
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--idle", "90", "--workers", "2", "--source-addrs",
                       "127.0.0.2,127.0.0.3,127.0.0.4", "--hold", "0.1", "--size", "100", "--quiet")
    assert out.returncode == 0, out.stderr
    c = _adds_up(doc)
    assert c["by_source"] == {"127.0.0.2": 30, "127.0.0.3": 30, "127.0.0.4": 30}, c
    peers = _peers_after_stop(s)
    # what the server saw, not what the client says: the warm-up connections come from the kernel's choice
    assert {a: n for a, n in peers.items() if a != "127.0.0.1"} == {"127.0.0.2": 30, "127.0.0.3": 30,
                                                                     "127.0.0.4": 30}, peers


def test_a_server_past_its_limit_stops_the_run_with_the_reason(tmp_path):
    """The server can hold ~120 connections: once 20 have failed the level stops, the next is not attempted, and
    the reason comes from the server's side (its descriptors at its limit), not from a guess."""
    def low_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    s = ServerProcess("selectors", preexec_fn=low_fds)
    try:
        out, doc = loadgen(tmp_path, "--port", str(s.port), "--server-pid", str(s.proc.pid), "--idle", "300,2000",
                           "--max-connect-failures", "20", "--connect-timeout", "2", "--hold", "0.1", "--quiet",
                           timeout=120)
    finally:
        s.stop()
    assert out.returncode == 3, out.stderr
    c = _adds_up(doc)
    st = doc["result"]["stopped"]
    assert st["level"] == 300 and st["levels_not_attempted"] == [2000], st
    assert 20 <= sum(c["failures"].values()) < 300 and c["attempted"] <= 300
    assert "ran out of file descriptors" in st["reason"] and "limit 128 per process" in st["reason"], st
    assert doc["result"]["complete"] is False
    assert "ran out of file descriptors" in out.stderr and out.stderr.count("\n") == 1


def test_sigterm_with_several_processes_writes_the_document_and_leaves_none_behind(tmp_path, fault_server):
    s = fault_server("count", "--size", "100")
    path = tmp_path / "r.json"
    p = subprocess.Popen([*RUN, "--port", str(s.port), "--idle", "100", "--workers", "3", "--hold", "60",
                          "--size", "100", "--json", str(path)], cwd=ROOT_DIR, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(p.stderr, "100 of 100 connections held")  # the hold begins once every connection is held
        kids = psutil.Process(p.pid).children(recursive=True)
        assert len(kids) >= 2, kids  # the two other load-generator processes
        p.send_signal(signal.SIGTERM)
        rc = p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert rc == 3
    doc = json.loads(path.read_text())
    assert doc["result"]["incomplete_reason"] == "interrupted"
    c = _adds_up(doc)
    assert c["established"] == 100
    gone, alive = psutil.wait_procs(kids, timeout=30)
    assert not alive, alive


@pytest.mark.parametrize("args, fragment", [
    (["--idle", "0"], "increasing positive"),
    (["--idle", "500,100"], "increasing positive"),
    (["--idle", "many"], "connection counts"),
    (["--idle", "10", "--rate", "100"], "drop --rate"),
    (["--idle", "10", "--transport", "udp"], "TCP"),
    (["--trickle", "1"], "applies to --idle"),
    (["--idle", "10", "--trickle", "0"], "interval"),
    (["--hold", "1"], "applies to --idle"),
    (["--source-addrs", "127.0.0.2"], "applies to --idle"),
    (["--max-connect-failures", "5"], "applies to --idle"),
    (["--idle", "10", "--source-addrs", "localhost"], "IP addresses"),
    (["--idle", "10", "--source-addrs", ","], "IP addresses"),
    (["--idle", "10", "--max-connect-failures", "0"], "at least 1"),
    (["--idle", "10", "--port", "1", "--source-addrs", "192.0.2.7"], "cannot bind it here"),
])
def test_bad_idle_arguments(args, fragment):
    out = subprocess.run([*RUN, *args], cwd=ROOT_DIR, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert_one_line_error(out)
    assert fragment in out.stderr, out.stderr


def test_help_lists_the_connection_scale_options():
    out = subprocess.run([*RUN, "--help"], cwd=ROOT_DIR, capture_output=True, text=True, timeout=30)
    assert "--idle" in out.stdout and "--connect-rate" in out.stdout and "--trickle" in out.stdout


def _start_held(tmp_path, port: int, hold: str):
    p = subprocess.Popen([*RUN, "--port", str(port), "--idle", "60", "--workers", "3", "--hold", hold,
                          "--size", "100", "--json", str(tmp_path / "r.json")], cwd=ROOT_DIR, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    _wait_for_line(p.stderr, "60 of 60 connections held")
    kids = psutil.Process(p.pid).children(recursive=True)
    assert len(kids) >= 2, kids
    return p, kids


def test_a_hard_killed_load_generator_leaves_no_process_holding_connections(tmp_path, fault_server):
    s = fault_server("count", "--size", "100")
    p, kids = _start_held(tmp_path, s.port, "60")
    try:
        p.kill()  # no handler runs: the helpers must go by themselves (they die with their parent)
        p.wait(30)
        _gone, alive = psutil.wait_procs(kids, timeout=30)
        assert not alive, alive
    finally:
        for k in kids:
            if k.is_running():
                k.kill()


def test_a_load_generator_process_that_dies_mid_run_ends_it_incomplete_not_hung(tmp_path, fault_server):
    s = fault_server("count", "--size", "100")
    p, kids = _start_held(tmp_path, s.port, "2")
    try:
        kids[-1].kill()  # one helper, during the hold
        rc = p.wait(120)
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert rc == 3, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert "died" in doc["result"]["incomplete_reason"] and "Traceback" not in err
