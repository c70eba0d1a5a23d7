"""Blocking test clients that check every echoed byte."""

from __future__ import annotations

import socket
import threading

IO_TIMEOUT_S = 30.0


def connect(addr, timeout: float = IO_TIMEOUT_S, rcvbuf: int | None = None) -> socket.socket:
    """A blocking stream connection to ``(host, port)``, or to ``(path, None)`` (a Unix socket)."""
    if addr[1] is None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = addr[0]
    else:
        s = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_STREAM)
        target = addr
    if rcvbuf is not None:  # before connect, so the window is negotiated small
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(target)
    return s


def echo_exact(
    sock: socket.socket,
    payload: bytes,
    chunks: list[int] | None = None,
    recv_size: int = 65536,
    half_close: bool = False,
) -> None:
    """Send ``payload`` in ``chunks`` (sizes) from a thread while reading the echo here.

    Asserts the echo is byte-exact, in order, with nothing extra. With
    ``half_close`` the sender shuts down its write side after the payload and
    the reader also requires EOF after the last byte.
    """
    expected = memoryview(payload)
    send_error: list[BaseException] = []

    def sender() -> None:
        try:
            pos = 0
            for size in chunks or [len(payload)]:
                sock.sendall(expected[pos:pos + size])
                pos += size
            if pos < len(payload):
                sock.sendall(expected[pos:])
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except BaseException as exc:  # reported by the reader below
            send_error.append(exc)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    got = 0
    try:
        while got < len(payload):
            data = sock.recv(min(recv_size, len(payload) - got))
            if not data:
                raise AssertionError(f"EOF after {got} of {len(payload)} bytes")
            if expected[got:got + len(data)] != data:
                first = next(i for i in range(len(data)) if data[i] != payload[got + i])
                raise AssertionError(f"echo differs at byte {got + first} of {len(payload)}")
            got += len(data)
        if half_close:
            extra = sock.recv(1)
            assert extra == b"", f"data after the echo: {extra!r}"
    finally:
        t.join(IO_TIMEOUT_S)
    assert not t.is_alive(), "sender still blocked"
    if send_error:
        raise send_error[0]


def roundtrip(addr, payload: bytes = b"ping\n", timeout: float = 10.0) -> None:
    """One fresh connection, one echo, clean close."""
    with connect(addr, timeout) as s:
        echo_exact(s, payload)
