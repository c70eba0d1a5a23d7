"""Socket set-up shared by every server model, written once.

Address parsing, listening-socket options (``SO_REUSEADDR``, optional
``SO_REUSEPORT``, a large backlog), per-connection ``TCP_NODELAY`` and the
file-descriptor limit live here so that the models differ only in how they
move bytes.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
import stat

log = logging.getLogger("servers")

TRANSPORTS = ("tcp", "udp", "unix")
# sockaddr_un.sun_path is 108 bytes on Linux, one of them the terminating NUL.
UNIX_PATH_MAX = 107
# The largest UDP payload over IPv4 (65,535 - 8 UDP - 20 IP header bytes).
UDP_MAX_PAYLOAD = 65507

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


def format_addr(sockname) -> str:
    """``host:port`` for IPv4, ``[host]:port`` for IPv6, ``unix:PATH`` for a Unix socket."""
    if isinstance(sockname, (str, bytes)):
        return f"unix:{os.fsdecode(sockname)}"
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve(host: str, port: int, kind: int = socket.SOCK_STREAM) -> tuple[int, tuple]:
    """Resolve ``host``/``port`` for a listener of ``kind``: ``(family, sockaddr)``."""
    try:
        infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
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
    sock = _bound(host, port, socket.SOCK_STREAM, reuse_port)
    try:
        if not bind_only:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _bound(host: str, port: int, kind: int, reuse_port: bool) -> socket.socket:
    """A non-blocking socket of ``kind`` bound to host:port (``SO_REUSEADDR``, optional ``SO_REUSEPORT``, v6-only)."""
    family, sockaddr = resolve(host, port, kind)
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            what = "udp " if kind == socket.SOCK_DGRAM else ""
            raise ServerError(f"cannot bind {what}{format_addr(sockaddr)}: {exc.strerror}") from None
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_udp(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking UDP socket.

    An echo over UDP answers whatever source address a datagram claims, so a
    reachable one can be abused to reflect traffic at a spoofed victim. The
    CLI's default host is loopback for that reason; binding anything else is
    an explicit choice.
    """
    return _bound(host, port, socket.SOCK_DGRAM, reuse_port)


# Unix socket files this process created: (path, inode), removed by remove_unix_sockets().
_created_unix: list[tuple[str, int]] = []


def check_unix_path(path: str) -> None:
    """Refuse a path that cannot be a socket address; one line for the user."""
    if not path:
        raise ServerError("--path is empty")
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ServerError(f"unix socket path is {len(os.fsencode(path))} bytes; Linux allows at most {UNIX_PATH_MAX}: {path}")


def clear_stale_unix_path(path: str) -> None:
    """Make ``path`` free for a new Unix socket, or say why it is not.

    A socket file left by a server that was killed (SIGKILL, power loss)
    answers ``connect`` with ECONNREFUSED: it is removed, with a line on
    stderr. A socket some server still listens on, or a file that is not a
    socket at all, is never touched.
    """
    check_unix_path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ServerError(f"cannot use {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ServerError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        log.warning("removed a stale socket file %s (nothing was listening on it)", path)
        return
    except OSError as exc:  # EAGAIN: a live server whose backlog is full
        raise ServerError(f"{path} is in use by a running server ({exc.strerror or exc})") from None
    finally:
        probe.close()
    raise ServerError(f"{path} is in use by a running server; stop it or choose another --path")


def listen_unix(path: str, *, backlog: int = DEFAULT_BACKLOG) -> socket.socket:
    """A listening, non-blocking Unix stream socket at ``path`` (stale files cleared first)."""
    clear_stale_unix_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(path)
        except OSError as exc:
            raise ServerError(f"cannot bind unix:{path}: {exc.strerror}") from None
        _created_unix.append((path, os.lstat(path).st_ino))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def remove_unix_sockets() -> None:
    """Remove the socket files this process created, if they are still ours."""
    while _created_unix:
        path, ino = _created_unix.pop()
        try:
            if os.lstat(path).st_ino == ino:
                os.unlink(path)
        except OSError:
            pass


def stream_listener(config) -> socket.socket:
    """The listening socket for a stream model: TCP at host:port, or Unix at ``config.path``."""
    if config.transport == "unix":
        return listen_unix(config.path, backlog=config.backlog)
    return listen(config.host, config.port, reuse_port=config.reuse_port, backlog=config.backlog)


def set_nodelay(sock) -> None:
    """Disable Nagle on an accepted connection: an echo must not wait for more data."""
    if sock is None or sock.family == socket.AF_UNIX:  # no Nagle on a Unix socket
        return
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


def read_ready_line(stdout, timeout: float) -> tuple[str, int | None]:
    """Wait for a server process's ready line on its stdout pipe.

    ``host:port`` or ``[v6]:port`` (TCP and UDP) gives ``(host, port)``;
    ``unix:PATH`` gives ``(PATH, None)``.

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
    if line.startswith("unix:") and len(line) > 5:
        return line[5:], None
    host, sep, port = line.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"bad ready line {line!r}")
    return host.strip("[]"), int(port)
