"""One load-generator worker process: connects its share of the connections, runs the traffic, reports once a
second over its pipe and sends a final report. ``Worker`` is the Python engine (an event loop); ``worker_main``
picks the native engine (native.py) when the configuration asks for it."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
from array import array

from ..config import LoadConfig
from .datagram import UDP_COUNTS, UdpConn
from .stream import Closed1Conn, Conn
from .traffic import CONNECT_CONCURRENCY, INTEGRITY_SAMPLES, INTERRUPT_DRAIN_S, _now, drain_seconds, new_loop, tick_times


class Worker:
    """Runs in its own process; talks to the parent over ``pipe``."""

    def __init__(self, cfg: LoadConfig, index: int, conn_ids: list[int], pipe) -> None:
        self.cfg = cfg
        self.index = index
        self.conn_ids = conn_ids
        self.pipe = pipe
        self.loop = self.new_loop()
        self.conns: list[Conn] = []
        self.sending = False
        self.open_loop = cfg.rate is not None
        self.lat = array("q")
        self.unc = array("q") if self.open_loop else None
        self.lag = array("q")
        self.lat_append = self.lat.append
        self.unc_append = self.unc.append if self.unc is not None else None
        self.lag_append = self.lag.append
        self.errors: dict[str, int] = {}
        self.integrity: dict[str, int] = {}
        self.integrity_samples: list[str] = []
        self.connect_ns: list[int] = []
        self.done = None  # asyncio.Future set when the run is over
        self.outcome = "complete"
        self.live = 0
        self.udp = cfg.transport == "udp"
        self.sweeper = None

    # -- bookkeeping called by Conn ----------------------------------------------------
    def integrity_failure(self, kind: str, detail: str) -> None:
        self.integrity[kind] = self.integrity.get(kind, 0) + 1
        if len(self.integrity_samples) < INTEGRITY_SAMPLES:
            self.integrity_samples.append(detail)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def new_loop(self) -> asyncio.AbstractEventLoop:
        return new_loop(self.cfg.loop)

    def connection_lost(self, conn: Conn, kind: str, detail: str) -> None:
        """The server reset or closed a connection: the run cannot go on honestly."""
        self.error(kind)
        self.live -= 1
        if self.sending or conn.in_flight():
            self._finish(f"connection {conn.conn_id} lost mid-run: {detail}")

    def conn_closed(self, conn: Conn) -> None:
        self.live -= 1
        if self.live <= 0:
            self._finish("every connection was closed after integrity failures")
        elif not self.sending:
            self.conn_drained()

    def conn_drained(self) -> None:
        if not self.sending and all(c.dead or (not c.in_flight() and not c.buf) for c in self.conns):
            self._finish(None)

    def _finish(self, reason: str | None) -> None:
        if reason is not None and self.outcome == "complete":
            self.outcome = reason
        self.sending = False
        for c in self.conns:
            c.go = False
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    # -- the run ---------------------------------------------------------------------
    async def connect_all(self) -> None:
        cfg = self.cfg
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
        loop = self.loop
        if cfg.transport == "udp":
            conn_class = UdpConn
        elif cfg.depth == 1 and cfg.rate is None:
            conn_class = Closed1Conn
        else:
            conn_class = Conn
        self.resolve()

        # build every connection object first: only the connect itself is timed
        protos = {cid: conn_class(self, cid) for cid in self.conn_ids}

        async def one_udp(cid: int) -> UdpConn:
            async with sem:
                t0 = _now()
                tr, proto = await loop.create_datagram_endpoint(lambda: protos[cid], remote_addr=self.addr, family=self.family)
                try:
                    await proto.connect(cfg.connect_timeout)
                except BaseException:
                    tr.abort()
                    raise
                self.connect_ns.append(_now() - t0)
                return proto

        tls = {}
        if cfg.tls:  # the handshake is not in the connect time (TCP's); a failed one fails the connection
            from servers.tls import client_context

            tls = {"ssl": client_context(cfg.tls_ca), "ssl_handshake_timeout": cfg.connect_timeout,
                   "server_hostname": cfg.host if cfg.transport != "unix" else "localhost"}

        async def one(cid: int) -> Conn:
            async with sem:
                sock = await self.open_stream()
                create = loop.create_unix_connection if self.family == socket.AF_UNIX else loop.create_connection
                try:
                    _tr, proto = await create(lambda: protos[cid], sock=sock, **tls)
                except BaseException:
                    sock.close()
                    raise
                return proto

        opener = one_udp if conn_class is UdpConn else one
        results = await asyncio.gather(*(opener(c) for c in self.conn_ids), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        self.conns = [r for r in results if isinstance(r, (Conn, UdpConn))]
        self.live = len(self.conns)
        if failures:
            for c in self.conns:
                c.dead = True
                c.transport.abort()
            raise ConnectError(failures, len(self.conn_ids))

    def resolve(self) -> None:
        """The server's address, resolved once: a name lookup per connection would be timed as connect time."""
        cfg = self.cfg
        if cfg.transport == "unix":
            self.family, self.addr = socket.AF_UNIX, cfg.path
        else:
            kind = socket.SOCK_DGRAM if cfg.transport == "udp" else socket.SOCK_STREAM
            info = socket.getaddrinfo(cfg.host, cfg.port, type=kind)[0]
            self.family, self.addr = info[0], info[4]

    async def open_stream(self) -> socket.socket:
        """One connected non-blocking stream socket; its connect time is recorded."""
        t0 = _now()
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.wait_for(self.loop.sock_connect(sock, self.addr), self.cfg.connect_timeout)
        except BaseException:
            sock.close()
            raise
        self.connect_ns.append(_now() - t0)
        return sock

    def _flush(self) -> dict:
        """This interval's samples, raw (int64 ns), for the report: the parent turns them into histograms
        (``Runner._on_report``), so that the worker's loop never stops to encode one (at 100 ms intervals the
        encoding, ~2 ms, put a stall into 2% of every run and so into its p99)."""
        rep = {}
        for name, arr in (("hist", self.lat), ("hist_unc", self.unc), ("lag", self.lag)):
            if arr is None:
                continue
            rep[name + "_raw"] = arr.tobytes()
            del arr[:]
        return rep

    def _check_timeouts(self, now: int) -> None:
        if self.udp:
            return  # the UDP sweep declares losses as they happen
        limit = int(self.cfg.timeout * 1e9)
        for c in self.conns:
            if not c.dead and c.in_flight() and now - c.oldest_sent_ns() > limit:
                self.error("timeout")
                c._integrity("lost", f"echo of message {c.seq - c.in_flight()} not complete after {self.cfg.timeout:g} s "
                                     f"({len(c.buf)} of {self.cfg.size} bytes back)")

    async def run(self, t0: int) -> None:
        cfg = self.cfg
        loop = self.loop
        self.done = loop.create_future()
        if self.open_loop and cfg.profile:  # the profile's schedule, from the start: no phase offset
            from ..profile import parse as parse_profile

            schedule = parse_profile(cfg.profile)
            for c in self.conns:
                c.interval_ns, c.phase_ns, c.schedule, c.sched_conns = 1, 0, schedule, cfg.conns
        elif self.open_loop:
            per_conn_rate = cfg.rate / cfg.conns
            interval = int(1e9 / per_conn_rate)
            for c in self.conns:
                c.interval_ns = interval
                c.phase_ns = interval * c.conn_id // cfg.conns
        warm_end = t0 + int(cfg.warmup * 1e9)
        end = warm_end + int(cfg.duration * 1e9)
        for c in self.conns:
            c.warm_ns, c.end_ns = warm_end, end
        self.sending = True
        for c in self.conns:
            c.start(t0)
        if self.udp:
            self._sweep()
        ticks = tick_times(warm_end, end, cfg.tick_s)
        for i, tick in enumerate(ticks):
            try:
                await asyncio.wait_for(asyncio.shield(self.done), max(0.0, (tick - _now()) / 1e9))
            except asyncio.TimeoutError:
                pass
            now = _now()
            msgs = sum(c.count for c in self.conns)
            if i == 0:  # nothing is recorded before warm_end: no samples to discard
                self.report("warm", {"t_ns": warm_end})
                last_msgs, last_t = 0, warm_end  # count only ever holds measured echoes
            else:
                bound = min(now, end)
                self.report("interval", {"i": i - 1, "t_ns": bound, "span_ns": bound - last_t, "msgs": msgs - last_msgs,
                                         "errors": sum(self.errors.values()),
                                         "integrity": sum(self.integrity.values()), **self._flush()})
                last_msgs, last_t = msgs, bound
            self._check_timeouts(now)
            if self.done.done():
                break
        measured_end = min(_now(), end)  # echoes after `end` are not counted, however late this tick ran
        # drain: stop sending, wait for every echo in flight (checked, not counted)
        counted = {c.conn_id: c.count for c in self.conns}
        self.sending = False
        for c in self.conns:
            c.go = False
        drain_deadline = _now() + int(drain_seconds(cfg) * 1e9)
        if not self.done.done():
            self.conn_drained()
        while not self.done.done() and _now() < drain_deadline:
            try:
                await asyncio.wait_for(asyncio.shield(self.done), 0.1)
            except asyncio.TimeoutError:
                pass
        if self.udp:
            if self.sweeper is not None:
                self.sweeper.cancel()
            now = _now()
            for c in self.conns:
                c.go = False
                c.expire(now, int(cfg.timeout * 1e9))  # past their deadline: lost
                c.give_up()  # cut short (interrupted, or the drain ended early): unresolved
        still = [c for c in self.conns if not c.dead and c.in_flight()]
        for c in still if self.outcome != "interrupted" else ():
            self.error("timeout")
            c._integrity("lost", f"{c.in_flight()} echo(es) still missing at the end of the drain")
        self._flush()
        per_conn = [counted[c.conn_id] for c in self.conns]
        self.final = {
            "measured_end_ns": measured_end,
            "per_conn": per_conn,
            "messages_total": sum(c.warm + c.count + c.drained for c in self.conns),
            "errors": self.errors,
            "integrity": self.integrity,
            "integrity_samples": self.integrity_samples,
            "outcome": self.outcome,
            "udp": {k: sum(getattr(c, k) for c in self.conns) for k in UDP_COUNTS} if self.udp else None,
        }
        for c in self.conns:
            c.dead = True
            if c.transport is not None:
                c.transport.abort()

    def _sweep(self) -> None:
        """UDP: declare lost what is older than --timeout, every tenth of it (10 ms to 100 ms)."""
        now = _now()
        limit = int(self.cfg.timeout * 1e9)
        for c in self.conns:
            if not c.dead and c.inflight:
                c.expire(now, limit)
        if not self.done.done():
            self.sweeper = self.loop.call_later(min(0.1, max(0.01, self.cfg.timeout / 10)), self._sweep)

    def report(self, kind: str, data: dict) -> None:
        """Send a report to the parent. The event loop watches this pipe for the parent's messages, which makes
        it non-blocking; a report larger than the pipe's free space (an interval's raw samples at a high rate)
        would then fail with EAGAIN halfway, so it is written blocking: the parent reads its pipes continuously."""
        fd = self.pipe.fileno()
        was = os.get_blocking(fd)
        if not was:
            os.set_blocking(fd, True)
        try:
            self.pipe.send((kind, self.index, data))
        finally:
            if not was:
                os.set_blocking(fd, False)

    def stop_requested(self) -> None:
        """Ctrl-C or SIGTERM: stop sending, give the echoes in flight a short drain, then end. What is still in
        flight then was cut short by the user, not lost by the server: it is not an integrity failure."""
        if self.outcome == "complete":
            self.outcome = "interrupted"
        self.sending = False
        for c in self.conns:
            c.go = False
        self.conn_drained()
        self.loop.call_later(INTERRUPT_DRAIN_S, self._finish, None)


