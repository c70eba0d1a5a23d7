"""``asyncio-protocol`` / ``uvloop-protocol``: an ``asyncio.Protocol`` with flow control.

``data_received`` hands the bytes straight to ``transport.write``. When the
transport's write buffer passes its high-water mark the loop calls
``pause_writing``; the protocol then pauses *reading*, so a peer that sends
without reading is throttled by TCP instead of filling the server's memory.
"""

from __future__ import annotations

import asyncio

from . import aio, net
from .config import ServerConfig
from .loop_control import burn


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
    """Test-only (--burn-ns): a known CPU cost per received chunk, for regression-gate tests."""

    __slots__ = ()
    burn_ns = 0

    def data_received(self, data: bytes) -> None:
        burn(self.burn_ns)
        self._write(data)


def serve(config: ServerConfig, on_ready, loop: str = "asyncio") -> None:
    lsock = net.listen(config.host, config.port, reuse_port=config.reuse_port, backlog=config.backlog)
    live: set[asyncio.BaseTransport] = set()

    async def main(stop: asyncio.Event) -> None:
        ev_loop = asyncio.get_running_loop()
        proto = EchoProtocol
        if config.burn_ns:
            proto = type("Burning", (BurningEchoProtocol,), {"__slots__": (), "burn_ns": config.burn_ns})
        server = await ev_loop.create_server(lambda: proto(live), sock=lsock, backlog=aio.ACCEPT_BATCH)
        aio.relisten(lsock, config.backlog)
        on_ready(lsock.getsockname())
        await stop.wait()
        server.close()
        for t in list(live):
            t.abort()

    aio.run(main, loop)
