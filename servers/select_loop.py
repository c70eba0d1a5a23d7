"""``selectors``: one thread, non-blocking sockets, a ``selectors`` loop.

The study's "minimal server" done right: partial writes are kept and
finished when the socket is writable, and a connection with unsent data is
not read from until it drains, so a peer that never reads costs at most one
chunk of memory.

With ``--transport udp`` the loop reads datagrams until the socket is empty
(at most ``UDP_BATCH`` a wake-up, so a flood cannot starve the stop signal)
and answers each with ``sendto``; an echo the kernel refuses is dropped,
never queued.
"""

from __future__ import annotations

import selectors
import socket

from . import net
from .config import READ_CHUNK, ServerConfig
from .loop_control import StopSignal, injected_cost, select_loop

EVENT_READ, EVENT_WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
UDP_BATCH = 256


def serve_udp(config: ServerConfig, on_ready) -> None:
    usock = net.bind_udp(config.host, config.port, reuse_port=config.reuse_port)
    stop = StopSignal()
    buf = bytearray(READ_CHUNK)  # 64 KiB: room for the largest UDP datagram
    view = memoryview(buf)
    recvfrom_into, sendto = usock.recvfrom_into, usock.sendto
    inject = injected_cost(config)
    on_ready(usock.getsockname())
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(usock, EVENT_READ)
            sel.register(stop.wake, EVENT_READ)
            while not stop.stopped:
                for key, _mask in sel.select():
                    if key.fileobj is stop.wake:
                        stop.drain()
                        continue
                    for _ in range(UDP_BATCH):
                        try:
                            n, addr = recvfrom_into(buf)
                        except BlockingIOError:
                            break
                        except OSError:  # an ICMP error queued on the socket: about one peer only
                            continue
                        if inject is not None:
                            inject()
                        try:
                            sendto(view[:n], addr)
                        except OSError:  # send buffer full or peer gone: the datagram is dropped
                            pass
    finally:
        usock.close()
        stop.close()


def serve(config: ServerConfig, on_ready) -> None:
    if config.transport == "udp":
        serve_udp(config, on_ready)
        return
    lsock = net.stream_listener(config)
    stop = StopSignal()
    sel = selectors.DefaultSelector()
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    # fd -> unsent bytes (a memoryview over a private copy); absent = nothing pending
    pending: dict[int, memoryview] = {}
    inject = injected_cost(config)

    def close(sock: socket.socket) -> None:
        pending.pop(sock.fileno(), None)
        sel.unregister(sock)
        sock.close()

    def on_conn(conn: socket.socket) -> None:
        conn.setblocking(False)
        net.set_nodelay(conn)
        sel.register(conn, EVENT_READ, conn)

    def on_io(key, mask) -> None:
        sock = key.data
        if mask & EVENT_READ:
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                return
            except OSError:
                close(sock)
                return
            if n == 0:  # EOF; nothing is pending while we read, so all was echoed
                close(sock)
                return
            if inject is not None:
                inject()
            try:
                sent = sock.send(view[:n])
            except BlockingIOError:
                sent = 0
            except OSError:
                close(sock)
                return
            if sent < n:  # partial write: keep the rest, stop reading until it drains
                pending[sock.fileno()] = memoryview(bytes(view[sent:n]))
                sel.modify(sock, EVENT_WRITE, sock)
        elif mask & EVENT_WRITE:
            rest = pending[sock.fileno()]
            try:
                sent = sock.send(rest)
            except BlockingIOError:
                return
            except OSError:
                close(sock)
                return
            if sent == len(rest):
                del pending[sock.fileno()]
                sel.modify(sock, EVENT_READ, sock)
            else:
                pending[sock.fileno()] = rest[sent:]

    on_ready(lsock.getsockname())
    try:
        select_loop(sel, lsock, stop, on_conn, on_io)
    finally:
        for key in list(sel.get_map().values()):
            if isinstance(key.data, socket.socket):
                key.data.close()
        sel.close()
        lsock.close()
        stop.close()
