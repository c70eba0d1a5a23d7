"""One load-generator worker: an event loop driving its share of the connections.

Closed loop (no ``--rate``): each connection keeps ``depth`` messages in
flight and sends the next one the moment an echo is complete; latency is
send to full echo.

Open loop (``--rate``): message k of a connection is *intended* at
``start + phase + k * interval``. At most ``depth`` messages are in flight;
a message that could not be sent on time because the connection was still
waiting for the server is timed from its intended time (coordinated
omission corrected, as wrk2 does); the uncorrected figure (from the actual
send) is recorded beside it. A send that is late only because the client's
timer fired late is timed from the actual send: the server did not cause it.

Hot path: ``data_received`` compares the echo with the bytes sent (one
memcmp), appends one int to an array, builds and writes the next message.
Histogram work happens once a second, in a batch.

Transports: TCP and Unix stream sockets share ``Conn``; over UDP a
"connection" is one connected datagram socket (``UdpConn``) whose datagrams
carry connection and sequence. UDP promises nothing, so loss, duplication
and reordering are counted separately, and a datagram not echoed within
``--timeout`` is declared lost (never waited for forever).
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import struct
import time
from array import array
from collections import deque

import numpy as np

from . import stats
from .config import LoadConfig
from .payload import HEADER, MAGIC, MessageMaker

_now = time.perf_counter_ns  # CLOCK_MONOTONIC on Linux: comparable across processes
CONNECT_CONCURRENCY = 256  # connects in flight per worker: more only overflows the server's backlog
INTEGRITY_SAMPLES = 5  # descriptions of the first few integrity failures kept per worker
UDP_PROBE_EVERY_S = 0.1  # a UDP "connect" resends its probe datagram this often until one comes back
UDP_STATE_RING = 1024  # per connection: the fate of the last 1,024 datagrams, to tell "late" from "duplicated"
_DELIVERED, _LOST = 1, 2
UDP_COUNTS = ("sent", "delivered", "lost", "lost_in_window", "duplicated", "reordered", "late", "too_old", "unresolved")


def drain_seconds(cfg: LoadConfig) -> float:
    """How long a worker waits, after the end, for echoes still in flight. UDP: every datagram gets its full
    deadline (plus one sweep) to come back or be declared lost; streams: at most 5 s."""
    return cfg.timeout + 0.2 if cfg.transport == "udp" else min(cfg.timeout, 5.0)


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
        self.interval_ns = 0
        self.phase_ns = 0
        self.first_due = 0
        self.busy_since = 0
        self.timer = None
        self.first_seq = 0  # the sequence number of the first scheduled message

    def _pump(self, now: int, from_timer: bool) -> None:
        """Open loop: send every message that is due, up to ``depth`` in flight; arm a timer for the next.

        Message k is due at ``first_due + k * interval``. One sent late because the window was full (the server
        was behind) is timed from when it was due: coordinated omission corrected. One sent late because the
        client's timer fired late is timed from ``busy_since``, the moment the client got round to it.
        """
        if from_timer:
            self.timer = None
            # Only a connection with room in its window was idle, waiting on the client's timer: lateness until
            # now is the client's (timed from now, and reported as lag). A full window means the server is behind.
            if self.in_flight() < self.depth:
                self.busy_since = now
                self.w.lag_append(max(0, now - (self.first_due + (self.seq - self.first_seq) * self.interval_ns)))
        while self.in_flight() < self.depth and self.w.sending:
            due = self.first_due + (self.seq - self.first_seq) * self.interval_ns
            if due >= self.end_ns:
                return
            if due > now:
                if self.timer is None:
                    self.timer = self.w.loop.call_later((due - now) / 1e9, self._on_timer)
                return
            self._emit(due if due > self.busy_since else self.busy_since, now)

    def _on_timer(self) -> None:
        if not self.dead:
            self._pump(_now(), True)


class Conn(_Traffic, asyncio.Protocol):
    """One stream connection's (TCP or Unix socket) traffic and checks."""

    def __init__(self, w: "Worker", conn_id: int) -> None:
        super().__init__(w, conn_id)
        self.out: deque = deque()  # (message, start_ns, sent_ns) in flight, oldest first
        self.seq = 0  # next sequence number to send
        self.write = None

    # -- asyncio callbacks --------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.write = transport.write

    def data_received(self, data: bytes) -> None:
        now = _now()
        if self.buf:
            data = self.buf + data
            self.buf = b""
        size = self.size
        out = self.out
        n = len(data)
        pos = 0
        lat = self.lat
        unc = self.unc
        while n - pos >= size:
            if not out:
                self._integrity("unexpected", f"{n - pos} bytes arrived that were never sent (duplicated?)")
                return
            msg, start, sent = out.popleft()
            got = data if n == size else data[pos:pos + size]
            if got != msg:
                self._mismatch(got, msg)
                if self.dead:
                    return
            pos += size
            if self.warm_ns <= now < self.end_ns:
                lat(now - start)
                if unc is not None:
                    unc(now - sent)
                self.count += 1
            elif now >= self.end_ns:
                self.drained += 1
            else:
                self.warm += 1
        if pos < n:
            if not out:
                self._integrity("unexpected", f"{n - pos} bytes arrived that were never sent (duplicated?)")
                return
            self.buf = data[pos:]
        w = self.w
        if w.sending and now < self.end_ns:
            if self.interval_ns:
                self._pump(now, False)
            else:
                make, write = self.make, self.write
                while len(out) < self.depth:
                    msg = make(self.seq)
                    self.seq += 1
                    out.append((msg, now, now))
                    write(msg)
        elif not out and not self.buf:
            w.conn_drained()

    def eof_received(self):
        self._lost("eof", "the server closed the connection")
        return False

    def connection_lost(self, exc) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.dead:
            if exc is None:
                self._lost("eof", "the server closed the connection")
            else:
                kind = "reset" if isinstance(exc, ConnectionResetError) else type(exc).__name__
                self._lost(kind, str(exc) or kind)

    # -- sending ------------------------------------------------------------------
    def start(self, t0: int) -> None:
        if self.interval_ns:
            self.first_due = t0 + self.phase_ns
            self.busy_since = 0
            self._pump(_now(), True)
        else:
            now = _now()
            for _ in range(self.depth):
                msg = self.make(self.seq)
                self.seq += 1
                self.out.append((msg, now, now))
                self.write(msg)

    def _emit(self, start: int, now: int) -> None:
        """Open loop: send the next message, timed from ``start``."""
        msg = self.make(self.seq)
        self.seq += 1
        self.out.append((msg, start, now))
        self.write(msg)

    # -- failures -----------------------------------------------------------------
    def in_flight(self) -> int:
        return len(self.out)

    def oldest_sent_ns(self) -> int:
        return self.out[0][2]

    def _mismatch(self, got: bytes, msg: bytes, expected_seq: int | None = None) -> None:
        if expected_seq is None:
            expected_seq = self.seq - len(self.out) - 1
        kind = self.maker.classify(bytes(got), expected_seq)
        diff = next((i for i in range(min(len(got), len(msg))) if got[i] != msg[i]), None)
        self._integrity(kind, f"message {expected_seq}: {kind} (first differing byte at offset {diff})",
                        fatal=(kind != "corrupt"))

    def _integrity(self, kind: str, detail: str, fatal: bool = True) -> None:
        self.w.integrity_failure(kind, f"connection {self.conn_id}: {detail}")
        if fatal:  # the stream is out of step: nothing after this can be checked
            self.close()

    def _lost(self, kind: str, detail: str) -> None:
        if self.dead:
            return
        self.dead = True
        self.w.connection_lost(self, kind, detail)

    def close(self) -> None:
        if not self.dead:
            self.dead = True
            if self.timer is not None:
                self.timer.cancel()
            if self.transport is not None:
                self.transport.abort()
            self.w.conn_closed(self)


