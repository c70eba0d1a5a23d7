"""Behaviour every server model has, on real sockets and real server processes."""

from __future__ import annotations

import errno
import random
import resource
import selectors
import signal
import socket
import struct
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_clean_exit, raise_own_nofile, require_tool
from support.echo_client import connect, echo_exact, roundtrip

MiB = 1024 * 1024


# -- byte-exact echo -------------------------------------------------------------

@st.composite
def payload_and_splits(draw, max_size=2 * MiB):
    """Arbitrary bytes (small: drawn byte by byte; large: from a drawn seed) and split points."""
    if draw(st.booleans()):
        payload = draw(st.binary(min_size=1, max_size=4096))
    else:
        size = draw(st.integers(1, max_size))
        payload = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(payload) - 1)), max_size=40))))
    bounds = [0, *[c for c in cuts if c < len(payload)], len(payload)]
    chunks = [b - a for a, b in zip(bounds, bounds[1:])]
    recv_size = draw(st.sampled_from([1, 7, 1000, 4096, 65536, 1 << 20]))
    return payload, chunks, recv_size


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=payload_and_splits())
def test_echo_arbitrary_payloads_and_splits(shared_server, case):
    payload, chunks, recv_size = case
    with connect(shared_server.addr) as s:
        echo_exact(s, payload, chunks, recv_size)


@pytest.mark.parametrize("size", [1, 1000, 65537, 1 * MiB, 64 * MiB], ids=lambda n: f"{n}B")
def test_echo_sizes_with_random_splits(server, size):
    rng = random.Random(size)
    payload = rng.randbytes(size)
    chunks, left = [], size
    while left:  # chunk sizes from 1 byte to 1 MiB, log-uniform
        c = min(left, int(2 ** rng.uniform(0, 20)))
        chunks.append(c)
        left -= c
    with connect(server.addr) as s:
        # small reads force the server into partial writes and backpressure
        echo_exact(s, payload, chunks, recv_size=rng.choice([1000, 65536]) if size > 1 else 1)


def test_many_messages_on_one_connection_stay_in_order(server):
    with connect(server.addr) as s:
        for i in range(2000):
            msg = struct.pack("!I", i) * 8
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += s.recv(len(msg) - len(got))
            assert got == msg, f"message {i} came back as {got!r}"


# -- half-close and reset --------------------------------------------------------

@pytest.mark.parametrize("size", [1, 100_000, 8 * MiB], ids=lambda n: f"{n}B")
def test_half_close_returns_everything_then_eof(server, size):
    payload = random.Random(size).randbytes(size)
    with connect(server.addr) as s:
        echo_exact(s, payload, half_close=True)


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # linger 0: the kernel sends RST, not FIN


def test_reset_mid_stream_does_not_disturb_others(server):
    steady = connect(server.addr)
    echo_exact(steady, b"before")
    blob = bytes(range(256)) * 4096  # 1 MiB, more than the server can push back at once
    for _ in range(30):
        victim = connect(server.addr)
        victim.setblocking(False)
        sent = 0
        try:  # send what the buffers take, never read: the server is mid-write when we reset
            while sent < len(blob):
                sent += victim.send(blob[sent:])
        except BlockingIOError:
            pass
        _reset(victim)
    echo_exact(steady, b"after" * 1000)
    roundtrip(server.addr)
    steady.close()
    server.assert_alive()
    assert "Traceback" not in server.stderr


# -- backpressure --------------------------------------------------------------------

SLOW_CLIENTS = 50
SLOW_WRITE = 32 * MiB
RSS_GROWTH_LIMIT = 64 * MiB


