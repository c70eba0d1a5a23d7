"""``trio``: ``trio.serve_listeners``, a task per connection under one nursery.

Structured concurrency: every connection's task lives in the server's
nursery, so stopping the server cancels and closes all of them, and nothing
outlives it. ``await stream.send_all(data)`` returns only when the kernel has
taken the bytes: a peer that does not read stops its own connection's reads,
and nothing is buffered beyond one chunk.
"""

from __future__ import annotations

import logging
import os
import time
from functools import partial

from . import aio, net, tls
from .config import READ_CHUNK, ServerConfig
from .loop_control import STOP_SIGNALS

log = logging.getLogger("servers")

LOG_REPEAT_S = 5.0


class _OneLine(logging.Filter):
    """trio logs a failed accept() (out of descriptors) with a traceback every 0.1 s while it retries: one line per
    LOG_REPEAT_S instead."""

    def __init__(self) -> None:
        super().__init__()
        self.last = -LOG_REPEAT_S

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self.last < LOG_REPEAT_S:
            return False
        self.last = now
        record.exc_info = None
        record.exc_text = None
        return True


def _seed_scheduler() -> None:
    """Under ``make bench-cost`` (``ECHOBENCH_SCHEDULER_SEED`` set): seed trio's scheduler's random generator.
    trio reverses each batch of runnable tasks at random and offsets its clock by a random amount; unseeded, the
    instruction count per message varied by 0.5% between repeats (3.11.7), seeded by 0.08%. The same code runs
    either way; only the coin's sequence is fixed. Not set: nothing changes (a private name, so looked up
    carefully)."""
    seed = os.environ.get("ECHOBENCH_SCHEDULER_SEED")
    if seed is None:
        return
    from trio._core import _run

    rng = getattr(_run, "_r", None)
    if rng is not None and hasattr(rng, "seed"):
        rng.seed(int(seed))


def serve(config: ServerConfig, on_ready) -> None:
    import trio

    aio.settle_malloc()
    _seed_scheduler()
    logging.getLogger("trio.serve_listeners").addFilter(_OneLine())
    lsock = net.stream_listener(config)

    ctx = tls.context_for(config)

    async def echo(stream) -> None:
        net.set_nodelay(stream.transport_stream.socket if ctx else stream.socket)
        receive, send = stream.receive_some, stream.send_all
        try:
            while data := await receive(READ_CHUNK):
                await send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):  # reset or broken pipe: this connection only
            pass
        # serve_listeners closes the stream when this returns: after EOF every byte has been echoed, FIN follows

    async def main() -> None:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(lsock))
        if ctx is not None:  # the handshake happens in each connection's task, on its first receive
            listener = trio.SSLListener(listener, ctx)
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(trio.serve_listeners, echo, [listener]))
                on_ready(lsock.getsockname())
                async for _sig in signals:
                    break
                nursery.cancel_scope.cancel()  # every connection's task is cancelled and its stream closed

    trio.run(main)
