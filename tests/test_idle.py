"""Connection scale (loadgen/run.py --idle): every connection established or counted as failed by kind, the
server's memory per connection measured (a server that holds a known amount per connection is reported within
10% of it), descriptors running out on either side a counted failure or a one-line error, never a hang."""

from __future__ import annotations

import resource
import subprocess

import pytest

from conftest import ROOT_DIR, raise_own_nofile
from serverproc import ServerProcess
from test_loadgen import RUN, assert_one_line_error, loadgen

from servers import registry

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

    out = subprocess.run([*RUN, "--port", "1", "--idle", "1000"], cwd=ROOT_DIR, capture_output=True, text=True,
                         timeout=60, preexec_fn=low_fds)
    assert out.returncode == 2
    assert_one_line_error(out)
    assert "file descriptors" in out.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--idle", "0"], "increasing positive"),
    (["--idle", "500,100"], "increasing positive"),
    (["--idle", "many"], "connection counts"),
    (["--idle", "10", "--rate", "100"], "drop --rate"),
    (["--idle", "10", "--transport", "udp"], "TCP"),
    (["--trickle", "1"], "applies to --idle"),
    (["--idle", "10", "--trickle", "0"], "interval"),
    (["--hold", "1"], "applies to --idle"),
])
def test_bad_idle_arguments(args, fragment):
    out = subprocess.run([*RUN, *args], cwd=ROOT_DIR, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert_one_line_error(out)
    assert fragment in out.stderr, out.stderr


def test_help_lists_the_connection_scale_options():
    out = subprocess.run([*RUN, "--help"], cwd=ROOT_DIR, capture_output=True, text=True, timeout=30)
    assert "--idle" in out.stdout and "--connect-rate" in out.stdout and "--trickle" in out.stdout
