"""UDP "connections" of the Python engine (the native engine drives streams only)."""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING

from ..payload import HEADER, MAGIC
from .traffic import _now, _Traffic

if TYPE_CHECKING:
    from .worker import Worker

UDP_PROBE_EVERY_S = 0.1  # a UDP "connect" resends its probe datagram this often until one comes back
UDP_STATE_RING = 1024  # per connection: the fate of the last 1,024 datagrams, to tell "late" from "duplicated"
_DELIVERED, _LOST = 1, 2
UDP_COUNTS = ("sent", "delivered", "lost", "lost_in_window", "duplicated", "reordered", "late", "too_old", "unresolved")


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
