"""``threads``: a thread per connection with blocking sockets.

The Python twin of the Go study's ``go handle(conn)`` server. Blocking
``sendall`` gives backpressure for free: a thread whose peer does not read
stops reading its own socket, so nothing is buffered beyond one chunk.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time

from . import net
from .config import READ_CHUNK, ServerConfig
from .loop_control import StopSignal, select_loop

log = logging.getLogger("servers")

# Echo threads need little stack; 2,000 connections x the default 8 MiB of
# address space is wasteful.
THREAD_STACK = 256 * 1024
SHUTDOWN_JOIN_S = 1.0


def _echo(conn: socket.socket, live: set, lock: threading.Lock) -> None:
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    recv_into, sendall = conn.recv_into, conn.sendall
    try:
        while n := recv_into(buf):
            sendall(view[:n])
    except OSError:  # reset or broken pipe: affects this connection only
        pass
    finally:
        with lock:
            live.discard(conn)
        conn.close()  # after EOF every byte has been echoed: FIN follows the data


def serve(config: ServerConfig, on_ready) -> None:
    threading.stack_size(THREAD_STACK)
    lsock = net.listen(config.host, config.port, reuse_port=config.reuse_port, backlog=config.backlog)
    stop = StopSignal()
    live: set[socket.socket] = set()
    lock = threading.Lock()
    threads: list[threading.Thread] = []

    def on_conn(conn: socket.socket) -> None:
        conn.setblocking(True)
        net.set_nodelay(conn)
        with lock:
            live.add(conn)
        t = threading.Thread(target=_echo, args=(conn, live, lock), daemon=True)
        try:
            t.start()
        except RuntimeError as exc:  # "can't start new thread": refuse this one, keep serving
            log.warning("cannot start a thread for a connection: %s", exc)
            with lock:
                live.discard(conn)
            conn.close()
            return
        threads.append(t)
        if len(threads) > 1024:  # forget finished threads; bounded bookkeeping
            threads[:] = [t for t in threads if t.is_alive()]

    on_ready(lsock.getsockname())
    try:
        with selectors.DefaultSelector() as sel:
            select_loop(sel, lsock, stop, on_conn)
    finally:
        lsock.close()
        with lock:
            conns = list(live)
        for c in conns:  # wake threads blocked in recv/sendall
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + SHUTDOWN_JOIN_S
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stop.close()
