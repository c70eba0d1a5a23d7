"""pytest-benchmark over the hot paths: ``make bench-pytest`` (not part of ``make test``).

    make bench-pytest PYTEST_ARGS="--benchmark-autosave"                       # save a baseline
    make bench-pytest PYTEST_ARGS="--benchmark-compare --benchmark-compare-fail=mean:10%"   # gate on it

Absolute times belong here, not in tests: pytest-benchmark repeats each
function, reports min/mean/stddev, and compares against saved runs.
"""

from __future__ import annotations

import signal
import socket
import time

import numpy as np
import pytest

from loadgen import stats
from loadgen.config import LoadConfig
from loadgen.engine import Closed1Conn, Worker

from conftest import MODEL_PARAMS, assert_clean_exit
from support.serverproc import ServerProcess

# -- the stats core --------------------------------------------------------------------------------

SAMPLES = np.random.default_rng(0).lognormal(11, 0.6, 100_000).astype(np.int64)  # ~60 us latencies in ns


def test_record_batch_100k(benchmark):
    benchmark(lambda: stats.record_batch(stats.new_histogram(), SAMPLES))


def test_merge_8_histograms(benchmark):
    encoded = []
    for i in range(8):
        h = stats.new_histogram()
        stats.record_batch(h, SAMPLES[i::8])
        encoded.append(stats.encode(h))
    merged = benchmark(stats.merge, encoded)
    assert merged.get_total_count() == SAMPLES.size


def test_percentile_summary(benchmark):
    h = stats.new_histogram()
    stats.record_batch(h, SAMPLES)
    benchmark(stats.summary_us, h)


# -- the load generator's per-message path ---------------------------------------------------------

class _Pipe:
    def send(self, _):
        pass


class _Transport:
    def __init__(self):
        self.last = b""

    def write(self, data):
        self.last = data


def test_loadgen_per_message_path(benchmark):
    w = Worker(LoadConfig(size=1024), 0, [0], _Pipe())
    w.sending = True
    c = Closed1Conn(w, 0)
    t = _Transport()
    c.connection_made(t)
    c.start(time.perf_counter_ns())

    def one_message():
        c.data_received(t.last)

    benchmark.pedantic(one_message, rounds=50, iterations=2000, warmup_rounds=2)
    assert c.count > 0 and not w.integrity


# -- one echo round trip through each server model, on a real socket ------------------------------

@pytest.fixture(scope="module", params=MODEL_PARAMS)
def echo_server(request):
    s = ServerProcess(request.param)
    yield s
    assert_clean_exit(s, *s.stop(signal.SIGTERM))


def test_echo_round_trip(benchmark, echo_server):
    sock = socket.create_connection(echo_server.addr, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = bytes(range(256)) * 4
    buf = bytearray(len(msg))
    view = memoryview(buf)

    def round_trip():
        sock.sendall(msg)
        got = 0
        while got < len(msg):
            got += sock.recv_into(view[got:])
        return buf

    out = benchmark(round_trip)
    sock.close()
    assert bytes(out) == msg