class Closed1Conn(Conn):
    """Closed loop at depth 1, the common case: one message in flight, kept in ``expect``.

    Same checks as ``Conn`` with less Python per message (no deque, no tuples):
    the echo is compared with the one message sent, the latency recorded, and
    the next message built with one pack and one concatenation. (Writing with
    os.write directly instead of transport.write was measured slower: uvloop
    queues small writes to the end of the loop iteration, which batches
    better on both sides.)
    """

    def __init__(self, w: "Worker", conn_id: int) -> None:
        super().__init__(w, conn_id)
        self.expect = None  # the message in flight, or None
        self.sent = 0
        self.ring = self.maker.ring
        self.mask = self.maker.mask
        self.tiny = self.maker.tiny
        self.pack = HEADER.pack
        self.magic = MAGIC

    def in_flight(self) -> int:
        return 0 if self.expect is None else 1

    def oldest_sent_ns(self) -> int:
        return self.sent

    def start(self, t0: int) -> None:
        self.go = True
        self._send(_now())

    def _send(self, now: int) -> None:
        seq = self.seq
        self.seq = seq + 1
        msg = self.make(seq) if self.tiny else self.pack(self.conn_id, self.magic, seq) + self.ring[seq & self.mask]
        self.expect = msg
        self.sent = now
        self.write(msg)

    def data_received(self, data: bytes) -> None:
        now = _now()
        if not self.buf and data == self.expect and self.warm_ns <= now < self.end_ns:  # hot: one whole, correct, measured echo
            self.lat(now - self.sent)
            self.count += 1
            if self.go:  # _send, inlined
                seq = self.seq
                self.seq = seq + 1
                msg = self.make(seq) if self.tiny else self.pack(self.conn_id, self.magic, seq) + self.ring[seq & self.mask]
                self.expect = msg
                self.sent = now
                self.write(msg)
            else:
                self.expect = None
                self.w.conn_drained()
            return
        self._data_slow(data, now)

    def _data_slow(self, data: bytes, now: int) -> None:
        """Partial echoes, extra bytes and mismatches."""
        if self.buf:
            data = self.buf + data
            self.buf = b""
        size = self.size
        n = len(data)
        expect = self.expect
        if expect is None:
            self._integrity("unexpected", f"{n} bytes arrived that were never sent (duplicated?)")
            return
        if n < size:  # a partial echo: wait for the rest
            self.buf = data
            return
        if n > size:
            self._integrity("unexpected", f"{n - size} bytes beyond the message in flight (duplicated?)")
            return
        if data != expect:
            self._mismatch(data, expect, self.seq - 1)
            if self.dead:
                return
        if now >= self.end_ns:  # after the end (the tick may fire late under load): checked, not counted
            self.drained += 1
            self.go = False
            self.expect = None
            self.w.conn_drained()
            return
        if now < self.warm_ns:
            self.warm += 1
        else:
            self.lat(now - self.sent)
            self.count += 1
        if self.go:
            self._send(now)
        else:
            self.expect = None
            self.w.conn_drained()


