"""What every kind of connection shares: the clock, the open-loop schedule (``_pump``, the coordinated-omission
rule), the measured window, and the worker-level constants. Imported by stream.py and datagram.py; imports neither.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ..config import LoadConfig
from ..payload import MessageMaker

if TYPE_CHECKING:
    from .worker import Worker

_now = time.perf_counter_ns  # CLOCK_MONOTONIC on Linux: comparable across processes
CONNECT_CONCURRENCY = 256  # connects in flight per worker: more only overflows the server's backlog
INTEGRITY_SAMPLES = 5  # descriptions of the first few integrity failures kept per worker
INTERRUPT_DRAIN_S = 1.0  # after Ctrl-C, echoes in flight get this long (the parent waits 3 s for final reports)


def drain_seconds(cfg: LoadConfig) -> float:
    """How long a worker waits, after the end, for echoes still in flight. UDP: every datagram gets its full
    deadline (plus one sweep) to come back or be declared lost; streams: at most 5 s."""
    return cfg.timeout + 0.2 if cfg.transport == "udp" else min(cfg.timeout, 5.0)


def tick_times(warm_end: int, end: int, tick_s: float) -> list[int]:
    """When a worker reports an interval (ns): the end of the warm-up, then every ``tick_s`` seconds, and the
    run's end (the last interval may be shorter)."""
    step = max(1, int(tick_s * 1e9))
    ticks = [warm_end]
    while ticks[-1] + step < end:
        ticks.append(ticks[-1] + step)
    ticks.append(end)
    return ticks


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            return asyncio.SelectorEventLoop()
        return uvloop.new_event_loop()
    return asyncio.SelectorEventLoop()


class _Traffic:
    """What every kind of connection keeps: identity, messages, the measured window, open-loop timing."""

    def __init__(self, w: "Worker", conn_id: int) -> None:
        self.w = w
        self.conn_id = conn_id
        self.maker = MessageMaker(conn_id, w.cfg.size, w.cfg.seed)
        self.make = self.maker.message
        self.size = w.cfg.size
        self.depth = w.cfg.depth
        self.buf = b""  # a partial echo (streams only)
        # Each echo is classified by its own completion time, so the measured window is
        # exactly [warm_ns, end_ns) even when the loop's 1 s ticks fire late (10,000 busy
        # connections can delay a timer by over a second).
        self.count = 0  # echoes completed in the measured window
        self.warm = 0  # echoes completed during the warm-up: checked, not counted
        self.drained = 0  # echoes completed after the end: checked, not counted
        self.warm_ns = 0  # set by Worker.run
        self.end_ns = 1 << 62  # set by Worker.run: no message is counted or sent at or after it
        self.transport = None
        self.lat = w.lat_append
        self.unc = w.unc_append
        self.dead = False  # closed by us (integrity failure) or lost
        self.go = False  # mirrors Worker.sending, without an attribute hop per message
        # open loop
        self.interval_ns = 0  # open loop when non-zero (1 with a profile, whose schedule then decides)
        self.phase_ns = 0
        self.schedule = None  # a --profile's Profile (loadgen/profile.py): message n of all is due at T(n)
        self.sched_conns = 1  # connections in the whole run: this one sends messages conn_id, conn_id + conns, ...
        self.first_due = 0
        self.busy_since = 0
        self.timer = None
        self.first_seq = 0  # the sequence number of the first scheduled message

    def _pump(self, now: int, from_timer: bool) -> None:
        """Open loop: send every message that is due, up to ``depth`` in flight; arm a timer for the next.

        Message k is due at ``first_due + k * interval`` (with a profile: at ``T(conn_id + k * conns)`` from the
        start, :meth:`_due`). One sent late because the window was full (the server
        was behind) is timed from when it was due: coordinated omission corrected. One sent late because the
        client's timer fired late is timed from ``busy_since``, the moment the client got round to it.
        """
        if from_timer:
            self.timer = None
            # Only a connection with room in its window was idle, waiting on the client's timer: lateness until
            # now is the client's (timed from now, and reported as lag). A full window means the server is behind.
            # A timer that fired before the message was due (the loop's timers round to milliseconds) is no
            # lateness at all: it records nothing (it used to record a 0 at every early wake-up, tens of
            # thousands a second, which swamped the lag's percentiles and the worker's reports).
            due = self._due()
            if self.in_flight() < self.depth and due <= now:
                self.busy_since = now
                self.w.lag_append(now - due)
        while self.in_flight() < self.depth and self.w.sending:
            due = self._due()
            if due >= self.end_ns:
                return
            if due > now:
                if self.timer is None:
                    self.timer = self.w.loop.call_later((due - now) / 1e9, self._on_timer)
                return
            self._emit(due if due > self.busy_since else self.busy_since, now)

    def _due(self) -> int:
        """When this connection's next message is due (ns; ``end_ns`` once a profile has no more for it)."""
        k = self.seq - self.first_seq
        if self.schedule is None:
            return self.first_due + k * self.interval_ns
        t = self.schedule.time_of(self.conn_id + k * self.sched_conns)
        return self.end_ns if t is None else self.first_due + int(t * 1e9)

    def _on_timer(self) -> None:
        if not self.dead:
            self._pump(_now(), True)
