"""Stream connections (TCP and Unix sockets) of the Python engine: ``Conn`` (any depth, open or closed loop) and
``Closed1Conn`` (closed loop at depth 1, the common case, with less Python per message)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from ..payload import HEADER, MAGIC
from .traffic import _now, _Traffic

if TYPE_CHECKING:
    from .worker import Worker


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
