"""``asyncio-protocol`` / ``uvloop-protocol``: an ``asyncio.Protocol`` with flow control.

``data_received`` hands the bytes straight to ``transport.write``. When the
transport's write buffer passes its high-water mark the loop calls
``pause_writing``; the protocol then pauses *reading*, so a peer that sends
without reading is throttled by TCP instead of filling the server's memory.

With ``--transport udp`` the same loop runs a datagram endpoint:
``datagram_received`` answers each datagram to its sender with ``sendto``.
There is no reading to pause on UDP, so while the transport's send buffer is
above its high-water mark (the kernel refused datagrams) further echoes are
dropped, as a router would: memory stays bounded and the client counts the
loss.
"""

from __future__ import annotations

import asyncio
import logging

from . import aio, net, tls
from .config import ServerConfig
from .loop_control import injected_cost

log = logging.getLogger("servers")


class EchoProtocol(asyncio.Protocol):
    __slots__ = ("transport", "_write", "_live")

    def __init__(self, live: set) -> None:
        self._live = live

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._live.add(transport)
        net.set_nodelay(transport.get_extra_info("socket"))
        self._write = transport.write

    def data_received(self, data: bytes) -> None:
        self._write(data)

    def eof_received(self) -> bool:
        return False  # close: the loop flushes queued echo bytes first, then sends FIN

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        self._live.discard(self.transport)


class BurningEchoProtocol(EchoProtocol):
    """Test-only (--burn-ns, --burn-loop): a known CPU cost per received chunk, for regression-gate tests."""

    __slots__ = ()
    inject = staticmethod(lambda: None)

    def data_received(self, data: bytes) -> None:
        self.inject()
        self._write(data)


class EchoDatagram(asyncio.DatagramProtocol):
    """UDP echo: every datagram goes back to its source, byte for byte, or is dropped while the send buffer is full."""

    __slots__ = ("transport", "_sendto", "paused", "dropped", "_raw_sendto")

    def __init__(self, sock) -> None:
        self.paused = False
        self.dropped = 0
        # asyncio (< 3.13, CPython gh-113812) and uvloop (MagicStack/uvloop#594) silently
        # skip sendto(b""): an empty datagram is answered on the socket itself.
        self._raw_sendto = sock.sendto

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._sendto = transport.sendto

    def datagram_received(self, data: bytes, addr) -> None:
        if self.paused:
            self.dropped += 1
            return
        if data:
            self._sendto(data, addr)
            return
        try:
            self._raw_sendto(data, addr)
        except OSError:
            self.dropped += 1

    def error_received(self, exc) -> None:
        pass  # ICMP errors about one peer (port unreachable): not the server's problem

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False


class BurningEchoDatagram(EchoDatagram):
    """Test-only (--burn-ns, --burn-loop) over UDP, as BurningEchoProtocol: the plain echo pays no check for it."""

    __slots__ = ()
    inject = staticmethod(lambda: None)

    def datagram_received(self, data: bytes, addr) -> None:
        self.inject()
        super().datagram_received(data, addr)


def serve_udp(config: ServerConfig, on_ready, loop: str) -> None:
    usock = net.bind_udp(config.host, config.port, reuse_port=config.reuse_port)

    async def main(stop: asyncio.Event) -> None:
        proto_class = EchoDatagram
        if (inject := injected_cost(config)) is not None:
            proto_class = type("Burning", (BurningEchoDatagram,), {"__slots__": (), "inject": staticmethod(inject)})
        transport, proto = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: proto_class(usock), sock=usock)
        on_ready(usock.getsockname())
        await stop.wait()
        transport.abort()
        if proto.dropped:
            log.info("dropped %d echo datagram(s) while the send buffer was full", proto.dropped)

    aio.run(main, loop)


def serve(config: ServerConfig, on_ready, loop: str = "asyncio") -> None:
    if config.transport == "udp":
        serve_udp(config, on_ready, loop)
        return
    lsock = net.stream_listener(config)
    live: set[asyncio.BaseTransport] = set()

    async def main(stop: asyncio.Event) -> None:
        ev_loop = asyncio.get_running_loop()
        proto = EchoProtocol
        if (inject := injected_cost(config)) is not None:
            proto = type("Burning", (BurningEchoProtocol,), {"__slots__": (), "inject": staticmethod(inject)})
        create = ev_loop.create_unix_server if config.transport == "unix" else ev_loop.create_server
        server = await create(lambda: proto(live), sock=lsock, backlog=aio.ACCEPT_BATCH, ssl=tls.context_for(config))
        aio.relisten(lsock, config.backlog)
        on_ready(lsock.getsockname())
        await stop.wait()
        server.close()
        for t in list(live):
            t.abort()

    aio.run(main, loop)
