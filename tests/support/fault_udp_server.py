"""A deliberately unreliable UDP echo server, for testing the load generator's datagram accounting.

    python tests/support/fault_udp_server.py MODE [--every N] [--hold-s S]

Every Nth traffic datagram (sequence > 0; the probe, sequence 0, is always
answered) of each source is:

  drop       not answered
  dup        answered twice
  reorder    held back and answered after the next datagram from that source
  corrupt    answered with one body byte flipped
  delay      answered after --hold-s seconds (longer than the client's deadline: "late")
  blackhole  (every datagram after the probe) never answered
  die        (no fault) the process exits abruptly (code 9) --hold-s seconds after the first traffic
  stall      (no fault) --hold-s seconds after the first traffic, hold every datagram for 0.5 s, then
             answer them all in order: a server that stops for half a second

Prints host:port on stdout when ready; on SIGTERM prints "affected N" (how
many datagrams the fault touched) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import struct
import sys

HEADER = struct.Struct("!IIQ")
STALL_S = 0.5


class Faulty(asyncio.DatagramProtocol):
    def __init__(self, args) -> None:
        self.mode, self.every, self.hold_s = args.mode, args.every, args.hold_s
        self.seen: dict = {}  # source -> traffic datagrams seen
        self.held: dict = {}  # source -> a datagram held back (reorder)
        self.affected = 0
        self.stalled: list | None = None  # datagrams held during a stall

    def stall(self) -> None:
        self.stalled = []
        asyncio.get_running_loop().call_later(STALL_S, self.unstall)

    def unstall(self) -> None:
        held, self.stalled = self.stalled, None
        for data, addr in held:
            self.t.sendto(data, addr)

    def connection_made(self, transport) -> None:
        self.t = transport

    def datagram_received(self, data: bytes, addr) -> None:
        send = self.t.sendto
        if len(data) < HEADER.size or HEADER.unpack_from(data)[2] == 0:
            send(data, addr)
            return
        n = self.seen[addr] = self.seen.get(addr, 0) + 1
        if self.mode in ("die", "stall") and not self.affected:
            self.affected = 1
            later = asyncio.get_running_loop().call_later
            if self.mode == "die":
                later(self.hold_s, os._exit, 9)
            else:
                later(self.hold_s, self.stall)
        if self.stalled is not None:
            self.stalled.append((data, addr))
            return
        if addr in self.held:
            send(data, addr)
            send(self.held.pop(addr), addr)
            return
        if self.mode == "blackhole":
            self.affected += 1
            return
        if n % self.every or self.mode in ("die", "stall"):
            send(data, addr)
            return
        self.affected += 1
        if self.mode == "dup":
            send(data, addr)
            send(data, addr)
        elif self.mode == "reorder":
            self.held[addr] = data
        elif self.mode == "corrupt":
            send(data[:-1] + bytes([data[-1] ^ 0xFF]), addr)
        elif self.mode == "delay":
            asyncio.get_running_loop().call_later(self.hold_s, send, data, addr)
        # drop: nothing


async def main(args) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    transport, proto = await loop.create_datagram_endpoint(lambda: Faulty(args), local_addr=("127.0.0.1", 0))
    host, port = transport.get_extra_info("sockname")[:2]
    print(f"{host}:{port}", flush=True)
    await stop.wait()
    transport.close()
    print(f"affected {proto.affected}", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["drop", "dup", "reorder", "corrupt", "delay", "blackhole", "die", "stall"])
    p.add_argument("--every", type=int, default=1000)
    p.add_argument("--hold-s", type=float, default=0.5)
    asyncio.run(main(p.parse_args()))
    sys.exit(0)
