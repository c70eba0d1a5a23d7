"""The one configuration object every server model receives."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .net import DEFAULT_BACKLOG

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 25000
# Bytes asked of the kernel per recv(): large enough for one call to drain a
# typical socket buffer, small enough to bound what one connection holds.
READ_CHUNK = 64 * 1024


def default_workers() -> int:
    """The number of CPUs this process may run on (respects taskset/cgroups pinning)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ServerConfig:
    """Parsed once by the CLI; nothing below it sees argparse."""

    model: str
    transport: str = "tcp"  # "tcp", "udp" or "unix" (see registry.Model.transports)
    path: str | None = None  # the socket file, for transport "unix"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int | None = None  # multi-process models only; None = default_workers()
    inner: str = "uvloop-protocol"  # the model each reuseport worker runs
    backlog: int = DEFAULT_BACKLOG
    reuse_port: bool = False  # set for the listening socket of a reuseport worker
    burn_ns: int = 0  # test-only: CPU burned per received chunk, to inject a known regression
    burn_loop: int = 0  # test-only: loop iterations per received chunk (a fixed instruction count: the cost gate)
    tls_cert: str | None = None  # serve TLS 1.3 with this certificate (PEM) and tls_key; None = plain
    tls_key: str | None = None
