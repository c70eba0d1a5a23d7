"""``python -m servers`` as a user runs it: listing, bad input, supervision."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest

from servers import registry

from conftest import MODEL_PARAMS, ROOT_DIR
from support.echo_client import roundtrip


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "servers", *args], cwd=ROOT_DIR, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(out: subprocess.CompletedProcess, *fragments: str) -> None:
    assert out.returncode != 0
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{out.stderr}"
    assert "Traceback" not in out.stderr
    for f in fragments:
        assert f in lines[0], f"{f!r} not in {lines[0]!r}"


def test_list_names_every_model_with_a_description():
    out = run_cli("--list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(registry.MODELS)
    for line in lines:
        assert len(line.split(None, 1)) == 2, f"no description: {line!r}"
    for required in ("threads", "asyncio-streams", "asyncio-protocol", "uvloop-streams",
                     "uvloop-protocol", "reuseport", "selectors"):
        assert required in registry.MODELS


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["no-such-model"], "unknown model"),
        ([], "MODEL is required"),
        (["reuseport", "--workers", "0"], "at least 1"),
        (["reuseport", "--workers", "-3"], "at least 1"),
        (["reuseport", "--workers", "two"], "invalid count"),
        (["reuseport", "--inner", "reuseport"], "--inner"),
        (["threads", "--workers", "2"], "only to multi-process"),
        (["threads", "--port", "70000"], "outside"),
        (["threads", "--port", "http"], "invalid port"),
        (["threads", "--host", ""], "empty"),
        (["threads", "--bogus"], "unrecognized"),
    ],
)
def test_bad_arguments_give_one_line_and_nonzero_exit(args, fragment):
    assert_one_line_error(run_cli(*args), fragment)


@pytest.mark.parametrize("model", MODEL_PARAMS)
def test_port_in_use_is_one_line(model):
    with socket.socket() as taken:  # a plain listener: no SO_REUSEPORT, so nobody may share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli(model, "--port", str(port))
    assert_one_line_error(out, "cannot bind", str(port))


@pytest.mark.parametrize("model", MODEL_PARAMS)
def test_unusable_host_is_one_line(model):
    # 192.0.2.1 (TEST-NET-1) is a valid address that is not on this machine: bind fails, nothing is sent
    assert_one_line_error(run_cli(model, "--host", "192.0.2.1", "--port", "0"), "192.0.2.1")


def test_binds_loopback_by_default(start_server):
    s = start_server("selectors")
    assert s.host == "127.0.0.1"


# -- reuseport supervision -------------------------------------------------------------

def _workers(server) -> list[psutil.Process]:
    return psutil.Process(server.proc.pid).children()


def test_reuseport_defaults_to_one_worker_per_usable_cpu(start_server):
    server = start_server("reuseport")
    assert len(_workers(server)) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("inner", ["asyncio-protocol", "asyncio-streams", "selectors"])
def test_reuseport_inner_model(start_server, inner):
    server = start_server("reuseport", "--workers", "3", "--inner", inner)
    assert len(_workers(server)) == 3
    for _ in range(20):
        roundtrip(server.addr)


def test_reuseport_spreads_connections_over_workers(start_server):
    server = start_server("reuseport", "--workers", "2")
    socks = [socket.create_connection(server.addr, timeout=10) for _ in range(64)]
    try:
        for s in socks:
            s.sendall(b"x")
            assert s.recv(1) == b"x"
        per_worker = [len(w.net_connections(kind="tcp")) for w in _workers(server)]
    finally:
        for s in socks:
            s.close()
    assert all(n > 1 for n in per_worker), f"connections per worker: {per_worker}"


def test_reuseport_restarts_a_dead_worker(start_server):
    server = start_server("reuseport", "--workers", "2")
    victim = _workers(server)[0].pid
    os.kill(victim, signal.SIGKILL)
    server.wait_for_stderr(rf"worker pid {victim} died \(signal 9\)", timeout=10)
    server.wait_for_stderr(rf"worker pid \d+ replaces pid {victim}", timeout=10)
    pids = [w.pid for w in _workers(server)]
    assert len(pids) == 2 and victim not in pids
    for _ in range(20):
        roundtrip(server.addr)
