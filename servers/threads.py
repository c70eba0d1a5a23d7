"""``threads``: a thread per connection with blocking sockets.

The Python twin of the Go study's ``go handle(conn)`` server. Blocking
``sendall`` gives backpressure for free: a thread whose peer does not read
stops reading its own socket, so nothing is buffered beyond one chunk.

UDP has no connections to give threads to. With ``--transport udp`` a fixed
pool of ``UDP_THREADS`` threads blocks in ``recvfrom`` on the one socket
(the kernel hands each datagram to one of them) and answers with a blocking
``sendto``: the blocking-sockets variant of the datagram echo.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time

from . import net, tls
from .config import READ_CHUNK, ServerConfig
from .loop_control import StopSignal, select_loop

log = logging.getLogger("servers")

# Echo threads need little stack; 2,000 connections x the default 8 MiB of
# address space is wasteful.
THREAD_STACK = 256 * 1024
SHUTDOWN_JOIN_S = 1.0
UDP_THREADS = 4
HANDSHAKE_TIMEOUT_S = 10.0


def _join_within(threads: list[threading.Thread], seconds: float) -> None:
    """Join every thread, all within one budget (daemon threads still blocked after it die with the process)."""
    deadline = time.monotonic() + seconds
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


def _udp_echo(sock: socket.socket, stopping: threading.Event) -> None:
    buf = bytearray(READ_CHUNK)  # 64 KiB: room for the largest UDP datagram
    view = memoryview(buf)
    recvfrom_into, sendto = sock.recvfrom_into, sock.sendto
    while True:
        try:
            n, addr = recvfrom_into(buf)
        except OSError:  # an ICMP error about one peer, or the socket closed at shutdown
            if stopping.is_set():
                return
            continue
        if stopping.is_set():
            return
        try:
            sendto(view[:n], addr)
        except OSError:  # the datagram is dropped; UDP promises nothing more
            pass


def serve_udp(config: ServerConfig, on_ready) -> None:
    threading.stack_size(THREAD_STACK)
    usock = net.bind_udp(config.host, config.port, reuse_port=config.reuse_port)
    usock.setblocking(True)
    stop = StopSignal()
    stopping = threading.Event()
    pool = [threading.Thread(target=_udp_echo, args=(usock, stopping), daemon=True) for _ in range(UDP_THREADS)]
    for t in pool:
        t.start()
    on_ready(usock.getsockname())
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(stop.wake, selectors.EVENT_READ)
            while not stop.stopped:
                sel.select()
                stop.drain()
    finally:
        stopping.set()
        # A thread blocked in recvfrom wakes only for a datagram: send each one an empty one.
        host, port = usock.getsockname()[:2]
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        with socket.socket(usock.family, socket.SOCK_DGRAM) as waker:
            for _ in pool:
                try:
                    waker.sendto(b"", (host, port))
                except OSError:
                    break
        _join_within(pool, SHUTDOWN_JOIN_S)
        usock.close()
        stop.close()


def _echo(conn: socket.socket, live: set, lock: threading.Lock, ctx=None) -> None:
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    try:
        if ctx is not None:  # the handshake in this connection's own thread, never in the accept loop
            tconn = ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            with lock:  # the TLS socket replaces the plain one (detached now): shutdown can still wake this thread
                live.discard(conn)
                live.add(tconn)
            conn = tconn
            conn.settimeout(HANDSHAKE_TIMEOUT_S)  # a peer that never finishes its handshake does not pin a thread
            conn.do_handshake()
            conn.settimeout(None)
        recv_into, sendall = conn.recv_into, conn.sendall
        while n := recv_into(buf):
            sendall(view[:n])
    except OSError:  # reset, broken pipe, a failed TLS handshake (ssl.SSLError): this connection only
        pass
    finally:
        with lock:
            live.discard(conn)
        conn.close()  # after EOF every byte has been echoed: FIN follows the data


def serve(config: ServerConfig, on_ready) -> None:
    if config.transport == "udp":
        serve_udp(config, on_ready)
        return
    threading.stack_size(THREAD_STACK)
    ctx = tls.context_for(config)
    lsock = net.stream_listener(config)
    stop = StopSignal()
    live: set[socket.socket] = set()
    lock = threading.Lock()
    threads: list[threading.Thread] = []
    prune_at = [1024]

    def on_conn(conn: socket.socket) -> None:
        conn.setblocking(True)
        net.set_nodelay(conn)
        with lock:
            live.add(conn)
        t = threading.Thread(target=_echo, args=(conn, live, lock, ctx), daemon=True)
        try:
            t.start()
        except RuntimeError as exc:  # "can't start new thread": refuse this one, keep serving
            log.warning("cannot start a thread for a connection: %s", exc)
            with lock:
                live.discard(conn)
            conn.close()
            return
        threads.append(t)
        if len(threads) > prune_at[0]:  # forget finished threads: bounded bookkeeping, amortised O(1) per accept
            threads[:] = [t for t in threads if t.is_alive()]
            # next scan when the list has doubled again: a fixed bound (once 1,024) made every accept past it scan
            # every live thread, quadratic in the connections held (~226 connects/s at 18,000 threads)
            prune_at[0] = max(1024, 2 * len(threads))

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
        _join_within(threads, SHUTDOWN_JOIN_S)
        stop.close()
