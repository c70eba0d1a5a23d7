"""make bench's paired rounds (loadgen/suite/rounds.py) and the report's answer (loadgen/suite/answer.py) against
real processes.

The cell runner is tested against real servers, one of which is killed mid-cell; the user/kernel split against a
real process's CPU clock. The planner, the interval maths and the tiers are pure functions, tested with
hand-computed values in unit/test_rounds.py. Nothing here asserts a time or a rate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from loadgen.config import LoadConfig
from loadgen.runner import plan_cpus
from loadgen.suite import answer
from loadgen.suite import rounds as rd
from loadgen.suite.paired import process_cpu_ns, process_user_kernel_s
from servers import registry

BURN = r"""
import os, sys, time
def burn(seconds, kernel):
    t = time.process_time() + seconds
    with open("/dev/zero", "rb", buffering=0) as f:
        while time.process_time() < t:
            if kernel:
                f.read(1 << 20)  # the kernel clears a MiB: system time
            else:
                sum(range(20000))  # user time
burn(0.3, False)
burn(0.3, True)
print("done", flush=True)
sys.stdin.read()
"""


def test_user_plus_kernel_is_the_process_clock_within_its_ticks():
    p = subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "done"  # blocks until the child has burnt its CPU and sleeps
        user, kernel = process_user_kernel_s(p.pid)
        total = process_cpu_ns(p.pid) / 1e9
        tick = 1 / os.sysconf("SC_CLK_TCK")
        assert abs(user + kernel - total) <= 2 * tick  # each of utime and stime is truncated to a tick
        assert user >= 0.1 and kernel >= 0.1  # the split sees both phases (0.3 s of each, sampled by ticks)
    finally:
        p.stdin.close()
        p.wait(10)


def test_a_server_that_dies_mid_cell_stops_its_rounds_and_the_others_go_on():
    from loadgen.target import ManagedServer

    models = [m for m in ("selectors", "asyncio-protocol") if registry.get(m).unavailable_reason() is None]
    client, server = plan_cpus(LoadConfig(server="x"))
    started = []

    def start(m):
        s = ManagedServer(m, "127.0.0.1", None, server)
        started.append(s)
        return s

    pool = rd.ServerPool(start, models, 2, lambda msg: None)
    victim = models[0]
    try:
        assert pool.ensure() == {}
        cfg = rd.slice_config(LoadConfig(quiet=True, cpus=client, server_cpus=server, engine="python"), "tcp", 2, 256,
                              1, 0.1, 0.05)

        def on_slice(m, r):  # after round 2's slice of the victim, kill both its servers
            if m == victim and r == 1:
                for i in range(2):
                    os.kill(pool.get(victim, i).pid, signal.SIGKILL)
                    pool.get(victim, i).proc.wait(10)

        runs, idle, _wall = rd.measure_cell(cfg, models, pool, 6, {m: False for m in models}, on_slice=on_slice)
        assert [s is not None for s in runs[victim].slices] == [True, True, False, False, False, False]
        assert "died in round 3" in runs[victim].stopped
        other = models[1]
        assert all(s is not None for s in runs[other].slices) and runs[other].stopped is None
        cells = rd.summarise(runs, other, 2, "tcp", 2, 256)
        by = {c["model"]: c for c in cells}
        assert by[victim]["status"] == "partial" and by[other]["status"] == "ok"
        assert by[victim]["trials_ok"] == 2 and by[victim]["rounds"] == 6
        assert idle.as_dict()["cpu_fraction"] is not None
        # the report says so
        suite = {"paired": {"instances": 2, "rounds": 6, "slice_s": 0.1, "slice_warmup_s": 0.05, "reference": other},
                 "cells": cells}
        stopped = [n for n in answer.notes(suite, None, cells) if n.startswith("**Stopped**")]
        assert len(stopped) == 1 and f"`{victim}`" in stopped[0] and "2 of 6 rounds ran" in stopped[0]
        # the next cell starts the dead servers again, and says so
        notes = pool.ensure()
        assert set(notes) == {victim} and "restarted" in notes[victim]
        assert all(pool.get(m, i).alive() for m in models for i in range(2))
    finally:
        pool.stop()
        for s in started:
            s.stop()
    assert all(not s.alive() for s in started)


def test_idle_servers_cost_nothing_while_another_is_measured():
    """Every Python model waits in its event loop (or blocked in accept/recv) between slices: while one model is
    measured, the others' CPU clocks do not move beyond a few scheduler wake-ups."""
    from loadgen.target import ManagedServer

    models = [m for m in ("asyncio-protocol", "selectors", "threads") if registry.get(m).unavailable_reason() is None]
    client, server = plan_cpus(LoadConfig(server="x"))
    pool = rd.ServerPool(lambda m: ManagedServer(m, "127.0.0.1", None, server), models, 1, lambda msg: None)
    try:
        pool.ensure()
        cfg = rd.slice_config(LoadConfig(quiet=True, cpus=client, server_cpus=server, engine="python"), "tcp", 2, 256,
                              1, 0.1, 0.05)
        runs, idle, _wall = rd.measure_cell(cfg, models, pool, 3, {m: False for m in models})
        d = idle.as_dict()
        assert all(s is not None for r in runs.values() for s in r.slices)
        # CPU-clock nanoseconds, not a timing: an idle server's clock stands still; 1% of a CPU allows for a stray
        # wake-up (a signal, the garbage collector) and is far below the ~100% of the server under load
        assert d["cpu_fraction"] < 0.01 and d["worst_cpu_fraction"] < 0.01
    finally:
        pool.stop()
