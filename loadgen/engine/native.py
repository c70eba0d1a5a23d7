"""The native engine's Python face: a worker whose per-message loop runs in C (``_native.c``).

Python keeps the policy: it connects the sockets (connect times measured as in the Python engine), tells the
C engine when the run starts, the warm-up ends and the measured window closes, wakes once a second to batch
the latencies into histograms and report, and builds the final report. C runs the epoll loop between those
instants with the GIL released: send, check every echoed byte, record latencies, keep the open-loop
schedule. Semantics are the Python engine's (stream.py), so the two engines' results compare directly.

Stream transports only (TCP and Unix sockets); UDP runs on the Python engine.
"""

from __future__ import annotations

import asyncio
import os
import socket

from ..payload import shared_ring
from .traffic import CONNECT_CONCURRENCY, INTERRUPT_DRAIN_S, _now, drain_seconds, tick_times
from .worker import ConnectError, Worker

try:
    from . import _native
except ImportError as exc:  # not built: no compiler at install time, or a source tree never installed
    import importlib.util

    _native = None
    if importlib.util.find_spec(f"{__package__}._native") is None:
        _why = "not built (no compiled loadgen/engine/_native extension)"
    else:  # built, but it would not load (another Python, a missing symbol)
        _why = f"built but not loadable ({exc})"
    UNAVAILABLE: str | None = f"the native engine is {_why}; `make venv` (or `pip install -e .` with a C compiler) builds it"
else:
    UNAVAILABLE = None

ST_DEADLINE, ST_DONE, ST_WAKE, ST_FULL = 0, 1, 2, 3
MAX_DEPTH = 1 << 20


def resolve(requested: str, transport: str, depth: int, tls: bool = False) -> tuple[str, str | None]:
    """(engine, note): which engine a run gets, and why not the one asked for (``None`` when it got it).

    ``auto`` is native wherever it was built, for stream transports; ``native`` asked for where it cannot run
    raises ValueError (an explicit request is not silently downgraded)."""
    why_not = None
    if transport == "udp":
        why_not = "the native engine drives stream transports (TCP, Unix sockets) only; UDP runs on the Python engine"
    elif tls:
        why_not = "the native engine does not speak TLS; --tls runs on the Python engine (its ssl module: OpenSSL)"
    elif UNAVAILABLE is not None:
        why_not = UNAVAILABLE
    elif depth > MAX_DEPTH:
        why_not = f"the native engine keeps at most {MAX_DEPTH} messages in flight per connection"
    if requested == "python":
        return "python", None
    if why_not is None:
        return "native", None
    if requested == "native":
        raise ValueError(why_not)
    return "python", why_not


def _error_kind(kind: str) -> str:
    """The C engine names an unexpected socket error ``errno:N``; the Python engine names it after the exception."""
    if kind.startswith("errno:"):
        return type(OSError(int(kind[6:]), "")).__name__
    return kind


def _thread_count() -> int | None:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