class UdpConn(_Traffic, asyncio.DatagramProtocol):
    """One UDP "connection": a connected datagram socket with its own sequence numbers.

    Datagram 0 is the probe that stands for TCP's handshake (resent until one
    comes back, within ``--connect-timeout``); traffic starts at 1. Each echo
    is matched to its datagram by the sequence number in its header and
    checked byte for byte. What comes back is classified:

    * delivered: the echo of a datagram in flight (latency recorded);
      ``reordered`` too when a later datagram's echo came first;
    * duplicated: a second echo of a datagram already delivered;
    * late: the echo of a datagram already declared lost;
    * lost: not echoed within ``--timeout`` (the worker's sweep decides);
      ``lost_in_window`` those of them sent inside the measured window;
    * too_old: an echo more than ``UDP_STATE_RING`` datagrams behind the
      connection's newest (too old to tell late from duplicated);
    * unresolved: still in flight, deadline not reached, when the run was cut short;
    * corrupt / unexpected (never sent): integrity failures.

    Closed loop keeps ``depth`` datagrams in flight; a loss frees its slot.
    Open loop sends on schedule with the same coordinated-omission rule as TCP.
    """

    def __init__(self, w: "Worker", conn_id: int) -> None:
        super().__init__(w, conn_id)
        self.inflight: dict[int, tuple[bytes, int, int]] = {}  # seq -> (datagram, start_ns, sent_ns), oldest first
        # the fate of datagram s (delivered or lost) is in state[s & state_mask]; one slot is reused
        # only by a datagram UDP_STATE_RING later, so an echo of anything younger can be classified
        self.state = bytearray(UDP_STATE_RING)
        self.state_mask = UDP_STATE_RING - 1
        self.seq = self.first_seq = 1  # 0 is the probe
        self.top = 0  # highest sequence delivered so far
        for k in UDP_COUNTS:
            setattr(self, k, 0)
        self.pack = HEADER.pack
        self.ring = self.maker.ring
        self.mask = self.maker.mask
        self.sendto = None
        self.probe: asyncio.Future | None = None

    # -- asyncio callbacks --------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.sendto = transport.sendto

    def datagram_received(self, data: bytes, addr) -> None:
        now = _now()
        try:
            conn, magic, seq = HEADER.unpack_from(data)
        except struct.error:
            self._integrity("corrupt", f"a {len(data)}-byte datagram (sent {self.size})")
            return
        rec = self.inflight.pop(seq, None) if (conn == self.conn_id and magic == MAGIC) else None
        if rec is None:
            self._unmatched(data, conn, magic, seq, now)
            return
        msg, start, sent = rec
        if data != msg:
            self._integrity("corrupt", f"datagram {seq}: echoed bytes differ from those sent ({len(data)} of {self.size} bytes)")
        self.state[seq & self.state_mask] = _DELIVERED
        self.delivered += 1
        if seq < self.top:
            self.reordered += 1
        else:
            self.top = seq
        if self.warm_ns <= now < self.end_ns:
            self.lat(now - start)
            if self.unc is not None:
                self.unc(now - sent)
            self.count += 1
        elif now >= self.end_ns:
            self.drained += 1
        else:
            self.warm += 1
        if self.go and not self.interval_ns and now < self.end_ns:  # closed loop: _refill, inlined
            inflight = self.inflight
            pack, cid, ring, mask, sendto = self.pack, self.conn_id, self.ring, self.mask, self.sendto
            while len(inflight) < self.depth:
                s = self.seq
                self.seq = s + 1
                m = pack(cid, MAGIC, s) + ring[s & mask]
                inflight[s] = (m, now, now)
                self.sent += 1
                sendto(m)
        else:
            self._refill(now)

    def _unmatched(self, data: bytes, conn: int, magic: int, seq: int, now: int) -> None:
        """An echo that matches no datagram in flight: a probe's, duplicated, late, or an integrity failure."""
        if magic != MAGIC or conn != self.conn_id:
            self._integrity("corrupt", f"a datagram whose header is not this connection's ({len(data)} bytes)")
        elif seq == 0:  # an extra echo of a resent probe
            if self.probe is not None and not self.probe.done():
                self.probe.set_result(now)
        elif seq >= self.seq:
            self._integrity("unexpected", f"an echo of datagram {seq}, which was never sent")
        elif self.seq - seq > UDP_STATE_RING:
            self.too_old += 1
        elif self.state[seq & self.state_mask] == _LOST:
            self.late += 1
            self.state[seq & self.state_mask] = _DELIVERED  # a second copy is a duplicate
        else:
            self.duplicated += 1

    def error_received(self, exc) -> None:
        if self.probe is not None and not self.probe.done():
            self.probe.set_exception(exc)
        elif isinstance(exc, ConnectionRefusedError) and not self.dead:
            self.dead = True
            self.w.connection_lost(self, "refused", "the server's port is closed (ICMP port unreachable)")

    def connection_lost(self, exc) -> None:
        if self.timer is not None:
            self.timer.cancel()

    # -- sending ------------------------------------------------------------------
    async def connect(self, timeout: float) -> None:
        """Send probe datagrams until one is echoed; TimeoutError after ``timeout``."""
        loop = self.w.loop
        self.probe = loop.create_future()
        probe = self.make(0)
        deadline = loop.time() + timeout
        try:
            while True:
                self.sendto(probe)
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(f"no echo of a probe datagram within {timeout:g} s")
                try:
                    await asyncio.wait_for(asyncio.shield(self.probe), min(UDP_PROBE_EVERY_S, left))
                    return
                except asyncio.TimeoutError:
                    continue
        finally:
            self.probe = None

    def _send(self, seq: int, start: int, now: int) -> None:
        msg = self.pack(self.conn_id, MAGIC, seq) + self.ring[seq & self.mask]
        self.inflight[seq] = (msg, start, now)
        self.sent += 1
        self.sendto(msg)

    def start(self, t0: int) -> None:
        if self.dead:  # refused (ICMP) between the probe and the start: counted as an error already
            return
        self.go = True
        if self.interval_ns:
            self.first_due = t0 + self.phase_ns
            self.busy_since = 0
            self._pump(_now(), True)
        else:
            self._refill(_now())

    def _refill(self, now: int) -> None:
        """After an echo or a loss: keep the window full, or report drained."""
        if self.go and self.w.sending and now < self.end_ns:
            if self.interval_ns:
                self._pump(now, False)
                return
            while len(self.inflight) < self.depth:
                seq = self.seq
                self.seq = seq + 1
                self._send(seq, now, now)
        elif not self.inflight:
            self.w.conn_drained()

    def _emit(self, start: int, now: int) -> None:
        seq = self.seq
        self.seq = seq + 1
        self._send(seq, start, now)

    def expire(self, now: int, limit_ns: int) -> None:
        """Declare lost every datagram in flight for longer than ``limit_ns``; refill the window."""
        inflight = self.inflight
        expired = 0
        while inflight:
            seq = next(iter(inflight))
            sent = inflight[seq][2]
            if now - sent <= limit_ns:
                break  # sent in order: the rest are younger
            del inflight[seq]
            self.state[seq & self.state_mask] = _LOST
            if self.warm_ns <= sent < self.end_ns:
                self.lost_in_window += 1
            expired += 1
        if expired:
            self.lost += expired
            self._refill(now)

    def give_up(self) -> None:
        """The run is over: what is still in flight had no full deadline; counted apart, not as lost."""
        self.unresolved += len(self.inflight)
        self.inflight.clear()

    # -- bookkeeping shared with Conn ------------------------------------------------
    def in_flight(self) -> int:
        return len(self.inflight)

    def oldest_sent_ns(self) -> int:
        return next(iter(self.inflight.values()))[2]

    def _integrity(self, kind: str, detail: str, fatal: bool = False) -> None:
        """Counted; never fatal: each datagram is checked on its own, so the next one still can be."""
        self.w.integrity_failure(kind, f"connection {self.conn_id}: {detail}")


