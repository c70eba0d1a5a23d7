"""The event-loop half shared by the asyncio models.

``asyncio-*`` and ``uvloop-*`` are one code path each; only the loop factory
differs. ``run`` owns the loop's life: signal handlers, a one-line exception
handler (no tracebacks for a peer's reset), and cleanup within the 2 s stop
budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from .loop_control import STOP_SIGNALS

log = logging.getLogger("servers")

# Errors a peer can cause on its own connection; not the server's fault, not logged.
_PEER_ERRORS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, TimeoutError)


# create_server(sock=...) uses its ``backlog`` twice: it calls listen(backlog)
# again (default 100, silently shrinking our kernel backlog) and, in asyncio's
# selector loop, makes up to ``backlog`` accept() calls per wake-up. On
# EMFILE, CPython <= 3.13 does not leave that loop (gh-151615): it fails
# accept() ``backlog`` times, logging and scheduling a retry timer each time,
# so a large backlog there turns descriptor exhaustion into a busy CPU. So the
# models pass ACCEPT_BATCH to create_server and then restore the kernel
# backlog with ``relisten``.
ACCEPT_BATCH = 100
# The same loop error repeated within this window is logged once.
LOG_REPEAT_S = 5.0


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    """A fresh event loop from the named factory: ``asyncio`` or ``uvloop``."""
    if name == "uvloop":
        import uvloop  # imported only when a uvloop model is chosen

        return uvloop.new_event_loop()
    if name == "asyncio":
        return asyncio.SelectorEventLoop()
    raise ValueError(f"unknown event loop {name!r}")


def relisten(lsock, backlog: int) -> None:
    """Restore the kernel listen backlog after ``create_server(..., backlog=ACCEPT_BATCH)``."""
    lsock.listen(backlog)


_last_logged: dict[str, float] = {}


def _exception_handler(loop, context) -> None:
    exc = context.get("exception")
    if isinstance(exc, _PEER_ERRORS):
        return
    msg = context.get("message", "event loop error")
    now = time.monotonic()
    if now - _last_logged.get(msg, -LOG_REPEAT_S) < LOG_REPEAT_S:
        return  # e.g. one accept() failure a second while out of descriptors
    _last_logged[msg] = now
    log.warning("%s%s", msg, f": {exc!r}" if exc is not None else "")


def settle_malloc() -> None:
    """Put glibc's malloc in the same state in every server process.

    asyncio's selector transport reads with ``recv(256 KiB)`` and shrinks the
    result. Until glibc has freed one large mmapped chunk, its mmap threshold
    stays at 128 KiB, and every such read then costs ``mmap`` + ``mremap`` +
    ``munmap`` (or ``brk`` up and down): measured here as 10 vs 33 us of server
    CPU per message, chosen by chance per process. Allocating and freeing one
    512 KiB buffer raises the threshold (and the trim threshold) once, so the
    reads come from the heap: the state many processes reach by chance anyway,
    made deterministic.
    """
    buf = bytearray(512 * 1024)
    del buf


def run(main: Callable[[asyncio.Event], Awaitable[None]], loop_name: str) -> None:
    """Run ``main(stop_event)`` on a new loop; SIGINT/SIGTERM set the event."""
    settle_malloc()
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