class ConnectError(Exception):
    def __init__(self, failures: list[BaseException], wanted: int) -> None:
        first = failures[0]
        if isinstance(first, asyncio.TimeoutError):
            kind = str(first) or "connect timeout"
        elif isinstance(first, ConnectionRefusedError):
            kind = "connection refused"
        elif isinstance(first, FileNotFoundError):
            kind = "no such socket file"
        elif isinstance(first, OSError) and first.errno == errno.EMFILE:
            kind = "out of file descriptors"
        else:
            kind = str(first) or type(first).__name__
        super().__init__(f"{len(failures)} of {wanted} connections failed ({kind})")
        self.kind = kind
        self.failed = len(failures)


def worker_main(cfg: LoadConfig, index: int, conn_ids: list[int], pipe, cpu: int | None, inherited=()) -> None:
    """Entry point of a worker process. ``inherited``: the parent's ends of the workers' pipes, this one's and the
    ones forked before it, copied by the fork. They are closed first: a worker holding them would never see its
    own pipe's end-of-file if the parent died without a word (SIGKILL), and would wait on it forever."""
    for c in inherited:
        c.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it tells us to stop
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass
    if cfg.engine == "native":
        from .native import NativeWorker

        w = NativeWorker(cfg, index, conn_ids, pipe)
    else:
        w = Worker(cfg, index, conn_ids, pipe)
    loop = w.loop
    asyncio.set_event_loop(loop)
    try:
        try:
            loop.run_until_complete(w.connect_all())
        except ConnectError as exc:
            w.report("fatal", {"kind": exc.kind, "message": str(exc), "connect_ns": w.connect_ns})
            return
        w.report("ready", {"connect_ns": w.connect_ns, "conns": len(w.conns)})
        msg = pipe.recv()
        if msg[0] != "start":
            return
        t0 = msg[1]
        if cfg.engine == "native":  # no event loop while it runs: it watches the pipe itself
            # Close the loop that connected the sockets first: libuv removes a stopped watcher's fd from its
            # epoll set only on its next poll, so the sockets would stay registered there and every packet would
            # also wake an epoll nobody waits on (kernel work per message, charged to the client).
            loop.close()
            w.run_native(t0)
            w.report("final", w.final)
            return

        def on_parent() -> None:
            try:
                m = pipe.recv()
            except EOFError:
                m = ("stop",)
            if m[0] == "stop":
                w.stop_requested()

        loop.add_reader(pipe.fileno(), on_parent)
        loop.run_until_complete(w.run(t0))
        loop.remove_reader(pipe.fileno())
        w.report("final", w.final)
    except (BrokenPipeError, EOFError):
        pass  # the parent is gone: nobody to report to
    finally:
        try:
            loop.close()
        except Exception:
            pass
        pipe.close()
