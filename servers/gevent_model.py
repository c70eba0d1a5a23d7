"""``gevent``: ``gevent.server.StreamServer``, a greenlet per connection.

The green-thread model behind gunicorn's gevent workers and many production
servers: code written like the ``threads`` model (blocking ``recv`` and
``sendall``), run by one OS thread whose hub (libev or libuv) switches
greenlets at each would-block. No monkey-patching: the accepted sockets are
gevent's own. ``sendall`` blocks the greenlet until the kernel takes the
bytes, so a peer that does not read stops its own connection's reads and
nothing is buffered beyond one chunk.
"""

from __future__ import annotations

import logging
import signal
import socket
import time

from . import aio, net, tls
from .config import READ_CHUNK, ServerConfig
from .loop_control import STOP_SIGNALS

log = logging.getLogger("servers")

SHUTDOWN_S = 1.0  # greenlets still running after this are killed
LOG_REPEAT_S = 5.0  # the same error from the hub (an accept() failing with EMFILE) logged once per window
MAX_ACCEPT = 100  # accepts per wake-up (gevent's default)


def serve(config: ServerConfig, on_ready) -> None:
    import gevent
    import gevent.event
    import gevent.server

    aio.settle_malloc()
    lsock = net.stream_listener(config)
    lsock.setblocking(False)
    live: set = set()

    def echo(sock, _addr) -> None:
        net.set_nodelay(sock)
        live.add(sock)
        # recv() as gevent code is written, not a buffer per connection: a 64 KiB bytearray per greenlet is 64 KiB
        # of resident memory per idle connection (measured: 74 KiB per connection with one, as `threads` pays)
        recv, sendall = sock.recv, sock.sendall
        try:
            while data := recv(READ_CHUNK):
                sendall(data)
        except OSError:  # reset or broken pipe: this connection only
            pass
        finally:
            live.discard(sock)
            sock.close()  # after EOF every byte has been echoed: FIN follows the data

    hub = gevent.get_hub()
    last: dict[str, float] = {}

    def one_line(context, etype, value, tb) -> None:
        """The hub prints a traceback for every failed accept (out of descriptors: once per back-off step); one
        line per kind of error every LOG_REPEAT_S instead. StreamServer itself backs off (10 ms doubling to 1 s)."""
        key = getattr(etype, "__name__", str(etype))
        now = time.monotonic()
        if now - last.get(key, -LOG_REPEAT_S) >= LOG_REPEAT_S:
            last[key] = now
            log.warning("gevent: %s: %s", key, value)

    hub.print_exception = one_line
    import gevent.ssl

    # gevent's own SSLContext (the stdlib's would block the hub in every handshake); each connection is wrapped in
    # its own greenlet, so the handshake happens there
    ctx = tls.context_for(config, gevent.ssl.SSLContext)
    server = gevent.server.StreamServer(lsock, echo, **({"ssl_context": ctx} if ctx else {}))
    server.max_accept = MAX_ACCEPT
    stop = gevent.event.Event()
    handlers = [gevent.signal_handler(sig, stop.set) for sig in STOP_SIGNALS]
    server.start()
    on_ready(lsock.getsockname())
    try:
        stop.wait()
    finally:
        for h in handlers:
            h.cancel()
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        server.close()  # stop accepting
        for s in list(live):  # wake greenlets blocked in recv/sendall
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.stop(timeout=SHUTDOWN_S)
