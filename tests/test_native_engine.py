"""The native (C) load-generator engine: it is built where it should be, it is chosen and refused as documented,
it classifies failures exactly as the Python engine does, and its byte checks hold however the echo is split.

The behaviour tests of loadgen/run.py (test_loadgen.py, test_loadgen_transports.py) run over both engines
through the ``engine`` fixture; this file holds what is specific to the native one. Whether it is built and which
engine a run resolves to: unit/test_native_engine.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from test_loadgen import DEFAULT_MODEL, QUICK, RUN, assert_one_line_error, loadgen

from loadgen.engine import native
from loadgen.payload import MessageMaker, shared_ring

from conftest import ROOT_DIR
from support.native_exercise import peer_loop

needs_native = pytest.mark.skipif(native.UNAVAILABLE is not None and not os.environ.get("CI"),
                                  reason=str(native.UNAVAILABLE))


def _hide_native_and_run(*args) -> subprocess.CompletedProcess:
    """loadgen/run.py in a process where the extension cannot be imported, as on an install without a compiler."""
    code = ("import sys; sys.modules['loadgen.engine._native'] = None; sys.argv[0] = 'loadgen/run.py'; "
            "from loadgen.run import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT_DIR, capture_output=True, text=True, timeout=90)


def test_without_the_extension_the_run_says_so_and_uses_python(tmp_path):
    path = tmp_path / "r.json"
    out = _hide_native_and_run("--server", "asyncio-protocol", "--conns", "2", *QUICK, "--json", str(path))
    assert out.returncode == 0, out.stderr
    notes = [x for x in out.stderr.splitlines() if "Python engine" in x]
    assert len(notes) == 1 and "not built" in notes[0] and "make venv" in notes[0], out.stderr
    doc = json.loads(path.read_text())
    assert doc["config"]["engine"] == "python" and "not built" in doc["config"]["engine_note"]
    assert doc["result"]["complete"] and doc["result"]["messages"] > 0


def test_asking_for_the_native_engine_where_it_cannot_run_is_a_one_line_error(tmp_path):
    out = _hide_native_and_run("--port", "1", "--engine", "native", *QUICK)
    assert out.returncode == 2
    assert_one_line_error(out)
    assert "not built" in out.stderr
    out = subprocess.run([*RUN, "--port", "1", "--transport", "udp", "--engine", "native", *QUICK], cwd=ROOT_DIR,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert_one_line_error(out)
    assert "UDP" in out.stderr


# -- the same truth: both engines against the same broken server ----------------------------------

@needs_native
@pytest.mark.parametrize("mode, args, run_args", [
    ("corrupt", ["--every", "100000"], ["--conns", "3"]),
    ("drop", ["--every", "100000"], ["--conns", "3", "--timeout", "0.5"]),
    ("reorder", ["--every", "50000", "--size", "1024"], ["--conns", "2", "--depth", "2"]),
], ids=["corrupt", "drop", "reorder"])
def test_both_engines_classify_the_same_failures(tmp_path, fault_server, mode, args, run_args):
    """The faults fall on fixed bytes of each connection's stream, so both engines must report the same kinds
    for the same messages at the same offsets."""
    seen = {}
    for engine in ("python", "native"):
        s = fault_server(mode, *args)
        out, doc = loadgen(tmp_path, "--port", str(s.port), *run_args, *QUICK, "--quiet", engine=engine)
        r = doc["result"]
        assert out.returncode != 0 and r["integrity_failures"] > 0, (engine, r)
        assert doc["config"]["engine"] == engine
        # the first failure of each connection, and the kinds seen (counts depend on how far each run got)
        first = {}
        for line in r["integrity_samples"]:
            conn, detail = line.split(": ", 1)
            first.setdefault(conn, detail)
        seen[engine] = (set(r["integrity"]), first)
        s.stop()
    assert seen["python"] == seen["native"], seen


@needs_native
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_native_worker_runs_on_one_thread(tmp_path, loop):
    """A second thread in the worker process makes every system call of the engine dearer (the kernel's fdget
    takes an atomic reference, glibc's wrappers toggle cancellation): the worker must not start one, whatever
    loop --loop names (uvloop's sock_connect alone starts libuv's thread pool)."""
    out, doc = loadgen(tmp_path, "--server", DEFAULT_MODEL, "--conns", "4", "--workers", "2", "--loop", loop,
                       *QUICK, "--quiet", engine="native")
    assert out.returncode == 0, out.stderr
    assert doc["result"]["engine"]["worker_threads"] == 1, doc["result"]["engine"]


# -- bytes in memory: a socketpair peer that splits, corrupts and repeats -----------------------------

SIZE = 64
DEPTH = 2


def _engine(peer_fd: int, size: int = SIZE, depth: int = DEPTH, interval: int = 0):
    from loadgen.engine import _native

    return _native.Engine([peer_fd], [7], size, depth, shared_ring(size, 0), interval, [0], -1)


def _drive(eng, peer, reply, seconds=1.0):
    """Run the engine for a bounded time while a thread plays the server: it reads what the engine sends and
    writes back ``reply(bytes_read)`` (any bytes, split any way). Returns what the server read."""
    got = bytearray()
    stop = threading.Event()

    def recording(data):
        got.extend(data)
        return reply(bytes(data))

    t = threading.Thread(target=peer_loop, args=(peer, recording, stop), daemon=True)
    t.start()
    now = time.perf_counter_ns()
    eng.start(now, now, now + int(seconds * 1e9))
    deadline = now + int(seconds * 1e9)
    while eng.run(deadline) == 3:  # sample arrays full: take them and go on
        eng.take()
    eng.stop_sending()
    eng.run(time.perf_counter_ns() + 10**9)  # the drain: bounded
    stop.set()
    t.join(5)
    assert not t.is_alive()
    return bytes(got)


def _pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    return a, b


@needs_native
@pytest.mark.parametrize("split", [1, 3, 15, 16, 17, 63, 64, 65, 127])
def test_echoes_split_at_any_byte_are_checked_and_counted(split):
    """Every echo is checked byte for byte whatever the read boundaries: the server answers in pieces of
    ``split`` bytes, across message and header boundaries."""
    a, b = _pair()
    with a, b:
        eng = _engine(a.fileno())

        def reply(data):
            return [data[i:i + split] for i in range(0, len(data), split)]

        sent = _drive(eng, b, reply, seconds=0.3)
        res = eng.result()
    assert res["integrity"] == {} and res["errors"] == {}, res
    assert len(sent) % SIZE == 0 and res["messages_total"] == len(sent) // SIZE > 0
    maker = MessageMaker(7, SIZE)
    assert sent[:2 * SIZE] == maker.message(0) + maker.message(1)  # the message format of the Python engine


@needs_native
@pytest.mark.parametrize("size", [1, 5, 16, 64, 4096])
def test_a_flipped_byte_anywhere_is_corrupt_and_the_connection_goes_on(size):
    a, b = _pair()
    flipped = []
    with a, b:
        eng = _engine(a.fileno(), size=size, depth=1)
        seen = [0]

        off = min(5, size - 1)

        def reply(data):  # one byte flipped at offset `off` of messages 5, 15, 25, ...
            out = bytearray(data)
            for i in range(len(out)):
                pos = seen[0] + i
                if (pos // size) % 10 == 5 and pos % size == off:
                    out[i] ^= 0x40
                    flipped.append(pos)
            seen[0] += len(data)
            return [bytes(out)]

        _drive(eng, b, reply, seconds=0.3)
        res = eng.result()
    assert flipped, "the run never reached message 5"
    # a flipped byte can turn a tiny message into another ring entry ("sequence"); otherwise it is corrupt
    assert sum(res["integrity"].values()) == len(flipped), (res, flipped)
    if size >= 16:
        assert res["integrity"] == {"corrupt": len(flipped)}
        assert "first differing byte at offset 5" in res["integrity_samples"][0]


@needs_native
def test_a_repeated_message_is_a_sequence_failure_and_closes_the_connection():
    a, b = _pair()
    with a, b:
        eng = _engine(a.fileno(), depth=1)
        count = [0]

        def reply(data):
            count[0] += 1
            if count[0] == 3:  # the previous message again instead of this one
                return [MessageMaker(7, SIZE).message(1)]
            return [data]

        _drive(eng, b, reply, seconds=0.3)
        res = eng.result()
    assert res["integrity"] == {"sequence": 1}, res
    assert res["outcome"] == "every connection was closed after integrity failures"
    assert "message 2: sequence (first differing byte at offset 15)" in res["integrity_samples"][0]


@needs_native
def test_bytes_nobody_sent_are_unexpected():
    a, b = _pair()
    with a, b:
        eng = _engine(a.fileno(), depth=1)
        _drive(eng, b, lambda data: [data + b"!"], seconds=0.3)
        res = eng.result()
    assert res["integrity"] == {"unexpected": 1}, res


@needs_native
def test_a_closed_peer_is_an_eof_error():
    a, b = _pair()
    with a:
        eng = _engine(a.fileno(), depth=1)
        b.close()
        now = time.perf_counter_ns()
        eng.start(now, now, now + 10**9)
        assert eng.run(now + 5 * 10**9) == 1  # done, long before the deadline
        res = eng.result()
    assert res["errors"] in ({"eof": 1}, {"BrokenPipeError": 1}, {"errno:32": 1}, {"reset": 1}), res
    assert res["outcome"].startswith("connection 7 lost mid-run")


@needs_native
def test_bad_engine_arguments_are_refused():
    from loadgen.engine import _native

    a, b = _pair()
    with a, b:
        with pytest.raises(ValueError):
            _native.Engine([a.fileno()], [1], 0, 1, shared_ring(64, 0), 0, [0], -1)  # size 0
        with pytest.raises(ValueError):
            _native.Engine([a.fileno()], [1], 64, 1, shared_ring(64, 0)[:3], 0, [0], -1)  # not a power of two
        with pytest.raises(ValueError):
            _native.Engine([a.fileno()], [1], 64, 1, shared_ring(32, 0), 0, [0], -1)  # bodies of the wrong length
        with pytest.raises(ValueError):
            _native.Engine([a.fileno()], [1, 2], 64, 1, shared_ring(64, 0), 0, [0], -1)  # lengths differ
        eng = _native.Engine([a.fileno()], [1], 64, 1, shared_ring(64, 0), 0, [0], -1)
        with pytest.raises(RuntimeError):
            eng.run(0)  # before start()
        half = _native.Engine.__new__(_native.Engine)  # never initialised: every method refuses it
        for call in (lambda: half.start(0, 0, 1), lambda: half.run(0), half.take, half.stop_sending, half.interrupt,
                     half.result, lambda: half.give_up(0, True)):
            with pytest.raises(RuntimeError, match="not initialised"):
                call()
