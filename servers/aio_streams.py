"""``asyncio-streams`` / ``uvloop-streams``: StreamReader/StreamWriter with ``drain()``.

The code most asyncio tutorials write. ``await writer.drain()`` after every
write is what keeps a slow reader from growing the write buffer: the
handler stops reading until the transport is below its high-water mark.
"""

from __future__ import annotations

import asyncio

from . import aio, net, tls
from .config import READ_CHUNK, ServerConfig


def serve(config: ServerConfig, on_ready, loop: str = "asyncio") -> None:
    lsock = net.stream_listener(config)
    writers: set[asyncio.StreamWriter] = set()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        net.set_nodelay(writer.get_extra_info("socket"))
        writers.add(writer)
        read, write, drain = reader.read, writer.write, writer.drain
        try:
            while data := await read(READ_CHUNK):
                write(data)
                await drain()
        except OSError:  # reset or broken pipe: this connection only
            pass
        finally:
            writers.discard(writer)
            writer.close()  # flushes the echo already queued, then FIN

    async def main(stop: asyncio.Event) -> None:
        start = asyncio.start_unix_server if config.transport == "unix" else asyncio.start_server
        server = await start(echo, sock=lsock, limit=READ_CHUNK, backlog=aio.ACCEPT_BATCH, ssl=tls.context_for(config))
        aio.relisten(lsock, config.backlog)
        on_ready(lsock.getsockname())
        await stop.wait()
        server.close()
        for w in list(writers):
            w.transport.abort()

    aio.run(main, loop)
