"""The event-loop half shared by the asyncio models.

``asyncio-*`` and ``uvloop-*`` are one code path each; only the loop factory
differs. ``run`` owns the loop's life: signal handlers, a one-line exception
handler (no tracebacks for a peer's reset), and cleanup within the 2 s stop
budget.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from .loop_control import STOP_SIGNALS

log = logging.getLogger("servers")

# Errors a peer can cause on its own connection; not the server's fault, not logged.
_PEER_ERRORS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, TimeoutError)


# Note for models: loop.create_server(sock=...) calls listen() again with its own
# backlog (default 100), silently shrinking ours; always pass backlog=config.backlog.


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    """A fresh event loop from the named factory: ``asyncio`` or ``uvloop``."""
    if name == "uvloop":
        import uvloop  # imported only when a uvloop model is chosen

        return uvloop.new_event_loop()
    if name == "asyncio":
        return asyncio.SelectorEventLoop()
    raise ValueError(f"unknown event loop {name!r}")


def _exception_handler(loop, context) -> None:
    exc = context.get("exception")
    if isinstance(exc, _PEER_ERRORS):
        return
    msg = context.get("message", "event loop error")
    log.warning("%s%s", msg, f": {exc!r}" if exc is not None else "")


def run(main: Callable[[asyncio.Event], Awaitable[None]], loop_name: str) -> None:
    """Run ``main(stop_event)`` on a new loop; SIGINT/SIGTERM set the event."""
    loop = new_loop(loop_name)
    asyncio.set_event_loop(loop)
    loop.set_exception_handler(_exception_handler)
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        loop.run_until_complete(main(stop))
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
            asyncio.set_event_loop(None)
            loop.close()