def _push_until_stalled(socks, goal: int, stall_s: float = 1.0, deadline_s: float = 60.0) -> int:
    """Write ``goal`` bytes to every socket without reading; stop when none is writable for ``stall_s``."""
    sent = dict.fromkeys(socks, 0)
    block = b"\xa5" * 65536
    end = time.monotonic() + deadline_s
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_WRITE)
        while sel.get_map() and time.monotonic() < end:
            ready = sel.select(stall_s)
            if not ready:
                break  # every connection is blocked by the server's backpressure
            for key, _ in ready:
                s = key.fileobj
                try:
                    sent[s] += s.send(block[: goal - sent[s]])
                except BlockingIOError:
                    continue
                if sent[s] >= goal:
                    sel.unregister(s)
    return sum(sent.values())


def test_slow_readers_get_backpressure_not_buffering(server):
    roundtrip(server.addr)
    base = server.rss()
    socks = []
    try:
        for _ in range(SLOW_CLIENTS):
            s = connect(server.addr, rcvbuf=64 * 1024)
            s.setblocking(False)
            socks.append(s)
        pushed = _push_until_stalled(socks, SLOW_WRITE)
        grown = server.rss() - base
        assert pushed < SLOW_CLIENTS * SLOW_WRITE, "the server swallowed everything: no backpressure"
        assert grown <= RSS_GROWTH_LIMIT, (
            f"{server.model}: resident memory grew {grown / MiB:.0f} MiB with {SLOW_CLIENTS} slow readers "
            f"({pushed / MiB:.0f} MiB pushed)"
        )
        # ...and it keeps serving everyone else meanwhile
        for _ in range(5):
            roundtrip(server.addr, b"still here" * 100)
    finally:
        for s in socks:
            _reset(s)
    server.assert_alive()


# -- many connections ------------------------------------------------------------------

CONCURRENT = 2000


def test_2000_concurrent_connections_each_echo(server, record_property):
    raise_own_nofile(CONCURRENT + 200)
    t0 = time.monotonic()
    deadline = t0 + 60
    socks = []
    try:
        with selectors.DefaultSelector() as sel:
            for i in range(CONCURRENT):
                s = socket.socket()
                s.setblocking(False)
                err = s.connect_ex(server.addr)
                assert err in (0, errno.EINPROGRESS), f"connect {i}: {errno.errorcode.get(err, err)}"
                socks.append(s)
                sel.register(s, selectors.EVENT_WRITE, i)
            # every connection established, all open at once
            while sel.get_map():
                left = deadline - time.monotonic()
                assert left > 0, f"{len(sel.get_map())} connects pending after 60 s"
                for key, _ in sel.select(left):
                    s = key.fileobj
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    assert err == 0, f"connect {key.data}: {errno.errorcode.get(err, err)}"
                    sel.unregister(s)
            for i, s in enumerate(socks):
                s.send(struct.pack("!I", i) * 4)
                sel.register(s, selectors.EVENT_READ, (i, bytearray()))
            while sel.get_map():
                left = deadline - time.monotonic()
                assert left > 0, f"{len(sel.get_map())} of {CONCURRENT} echoes missing after 60 s"
                for key, _ in sel.select(left):
                    i, got = key.data
                    data = key.fileobj.recv(64)
                    assert data, f"connection {i} closed before its echo"
                    got += data
                    if len(got) >= 16:
                        assert bytes(got) == struct.pack("!I", i) * 4, f"connection {i} got {bytes(got)!r}"
                        sel.unregister(key.fileobj)
        elapsed = time.monotonic() - t0
        record_property("seconds_for_2000_connections", round(elapsed, 3))
        print(f"{server.model}: {CONCURRENT} concurrent echoes in {elapsed:.2f} s")
    finally:
        for s in socks:
            s.close()
    server.assert_alive()


# -- descriptor exhaustion ---------------------------------------------------------------

FD_LIMIT = 128
EXHAUST_CONNS = 400


def _low_fd_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))