class NativeWorker(Worker):
    """A worker process whose traffic runs in the C engine. Same reports, same final report, as ``Worker``."""

    def __init__(self, cfg, index, conn_ids, pipe) -> None:
        super().__init__(cfg, index, conn_ids, pipe)
        self.socks: list[socket.socket] = []
        self.engine = None
        self.pending: list[tuple[bytes, bytes | None, bytes]] = []  # samples taken early (full arrays)
        self.finished = False
        self.threads: int | None = None
        self.interrupt_at: int | None = None  # when the drain after Ctrl-C ends

    def new_loop(self) -> asyncio.AbstractEventLoop:
        """asyncio's selector loop only connects the sockets here, whatever --loop says: it starts no thread. uvloop's
        sock_connect starts libuv's thread pool, and a process with a second thread pays on every system call of
        the engine (an atomic file reference in the kernel's fdget/fput, glibc's cancellation bookkeeping)."""
        return asyncio.SelectorEventLoop()

    async def connect_all(self) -> None:
        cfg = self.cfg
        self.resolve()
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(cid: int) -> socket.socket:
            async with sem:
                sock = await self.open_stream()
                if self.family != socket.AF_UNIX:  # as asyncio and uvloop do for their TCP transports
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock

        results = await asyncio.gather(*(one(c) for c in self.conn_ids), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        self.socks = [r for r in results if isinstance(r, socket.socket)]
        if failures:
            self.close()
            raise ConnectError(failures, len(self.conn_ids))
        self.conns = self.socks  # what worker_main counts
        interval = 0
        phases = [0] * len(self.conn_ids)
        profile = {}
        if cfg.profile:  # the schedule's numbers from loadgen/profile.py, so both engines use the same ones
            from ..profile import parse as parse_profile

            prof = parse_profile(cfg.profile)
            interval = 1  # open loop; the profile decides when
            profile = {"profile": [(p.start_s, p.duration_s, p.rate_from, p.rate_to, cum)
                                   for p, cum in zip(prof.phases, prof.cumulative)],
                       "profile_total": prof.total, "sched_conns": cfg.conns}
        elif cfg.rate is not None:
            interval = int(1e9 / (cfg.rate / cfg.conns))
            phases = [interval * cid // cfg.conns for cid in self.conn_ids]
        self.engine = _native.Engine([s.fileno() for s in self.socks], self.conn_ids, cfg.size, cfg.depth,
                                     shared_ring(cfg.size, cfg.seed), interval, phases, self.pipe.fileno(), **profile)

    # -- the run ---------------------------------------------------------------------
    def _on_parent(self) -> None:
        try:
            m = self.pipe.recv()
        except EOFError:  # the parent is gone: nobody to report to; stop watching the pipe (always readable now)
            self.engine.unwatch_wake()
            m = ("stop",)
        if m[0] == "stop" and self.interrupt_at is None:  # stop sending; echoes in flight get a short drain
            self.engine.interrupt()
            self.interrupt_at = _now() + int(INTERRUPT_DRAIN_S * 1e9)

    def _run_until(self, deadline: int) -> None:
        """Let the C loop run until ``deadline`` or the end of the run (the parent's messages handled on the way)."""
        while not self.finished:
            if self.interrupt_at is not None and _now() >= self.interrupt_at:
                self.engine.finish(None)  # the interrupt's drain is over
            status = self.engine.run(deadline if self.interrupt_at is None else min(deadline, self.interrupt_at))
            if status == ST_WAKE:
                self._on_parent()
            elif status == ST_FULL:
                self.pending.append(self.engine.take())
            elif status == ST_DONE:
                self.finished = True
            elif self.interrupt_at is None or _now() >= deadline:
                return

    def _flush(self) -> dict:
        """This interval's samples, raw: the same report as the Python engine's."""
        chunks = self.pending + [self.engine.take()]
        self.pending = []
        rep = {}
        for name, k in (("hist", 0), ("hist_unc", 1), ("lag", 2)):
            if k == 1 and self.cfg.rate is None:
                continue
            rep[name + "_raw"] = b"".join(c[k] for c in chunks if c[k])  # the parent encodes (worker.py _flush)
        return rep

    def run_native(self, t0: int) -> None:
        cfg = self.cfg
        eng = self.engine
        warm_end = t0 + int(cfg.warmup * 1e9)
        end = warm_end + int(cfg.duration * 1e9)
        limit = int(cfg.timeout * 1e9)
        self.threads = _thread_count()  # 1 unless something started a thread: a cost on every system call
        eng.start(t0, warm_end, end)
        ticks = tick_times(warm_end, end, cfg.tick_s)
        last_msgs, last_t = 0, warm_end
        for i, tick in enumerate(ticks):
            self._run_until(tick)
            now = _now()
            if i == 0:  # nothing is recorded before warm_end
                self.report("warm", {"t_ns": warm_end})
            else:
                msgs = eng.measured()
                res = eng.result()
                bound = min(now, end)
                self.report("interval", {"i": i - 1, "t_ns": bound, "span_ns": bound - last_t, "msgs": msgs - last_msgs,
                                         "errors": sum(res["errors"].values()), "integrity": sum(res["integrity"].values()),
                                         **self._flush()})
                last_msgs, last_t = msgs, bound
            eng.check_timeouts(now, limit, cfg.timeout)
            if self.finished:
                break
        measured_end = min(_now(), end)  # echoes after `end` are not counted, however late this tick ran
        eng.stop_sending()  # the drain: every echo in flight is waited for (checked, not counted)
        self._run_until(_now() + int(drain_seconds(cfg) * 1e9))
        eng.give_up(measured_end, self.interrupt_at is None)
        self._flush()
        res = eng.result()
        self.final = {
            "measured_end_ns": measured_end,
            "per_conn": res["per_conn"],
            "messages_total": res["messages_total"],
            "errors": {_error_kind(k): v for k, v in res["errors"].items()},
            "integrity": res["integrity"],
            "integrity_samples": res["integrity_samples"],
            "outcome": res["outcome"] or "complete",
            "udp": None,
            # how the echoes arrived: ready connections per epoll wake-up (whole run, warm-up and drain included)
            "epoll": {"waits": res["epoll_waits"], "events": res["epoll_events"]},
            "threads": self.threads,
        }
        self.close()

    def close(self) -> None:
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        self.socks = []
