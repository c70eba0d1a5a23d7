"""The load generator's configuration: parsed once, frozen, passed down."""

from __future__ import annotations

import argparse
import re
from dataclasses import asdict, dataclass


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit 2, no usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_size(text: str) -> int:
    """``1024``, ``1k``/``1K``/``1KiB`` (1024), ``16k``, ``1M``/``1MiB`` (1048576) -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*", text)
    if not m:
        raise ValueError(f"invalid size {text!r} (examples: 64, 1k, 16k, 1M)")
    n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    if n < 1:
        raise ValueError("size must be at least 1 byte")
    return n


def parse_cpus(text: str) -> tuple[int, ...]:
    """``0``, ``0,2``, ``0-3``, ``0-1,4`` -> a sorted tuple of CPU numbers."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if lo > hi:
                    raise ValueError
                cpus.update(range(lo, hi + 1))
            else:
                cpus.add(int(part))
    except ValueError:
        raise ValueError(f"invalid CPU list {text!r} (examples: 1, 0-1, 0,2)") from None
    if not cpus or min(cpus) < 0:
        raise ValueError(f"invalid CPU list {text!r}")
    return tuple(sorted(cpus))


@dataclass(frozen=True)
class LoadConfig:
    transport: str = "tcp"  # "tcp", "udp" or "unix"
    path: str | None = None  # the server's socket file, for transport "unix"
    host: str = "127.0.0.1"
    port: int = 25000
    server: str | None = None  # a servers-registry model to start, or None for an external server
    server_workers: int | None = None
    server_pid: int | None = None
    server_args: tuple[str, ...] = ()  # extra arguments for a --server model (e.g. --inner MODEL)
    conns: int = 10
    duration: float = 10.0
    warmup: float = 2.0
    size: int = 1024
    depth: int = 1
    rate: float | None = None  # messages/s over all connections; None = closed loop (with a profile: its mean)
    profile: str | None = None  # --profile: the open-loop rate over time (loadgen/profile.py), rates resolved
    interval: float | None = None  # --interval: the timeline's interval in seconds (None: tick_s decides)
    workers: int = 1
    cpus: tuple[int, ...] | None = None  # load generator's CPUs
    server_cpus: tuple[int, ...] | None = None
    timeout: float = 5.0  # an echo not back after this long is lost (run.py defaults UDP to 1 s)
    connect_timeout: float = 2.0
    loop: str = "uvloop"
    engine: str = "auto"  # "native" (C, stream transports), "python", or "auto": native where it was built
    engine_note: str | None = None  # why a run did not get the engine it asked for (set by the runner)
    tls: bool = False  # TLS 1.3 over the stream transport, the server's certificate verified against tls_ca
    tls_ca: str | None = None  # PEM of the authority to trust (with --server: the run's own session authority)
    json_path: str | None = None
    hdr_path: str | None = None
    quiet: bool = False
    quiet_host: bool = False  # refuse to start while other processes use the CPUs the run would pin
    force: bool = False
    seed: int = 0
    # --find-capacity: an open-loop rate search for the highest rate meeting every --slo (loadgen/modes/capacity.py)
    find_capacity: bool = False
    slos: tuple[str, ...] = ()
    precision: float = 0.05
    start_rate: float = 1000.0
    max_steps: int = 20
    max_rate: float | None = None
    # --idle: connection scale (loadgen/modes/idle.py)
    idle: tuple[int, ...] = ()
    connect_rate: float | None = None
    hold: float = 2.0
    trickle: float | None = None
    source_addrs: tuple[str, ...] = ()  # --idle: local addresses to connect from (() = as many 127.0.0.x as needed)
    max_connect_failures: int | None = 200  # --idle: a level stops opening connections after this many failed
    confirm: bool = False  # --confirm: the capacity found must hold on a second run
    # --cluster: the load comes from the workers of a Dask cluster, one share per worker (loadgen/modes/cluster.py)
    cluster: str | None = None  # the scheduler's address, tcp://HOST:8786 or tls://HOST:8786
    cluster_workers: tuple[str, ...] = ()  # the Dask workers to use, by address or name (() = every one)
    cluster_tls: tuple[str, ...] = ()  # (CA, certificate, key) PEM files for a tls:// scheduler
    max_clock_offset: float = 0.010  # seconds: a host whose clock is further off this one's is refused
    sweep: str | None = None  # --sweep: planned rates, or fractions of the capacity found (loadgen/modes/capacity.py)

    @property
    def tick_s(self) -> float:
        """The timeline's interval: ``interval`` when given, else 100 ms for a run under a minute, 1 s beyond."""
        if self.interval is not None:
            return self.interval
        return 0.1 if self.warmup + self.duration < 60 else 1.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["server_args"] = list(d["server_args"])
        d["slos"] = list(d["slos"])
        d["idle"] = list(d["idle"])
        d["source_addrs"] = list(d["source_addrs"])
        d["cluster_workers"] = list(d["cluster_workers"])
        d["cluster_tls"] = list(d["cluster_tls"])
        for k in ("cpus", "server_cpus"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d