@pytest.mark.parametrize("window_s", [1.0])
def test_fd_exhaustion(model, start_server, window_s):
    raise_own_nofile(EXHAUST_CONNS + 200)
    server = start_server(model, preexec_fn=_low_fd_limit)
    roundtrip(server.addr)
    socks = []
    try:
        for _ in range(EXHAUST_CONNS):  # the kernel completes these handshakes from the backlog
            s = connect(server.addr)
            s.setblocking(False)
            try:
                s.send(b"x")
            except OSError:
                pass
            socks.append(s)
        # collect echoes until nothing new happens for window_s: the server is at its limit
        served = dropped = 0
        with selectors.DefaultSelector() as sel:
            for s in socks:
                sel.register(s, selectors.EVENT_READ)
            end = time.monotonic() + 30
            while time.monotonic() < end:
                ready = sel.select(window_s)
                if not ready:
                    break
                for key, _ in ready:
                    try:
                        data = key.fileobj.recv(16)
                    except ConnectionError:
                        data = b""
                    if data == b"x":
                        served += 1
                    else:
                        dropped += 1  # closed by the server (libuv's EMFILE strategy)
                    sel.unregister(key.fileobj)
            assert served + dropped < EXHAUST_CONNS or dropped > 0, "the descriptor limit was never reached"
            # while exhausted, the server must idle, not spin on a readable listening socket
            cpu0, t0 = server.cpu_seconds(), time.monotonic()
            sel.select(window_s)
            busy = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        server.assert_alive()
        assert busy < 0.5, f"{model} used {busy:.0%} of a CPU while out of descriptors (spinning)"
        lines = server.stderr.splitlines()
        assert len(lines) < 20, f"{model} flooded stderr while out of descriptors:\n" + "\n".join(lines[:10])
    finally:
        for s in socks:
            s.close()
    # descriptors are free again: the server serves (asyncio retries accept after 1 s)
    end = time.monotonic() + 20
    while True:
        try:
            roundtrip(server.addr, b"back", timeout=3)
            break
        except (OSError, AssertionError):
            if time.monotonic() > end:
                raise
    server.assert_alive()


# -- a client nobody in the project wrote ----------------------------------------------

def test_netcat_round_trip(server):
    nc = require_tool("nc")
    line = b"hello from netcat \x01\x02\xff\n"
    out = subprocess.run(
        [nc, "-N", server.host, str(server.port)], input=line, capture_output=True, timeout=10
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == line


# -- clean stop ------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_with_connections_open(model, start_server, sig, record_property):
    server = start_server(model)
    idle = connect(server.addr)
    busy = connect(server.addr, rcvbuf=64 * 1024)  # a stalled writer: the server is blocked on it
    busy.setblocking(False)
    _push_until_stalled([busy], 16 * MiB, stall_s=0.5)
    rc, elapsed, leftover = server.stop(sig)
    idle.close()
    busy.close()
    assert_clean_exit(server, rc, elapsed, leftover)  # exited (within the hang deadline), code 0, no workers left
    record_property("seconds_to_stop", round(elapsed, 3))  # the 2 s promise is the servers' own budget, not asserted


# -- no allocation churn per message ----------------------------------------------------------

def _minor_faults(server) -> int:
    total = 0
    for p in server.processes():
        try:
            with open(f"/proc/{p.pid}/stat") as f:
                total += int(f.read().rsplit(")", 1)[1].split()[7])  # field 10: minflt
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def test_steady_echo_does_not_fault_pages_per_message(server):
    """A read buffer mmapped and unmapped per message (asyncio's recv(256 KiB) on an unsettled
    glibc heap) costs at least one page fault per message; a steady echo should cost none."""
    msg = b"m" * 1024
    with connect(server.addr) as s:
        for _ in range(500):  # warm up: buffers, caches, heap
            s.sendall(msg)
            got = 0
            while got < len(msg):
                got += len(s.recv(65536))
        before = _minor_faults(server)
        n = 3000
        for _ in range(n):
            s.sendall(msg)
            got = 0
            while got < len(msg):
                got += len(s.recv(65536))
        faults = _minor_faults(server) - before
    assert faults / n < 0.2, f"{server.model}: {faults} minor page faults over {n} echoes"
