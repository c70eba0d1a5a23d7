"""Deliberately broken echo servers for testing the load generator's honesty.

    python tests/support/fault_server.py MODE [--every N] [--size B] [--after-s S] [--rate R]

Modes:
  count    echo correctly; on SIGTERM print "echoed BYTES" to stdout
  corrupt  flip one byte in every N (default 1,000,000) of each connection's stream
  drop     drop one byte in every N of each connection's stream
  reorder  swap two consecutive messages of --size bytes once per connection: the first two after N bytes
  stall    stop reading every connection for 0.5 s once, --after-s seconds after the first byte
  die      exit abruptly (code 9) after --after-s seconds of traffic
  reset    reset every connection (SO_LINGER 0) after --after-s seconds of traffic
  once     echo each connection's first --size bytes, then close it
  hog      a server of known memory per connection: each connection holds --per-conn-bytes of memory it has
           written to (so it is resident), and echoes correctly
  paced    a server of known capacity: echo at most --rate messages of --size bytes per second over all
           connections, first come first served (one server with a fixed service time of 1/R s per message), so
           below R messages wait only for their turn and above it a queue builds without end

Prints the bound host:port on stdout when ready, like python -m servers.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import socket
import struct
import sys

STALL_S = 0.5


class Fault(asyncio.Protocol):
    def __init__(self, state) -> None:
        self.s = state
        self.seen = 0  # bytes of this connection's stream so far
        self.held = b""
        self.reordered = False
        self.holding = False  # reorder: holding back the two messages to swap
        self.partial = b""  # paced: the bytes of a message not yet whole

    def connection_made(self, transport) -> None:
        self.t = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.s.peers[peer[0]] += 1
        if self.s.mode == "hog":  # written one byte a page: every page resident, none shared
            self.hog = bytearray(self.s.per_conn_bytes)
            self.hog[::4096] = b"\x01" * len(range(0, self.s.per_conn_bytes, 4096))
        self.s.conns.add(self)
        if self.s.stalled:
            transport.pause_reading()

    def connection_lost(self, exc) -> None:
        self.s.conns.discard(self)

    def send(self, data: bytes) -> None:
        if not self.t.is_closing():
            self.t.write(data)

    def data_received(self, data: bytes) -> None:
        s, mode, every = self.s, self.s.mode, self.s.every
        if not s.started:  # --after-s counts from the first byte, not the first connection: a client slow to
            s.on_traffic()  # start sending (a loaded machine) still meets the fault where its test expects it
        if mode == "paced":
            data = self.partial + data
            whole = len(data) - len(data) % s.size
            self.partial = data[whole:]
            for i in range(0, whole, s.size):
                s.serve(self, data[i:i + s.size])
            return
        start, self.seen = self.seen, self.seen + len(data)
        if mode == "once":
            keep = max(0, s.size - start)
            if keep:
                self.t.write(data[:keep])
            if self.seen >= s.size:
                self.t.close()
            return
        s.echoed += len(data)
        if mode in ("corrupt", "drop") and start // every != self.seen // every:
            i = every * (self.seen // every) - start - 1  # the Nth byte, 0-based in this chunk
            if mode == "corrupt":
                data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
            else:
                data = data[:i] + data[i + 1:]
                s.echoed -= 1
        elif mode == "reorder" and not self.reordered and self.seen > -(-every // s.size) * s.size:
            # the two messages after the first message boundary at or past `every` bytes: the same messages
            # however the stream was cut into reads (a boundary taken from a read's start would depend on it)
            if not self.holding:
                self.holding = True
                cut = -(-every // s.size) * s.size - start
                if cut > 0:
                    self.t.write(data[:cut])
                data = data[cut:]
            self.held += data
            if len(self.held) < 2 * s.size:
                return
            a, b, rest = self.held[: s.size], self.held[s.size: 2 * s.size], self.held[2 * s.size:]
            data = b + a + rest
            self.held = b""
            self.reordered = True
        self.t.write(data)


class State:
    def __init__(self, args) -> None:
        self.mode = args.mode
        self.every = args.every
        self.size = args.size
        self.after_s = args.after_s
        self.conns: set[Fault] = set()
        self.peers: collections.Counter = collections.Counter()  # connections accepted, by the client's address
        self.echoed = 0
        self.started = False
        self.stalled = False
        self.service_s = 1.0 / args.rate if args.rate else 0.0
        self.per_conn_bytes = args.per_conn_bytes
        self.free_at = 0.0  # paced: when the server is next free

    def serve(self, conn: Fault, message: bytes) -> None:
        """Paced: the message's service starts when it has arrived and the server is free, and takes 1/rate s;
        its echo leaves when the service ends. Echoes go out in the order the messages arrived."""
        loop = asyncio.get_running_loop()
        self.free_at = max(loop.time(), self.free_at) + self.service_s
        self.echoed += len(message)
        loop.call_at(self.free_at, conn.send, message)

    def on_traffic(self) -> None:
        if self.started:
            return
        self.started = True
        loop = asyncio.get_running_loop()
        if self.mode == "stall":
            loop.call_later(self.after_s, self.stall)
        elif self.mode == "die":
            loop.call_later(self.after_s, os._exit, 9)
        elif self.mode == "reset":
            loop.call_later(self.after_s, self.reset_all)

    def stall(self) -> None:
        self.stalled = True
        for c in self.conns:
            c.t.pause_reading()
        asyncio.get_running_loop().call_later(STALL_S, self.unstall)

    def unstall(self) -> None:
        self.stalled = False
        for c in self.conns:
            c.t.resume_reading()

    def reset_all(self) -> None:
        for c in list(self.conns):
            sock = c.t.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.t.abort()


async def main(args) -> None:
    loop = asyncio.get_running_loop()
    state = State(args)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(lambda: Fault(state), args.host, 0, backlog=4096)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"{host}:{port}", flush=True)
    await stop.wait()
    server.close()
    if args.mode == "count":
        print(f"echoed {state.echoed}", flush=True)
        print("peers " + " ".join(f"{a}={n}" for a, n in sorted(state.peers.items())), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["count", "corrupt", "drop", "reorder", "stall", "die", "reset", "paced", "hog", "once"])
    p.add_argument("--every", type=int, default=1_000_000)
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--after-s", type=float, default=1.0)
    p.add_argument("--rate", type=float, default=0.0, help="paced: messages per second (required there)")
    p.add_argument("--per-conn-bytes", type=int, default=256 * 1024, help="hog: bytes held per connection")
    a = p.parse_args()
    if a.mode == "paced" and a.rate <= 0:
        p.error("paced needs --rate > 0")
    asyncio.run(main(a))
    sys.exit(0)