class Worker:
    """Runs in its own process; talks to the parent over ``pipe``."""

    def __init__(self, cfg: LoadConfig, index: int, conn_ids: list[int], pipe) -> None:
        self.cfg = cfg
        self.index = index
        self.conn_ids = conn_ids
        self.pipe = pipe
        self.loop = new_loop(cfg.loop)
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
        if cfg.transport == "unix":
            self.family, self.addr = socket.AF_UNIX, cfg.path
        else:  # resolve once: a name lookup per connection would be timed as connect time
            kind = socket.SOCK_DGRAM if cfg.transport == "udp" else socket.SOCK_STREAM
            info = socket.getaddrinfo(cfg.host, cfg.port, type=kind)[0]
            self.family, self.addr = info[0], info[4]

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

        async def one(cid: int) -> Conn:
            async with sem:
                t0 = _now()
                sock = socket.socket(self.family, socket.SOCK_STREAM)
                try:
                    sock.setblocking(False)
                    await asyncio.wait_for(loop.sock_connect(sock, self.addr), cfg.connect_timeout)
                except BaseException:
                    sock.close()
                    raise
                self.connect_ns.append(_now() - t0)
                create = loop.create_unix_connection if self.family == socket.AF_UNIX else loop.create_connection
                _tr, proto = await create(lambda: protos[cid], sock=sock)
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

    def _flush(self) -> dict:
        """Batch this interval's samples into histograms; the report the parent merges."""
        rep = {}
        for name, arr in (("hist", self.lat), ("hist_unc", self.unc), ("lag", self.lag)):
            if arr is None:
                continue
            h = stats.new_histogram()
            if len(arr):
                v = np.frombuffer(arr, dtype=np.int64).copy()
                del arr[:]
                stats.record_batch(h, v)
            rep[name] = stats.encode(h)
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
        if self.open_loop:
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
        ticks = [warm_end]
        while ticks[-1] + 10**9 < end:
            ticks.append(ticks[-1] + 10**9)
        ticks.append(end)
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
        for c in still:
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
        self.pipe.send((kind, self.index, data))

    def stop_requested(self) -> None:
        self._finish("interrupted")


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


def worker_main(cfg: LoadConfig, index: int, conn_ids: list[int], pipe, cpu: int | None) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it tells us to stop
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass
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
