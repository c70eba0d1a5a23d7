"""Stopping on a signal and accepting with back-off, for the selector-driven models.

The ``threads``, ``selectors`` and ``reuseport`` (supervisor) models block in
``select``; a signal handler that only sets a flag would not wake them, so the
handler's wake-up byte goes to a socket the selector watches
(``signal.set_wakeup_fd``).
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from typing import Callable

from . import net

log = logging.getLogger("servers")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def burn(ns: int) -> None:
    """Spin for ``ns`` nanoseconds of wall time (test-only --burn-ns: a known, injected per-message cost)."""
    end = time.perf_counter_ns() + ns
    while time.perf_counter_ns() < end:
        pass


def spin(iterations: int) -> None:
    """Run a loop of ``iterations`` (test-only --burn-loop): a fixed amount of work per call, the same instructions
    every time, so an instruction-count gate sees exactly the same injected cost on every run (--burn-ns spins
    on the clock: fewer iterations, and so fewer instructions, the slower the machine or valgrind makes it)."""
    for _ in range(iterations):
        pass


def injected_cost(config) -> Callable[[], None] | None:
    """The test-only cost per received chunk the configuration asks for (--burn-ns or --burn-loop), or None."""
    if config.burn_ns:
        return lambda: burn(config.burn_ns)
    if config.burn_loop:
        return lambda: spin(config.burn_loop)
    return None


class StopSignal:
    """SIGINT/SIGTERM set ``stopped`` and make ``wake`` readable."""

    def __init__(self) -> None:
        self.wake, self._wake_w = socket.socketpair()
        self.wake.setblocking(False)
        self._wake_w.setblocking(False)
        self.stopped = False
        self.signum: int | None = None
        self._old_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        self._old = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}

    def _handle(self, signum, _frame) -> None:
        self.stopped = True
        self.signum = signum

    def drain(self) -> None:
        """Empty the wake-up socket (its bytes only say 'look at the flag')."""
        try:
            while self.wake.recv(4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        signal.set_wakeup_fd(self._old_fd)
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self.wake.close()
        self._wake_w.close()


class Acceptor:
    """``accept()`` until the backlog is empty; back off when out of descriptors.

    On EMFILE the listening socket stays readable (the connection waits in the
    backlog), so a naive loop would spin a CPU at 100%. Instead the caller
    stops watching the listener for ``BACKOFF_S`` and tries again; pending
    clients wait in the backlog and are served once descriptors are free.
    """

    BACKOFF_S = 0.1
    MAX_PER_WAKEUP = 256  # keep one accept burst from starving established connections

    def __init__(self, lsock: socket.socket) -> None:
        self.lsock = lsock
        self.resume_at: float | None = None  # monotonic time to resume, when backing off
        self._exhausted = False

    def accept_ready(self, on_conn: Callable[[socket.socket], None]) -> bool:
        """Accept pending connections; False when the caller must back off until ``resume_at``."""
        accept = self.lsock.accept
        for _ in range(self.MAX_PER_WAKEUP):
            try:
                conn, _addr = accept()
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno in net.ACCEPT_RESOURCE_ERRORS:
                    if not self._exhausted:
                        log.warning(
                            "accept failed (%s); pausing accepts, retrying every %.1f s",
                            exc.strerror, self.BACKOFF_S,
                        )
                        self._exhausted = True
                    self.resume_at = time.monotonic() + self.BACKOFF_S
                    return False
                if exc.errno in net.ACCEPT_TRANSIENT_ERRORS:
                    continue
                raise
            if self._exhausted:
                log.warning("accepting connections again")
                self._exhausted = False
            on_conn(conn)
        return True

    def timeout(self) -> float | None:
        """Seconds until accepts resume, for ``select(timeout)``; None when not backing off."""
        if self.resume_at is None:
            return None
        return max(0.0, self.resume_at - time.monotonic())

    def should_resume(self) -> bool:
        if self.resume_at is not None and time.monotonic() >= self.resume_at:
            self.resume_at = None
            return True
        return False


_LISTENER = object()
_WAKE = object()


def select_loop(
    sel,
    lsock: socket.socket,
    stop: StopSignal,
    on_conn: Callable[[socket.socket], None],
    on_io: Callable | None = None,
) -> None:
    """Run ``sel`` until ``stop``: accept into ``on_conn``, other events to ``on_io(key, mask)``."""
    import selectors

    acceptor = Acceptor(lsock)
    sel.register(lsock, selectors.EVENT_READ, _LISTENER)
    sel.register(stop.wake, selectors.EVENT_READ, _WAKE)
    select = sel.select
    while not stop.stopped:
        events = select(acceptor.timeout())
        if acceptor.should_resume():
            sel.register(lsock, selectors.EVENT_READ, _LISTENER)
        for key, mask in events:
            data = key.data
            if data is _LISTENER:
                if not acceptor.accept_ready(on_conn):
                    sel.unregister(lsock)
            elif data is _WAKE:
                stop.drain()
            else:
                on_io(key, mask)
