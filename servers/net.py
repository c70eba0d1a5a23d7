"""Socket set-up shared by every server model, written once.

Address parsing, listening-socket options (``SO_REUSEADDR``, optional
``SO_REUSEPORT``, a large backlog), per-connection ``TCP_NODELAY`` and the
file-descriptor limit live here so that the models differ only in how they
move bytes.
"""

from __future__ import annotations

import errno
import resource
import socket

# A backlog of 5 makes 100 simultaneous connects take over 10 s on this
# kernel (SYN retransmits); ask for the kernel's maximum instead.
DEFAULT_BACKLOG = max(socket.SOMAXCONN, 4096)

# Errors from accept() that mean "out of descriptors or kernel memory right
# now": the server must back off instead of dying or spinning on a listening
# socket that stays readable.
ACCEPT_RESOURCE_ERRORS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
)
# Errors from accept() about one connection that vanished before we took it.
ACCEPT_TRANSIENT_ERRORS = frozenset(
    {errno.ECONNABORTED, errno.EPROTO, errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR}
)


class ServerError(Exception):
    """A problem the user can fix (bad address, port in use): one line, no traceback."""


def format_addr(sockname: tuple) -> str:
    """``host:port`` for IPv4, ``[host]:port`` for IPv6."""
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve(host: str, port: int) -> tuple[int, tuple]:
    """Resolve ``host``/``port`` for a TCP listener: ``(family, sockaddr)``."""
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        msg = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise ServerError(f"invalid host {host!r}: {msg}") from None
    family, _type, _proto, _name, sockaddr = infos[0]
    return family, sockaddr


def listen(
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    backlog: int = DEFAULT_BACKLOG,
    bind_only: bool = False,
) -> socket.socket:
    """Create a bound, listening, non-blocking TCP socket.

    ``reuse_port`` adds ``SO_REUSEPORT`` so that several processes can each
    own a listening socket on one port and the kernel spreads connections.
    ``bind_only`` binds without listening: a placeholder that holds a port in
    a reuse-port group without receiving connections.
    """
    family, sockaddr = resolve(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            raise ServerError(
                f"cannot bind {format_addr(sockaddr)}: {exc.strerror}"
            ) from None
        if not bind_only:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def set_nodelay(sock) -> None:
    """Disable Nagle on an accepted connection: an echo must not wait for more data."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # the peer may already have reset the connection
        pass


def raise_nofile_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the new soft limit.

    A server holding thousands of connections needs one descriptor each; the
    common soft default of 1024 would turn load into EMFILE.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def read_ready_line(stdout, timeout: float) -> tuple[str, int]:
    """Wait for a server process's ready line (``host:port`` or ``[v6]:port``) on its stdout pipe.

    Raises TimeoutError when none comes within ``timeout`` seconds and
    EOFError when the process closed stdout (exited) first.
    """
    import os
    import selectors
    import time

    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError(f"no ready line in {timeout:g} s")
            chunk = os.read(stdout.fileno(), 4096)
            if not chunk:
                raise EOFError("the server exited before it was ready")
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode().strip()
    host, sep, port = line.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"bad ready line {line!r}")
    return host.strip("[]"), int(port)
