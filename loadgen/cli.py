"""The load generator's command line: the parser and one check per mode (``python loadgen/run.py``, ``echobench
run``). ``parse_config(argv)`` returns a LoadConfig or exits 2 with one line (the parser's error); the checks run
in a fixed order and the first that fails speaks."""

from __future__ import annotations

import argparse
import math
import os

from loadgen.config import LoadConfig, OneLineParser, parse_cpus, parse_size


def _typed(fn, what):
    def conv(text):
        try:
            return fn(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc) or f"invalid {what} {text!r}") from None
    return conv


def _interval(text: str) -> float:
    x = float(text)
    if not math.isfinite(x) or x <= 0:
        raise ValueError(f"interval must be > 0 seconds, got {text!r}")
    return x


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise ValueError(f"must be at least 1, got {n}")
    return n


def _seconds(text: str) -> float:
    x = float(text.rstrip("s"))
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"invalid duration {text!r}")
    return x


def _rate(text: str) -> float:
    x = float(text)
    if not math.isfinite(x) or x <= 0:
        raise ValueError(f"rate must be > 0, got {text!r}")
    return x


def build_parser() -> argparse.ArgumentParser:
    from servers import registry

    p = OneLineParser(prog="loadgen/run.py", description="Drive an echo server and report throughput, latency and CPU cost honestly.",
                       epilog="Exit codes: 0 ok, 1 integrity failures or errors, 2 usage, 3 incomplete run.")
    g = p.add_argument_group("target")
    g.add_argument("--transport", choices=["tcp", "udp", "unix"], default="tcp",
                   help="tcp (default); udp: datagrams, loss/duplication/reordering counted; unix: a Unix stream socket")
    g.add_argument("--path", help="the server's socket file for --transport unix (with --server: default a fresh temporary one)")
    g.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    g.add_argument("--port", type=_typed(int, "port"), default=25000, help="server port (default 25000)")
    g.add_argument("--server", metavar="MODEL", choices=list(registry.MODELS),
                   help="start this servers-registry model on a free port, pinned, and stop it afterwards")
    g.add_argument("--server-workers", type=_typed(_positive_int, "count"), help="--workers for a multi-process --server model")
    g.add_argument("--server-arg", dest="server_args", action="append", default=[], metavar="ARG",
                   help="an extra argument for the --server model, repeatable (e.g. --server-arg=--inner --server-arg=selectors)")
    g.add_argument("--server-pid", type=_typed(_positive_int, "pid"), help="PID of an external server, for its CPU accounting (children included)")
    g = p.add_argument_group("load")
    g.add_argument("--conns", type=_typed(_positive_int, "count"), default=10, help="concurrent connections (default 10)")
    g.add_argument("--duration", type=_typed(_seconds, "duration"), help="measured seconds (default 10; a --profile "
                   "sets it)")
    g.add_argument("--warmup", type=_typed(_seconds, "duration"), help="seconds of traffic before measuring, discarded "
                   "(default 2; 0 with a --profile, whose first phase plays that part)")
    g.add_argument("--size", type=_typed(parse_size, "size"), default=1024, help="message size in bytes, k/M suffixes (default 1k)")
    g.add_argument("--depth", type=_typed(_positive_int, "count"), default=1, help="messages in flight per connection (default 1)")
    g.add_argument("--rate", type=_typed(_rate, "rate"), help="open loop: total messages/s spread evenly over connections "
                   "(latency then counts from each message's intended send time)")
    g.add_argument("--profile", metavar="PHASES", help="open loop, the rate shaped over time: phases KIND:RATE:DURATION "
                   "separated by commas, KIND hold, ramp (FROM-TO) or spike, rates in msgs/s (60k, 1.5M) or multiples "
                   "of --rate (2x), e.g. ramp:0-60k:10s,hold:60k:20s,spike:150k:5s,hold:30k:20s (docs/loadgen.md)")
    g.add_argument("--interval", type=_typed(_interval, "interval"), help="the timeline's interval in seconds "
                   "(default 0.1 for a run under a minute, else 1): rates, percentiles, server CPU and memory, and "
                   "each interval's latency histogram")
    g.add_argument("--timeout", type=_typed(_seconds, "duration"), help="an echo not complete after this many seconds is lost "
                   "(default 5; UDP 1: a lost datagram is declared lost after it, never waited for)")
    g.add_argument("--connect-timeout", type=_typed(_seconds, "duration"), default=2.0, help="per-connection connect timeout (default 2)")
    g = p.add_argument_group("capacity at a latency SLO")
    g.add_argument("--find-capacity", action="store_true",
                   help="open-loop rate search: ramp up from --start-rate while every --slo holds, then bisect to "
                        "--precision; each step is one run of --warmup + --duration at a planned --rate")
    g.add_argument("--slo", dest="slos", action="append", default=[], metavar="PCT=LIMIT",
                   help="a latency objective on the corrected latency, repeatable, all must hold (e.g. p99=1ms, p99.9=5ms)")
    g.add_argument("--precision", type=_typed(float, "precision"),
                   help="stop bisecting when the bracket is this close (default 0.05 = 5%%)")
    g.add_argument("--start-rate", type=_typed(_rate, "rate"), help="first step's msgs/s (default 1000)")
    g.add_argument("--max-rate", type=_typed(_rate, "rate"), help="never plan more than this many msgs/s")
    g.add_argument("--max-steps", type=_typed(_positive_int, "count"), help="at most this many steps (default 20)")
    g.add_argument("--confirm", action="store_true",
                   help="run the capacity found once more; it must hold again, else the search goes on below it")
    g.add_argument("--sweep", metavar="RATES",
                   help="open-loop steps at fixed planned rates, for latency-versus-load curves: 1000,5k,20k; or, with "
                        "--find-capacity, fractions of the capacity it found: 0.25x,0.5x,0.9x (each step judged as in "
                        "the search; against every --slo when given)")
    g = p.add_argument_group("connection scale (TCP)")
    g.add_argument("--idle", metavar="N[,N...]",
                   help="open N connections (at each level in turn: 1000,5000,10000), prove each with one echo, read "
                        "the server's memory per connection at each level, then hold them --hold seconds")
    g.add_argument("--connect-rate", type=_typed(_rate, "rate"), help="--idle: pace the connects at this many per second "
                   "(default: as fast as 256 connects in flight allow)")
    g.add_argument("--hold", type=_typed(_seconds, "duration"), help="--idle: seconds to hold the connections (default 2)")
    g.add_argument("--trickle", type=_typed(_interval, "interval"),
                   help="--idle: while holding, each connection echoes one --size message every this many seconds "
                        "(staggered), every byte checked")
    g.add_argument("--source-addrs", metavar="ADDR[,ADDR...]",
                   help="--idle: connect from these local addresses in turn (default: 127.0.0.1, 127.0.0.2, ... as many "
                        "as ~28,000 local ports per address and destination need, for a loopback target)")
    g.add_argument("--max-connect-failures", type=_typed(_positive_int, "count"),
                   help="--idle: stop opening connections once this many have failed, and say why (default 200): a "
                        "server past its limit would otherwise cost a timeout per connection")
    g = p.add_argument_group("scale")
    g.add_argument("--workers", type=_typed(_positive_int, "count"), help="load-generator processes; connections are spread over them and results merged exactly (default 1; with --idle, as many as the descriptor limit needs)")
    g.add_argument("--cpus", type=_typed(parse_cpus, "CPU list"), help="CPUs for the load generator (default: the upper half of the usable CPUs when --server is used)")
    g.add_argument("--server-cpus", type=_typed(parse_cpus, "CPU list"), help="CPUs for a --server (default: the lower half)")
    g.add_argument("--engine", choices=["auto", "native", "python"], default="auto",
                   help="the per-message loop: native (C, TCP and Unix sockets) or python (any transport; UDP always "
                        "runs on it); auto (default): native where it was built, else python, said on stderr")
    g.add_argument("--tls", action="store_true",
                   help="TLS 1.3 over TCP or a Unix socket, the server's certificate verified (with --server: a "
                        "certificate made for this run; else --tls-ca). Runs on the Python engine")
    g.add_argument("--tls-ca", metavar="PEM", help="--tls: the authority to verify the server against (python -m "
                   "servers.tls DIR makes one with a server certificate)")
    g.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                   help="the Python engine's event loop (default uvloop)")
    g = p.add_argument_group("several client hosts (Dask distributed: pip install 'echobench[cluster]')")
    g.add_argument("--cluster", metavar="ADDRESS",
                   help="spread the connections over the workers of this Dask scheduler (tcp://HOST:8786, "
                        "tls://HOST:8786), one share per worker (= client host), all starting at one instant; "
                        "results merged exactly, with a `hosts` list in the JSON. --workers and --cpus then apply "
                        "on each host; the server must be reachable from every host (--host)")
    g.add_argument("--cluster-workers", metavar="NAME[,NAME...]",
                   help="--cluster: only these Dask workers, by name (dask worker --name) or address (default: all)")
    g.add_argument("--max-clock-offset", type=_typed(_seconds, "duration"), metavar="SECONDS",
                   help="--cluster: refuse a host whose clock is further than this from this host's (default 0.01)")
    g.add_argument("--cluster-tls", metavar="CA,CERT,KEY",
                   help="--cluster with a tls:// scheduler: the authority, this client's certificate and key (PEM files)")
    g = p.add_argument_group("output")
    g.add_argument("--json", dest="json_path", metavar="PATH", help="write the versioned result document here")
    g.add_argument("--hdr", dest="hdr_path", metavar="PATH", help="write the HdrHistogram percentile distribution (us) here")
    g.add_argument("--force", action="store_true", help="overwrite existing --json/--hdr files")
    g.add_argument("--quiet", action="store_true", help="nothing on stderr (results still go to stdout and files)")
    g.add_argument("--quiet-host", action="store_true", help="refuse to start (exit 3) while other processes use "
                   "more than 5%% of the CPUs this run would pin, naming the busiest (loadgen/hostload.py)")
    return p


def _check_profile(a, p) -> None:
    """--profile: parsed (its rates resolved against --rate), the run's duration taken from it, and what it cannot
    be combined with; without it, the default duration and warm-up."""
    if not a.profile:
        a.duration = 10.0 if a.duration is None else a.duration
        a.warmup = 2.0 if a.warmup is None else a.warmup
        return
    from loadgen.profile import ProfileError, parse

    clash = [o for o, v in (("--duration", a.duration), ("--warmup", a.warmup or None), ("--find-capacity", a.find_capacity or None),
                            ("--sweep", a.sweep), ("--idle", a.idle), ("--cluster", a.cluster)) if v is not None]
    if clash:
        p.error(f"--profile sets the load and the duration: drop {', '.join(clash)}")
    try:
        prof = parse(a.profile, base=a.rate)
    except ProfileError as exc:
        p.error(f"--profile: {exc}")
    a.profile = prof.canonical()  # rates resolved: what the workers and the result document read
    a.duration, a.warmup = prof.duration_s, 0.0
    a.rate = prof.total / prof.duration_s  # the mean offered rate: open loop


def _check_target(a, p) -> None:
    """The server side and the outputs: --server or --server-pid, workers, CPUs, the JSON/HDR files."""
    if a.server and a.server_pid:
        p.error("--server and --server-pid are exclusive: --server already knows its PID")
    if a.server_workers is not None and not a.server:
        p.error("--server-workers needs --server")
    if a.duration <= 0:
        p.error("--duration must be > 0")
    if a.cpus and a.server_cpus and set(a.cpus) & set(a.server_cpus):
        p.error("--cpus and --server-cpus overlap: the two sides must not share CPUs")
    for path in (a.json_path, a.hdr_path):
        if path and os.path.exists(path) and not a.force:
            p.error(f"{path} exists; refusing to overwrite it (use --force)")
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            p.error(f"the folder for {path} does not exist")
    if a.server and a.server_workers and not __import__("servers.registry", fromlist=["get"]).get(a.server).multiprocess:
        p.error(f"--server-workers applies only to multi-process models, not {a.server!r}")
    if a.server_args and not a.server:
        p.error("--server-arg needs --server")


def _check_transport(a, p) -> None:
    """The transport: a Unix socket's path, a UDP datagram's size, what the model serves; the timeout."""
    if a.transport == "unix":
        if a.path:  # the server (started in the repo root) and the workers must mean the same file
            a.path = os.path.abspath(a.path)
        if a.path is None and not a.server:
            p.error("--transport unix needs --path (the server's socket file), or --server to start one")
        if a.path is not None:
            from servers.net import ServerError, check_unix_path

            try:
                check_unix_path(a.path)
            except ServerError as exc:
                p.error(str(exc))
    elif a.path is not None:
        p.error("--path applies only to --transport unix")
    if a.transport == "udp":
        from loadgen.payload import HEADER_SIZE
        from servers.net import UDP_MAX_PAYLOAD

        if not HEADER_SIZE <= a.size <= UDP_MAX_PAYLOAD:
            p.error(f"--size over UDP must be {HEADER_SIZE} to {UDP_MAX_PAYLOAD} bytes "
                    f"(a datagram carries connection and sequence, and fits one IPv4 packet), got {a.size}")
    if a.server:
        from servers import registry

        if refusal := registry.get(a.server).transport_refusal(a.transport):
            p.error(refusal)
    if a.timeout is None:
        a.timeout = 1.0 if a.transport == "udp" else 5.0


def _check_search(a, p) -> None:
    """--find-capacity and --sweep: their options only with them, the SLOs and sweep parsed."""
    search_opts = [o for o, v in (("--precision", a.precision), ("--start-rate", a.start_rate),
                                  ("--max-rate", a.max_rate), ("--max-steps", a.max_steps),
                                  ("--confirm", a.confirm or None)) if v is not None]
    if search_opts and not a.find_capacity:
        p.error(f"{', '.join(search_opts)} applies to --find-capacity")
    if a.slos and not (a.find_capacity or a.sweep or a.profile):
        p.error("--slo applies to --find-capacity, --sweep or --profile (its p99 judges recovery from a spike)")
    if a.profile:
        from loadgen.modes.capacity import parse_slo

        for text in a.slos:
            try:
                parse_slo(text)
            except ValueError as exc:
                p.error(str(exc))
    a.precision = 0.05 if a.precision is None else a.precision
    a.start_rate = 1000.0 if a.start_rate is None else a.start_rate
    a.max_steps = 20 if a.max_steps is None else a.max_steps
    if a.find_capacity or a.sweep:
        from loadgen.modes.capacity import parse_slo, parse_sweep

        if a.find_capacity and not a.slos:
            p.error("--find-capacity needs at least one --slo (e.g. --slo p99=1ms)")
        if a.rate is not None:
            p.error(f"{'--find-capacity' if a.find_capacity else '--sweep'} chooses the rates itself: drop --rate")
        if not 0 < a.precision < 1:
            p.error("--precision must be between 0 and 1")
        if a.start_rate < 1 or (a.max_rate is not None and a.max_rate < a.start_rate):
            p.error("--start-rate must be at least 1 msgs/s, and --max-rate at least --start-rate")
        for text in a.slos:
            try:
                parse_slo(text)
            except ValueError as exc:
                p.error(str(exc))
        if a.sweep:
            try:
                entries = parse_sweep(a.sweep)
            except ValueError as exc:
                p.error(str(exc))
            if any(f for _v, f in entries) and not a.find_capacity:
                p.error("--sweep fractions (0.5x) are of the capacity --find-capacity finds: add --find-capacity "
                        "and --slo, or give rates in msgs/s")


def _check_idle_flags(a, p) -> None:
    """--idle's options only with --idle."""
    idle_opts = [o for o, v in (("--connect-rate", a.connect_rate), ("--hold", a.hold), ("--trickle", a.trickle),
                                ("--source-addrs", a.source_addrs), ("--max-connect-failures", a.max_connect_failures))
                 if v is not None]
    if idle_opts and not a.idle:
        p.error(f"{', '.join(idle_opts)} applies to --idle")
    a.hold = 2.0 if a.hold is None else a.hold


def _check_tls(a, p) -> None:
    """--tls: a stream transport, the Python engine, an authority that loads, a model that serves TLS."""
    if a.tls_ca and not a.tls:
        p.error("--tls-ca applies to --tls")
    if a.tls:
        if a.transport == "udp":
            p.error("--tls is for stream transports (tcp, unix), not --transport udp")
        if a.idle:
            p.error("--idle measures plain TCP connections: drop --tls")
        if a.engine == "native":
            p.error("--engine native does not speak TLS: --tls runs on the Python engine (--engine python or auto)")
        if a.tls_ca and not os.path.isfile(a.tls_ca):
            p.error(f"--tls-ca {a.tls_ca}: no such file")
        if a.tls_ca:
            from servers.tls import client_context

            try:
                client_context(a.tls_ca)
            except (OSError, ValueError) as exc:  # ssl.SSLError: not a PEM certificate
                p.error(f"--tls-ca {a.tls_ca}: cannot load it: {getattr(exc, 'strerror', None) or exc}")
        if a.server and a.tls_ca:
            p.error("--tls-ca is for an external server: with --server the run makes and trusts its own certificate")
        if a.server:
            from servers import registry as _reg

            if not _reg.get(a.server).tls:  # (a reuseport --inner without TLS is refused by the server itself)
                p.error(f"--tls: model {a.server!r} does not serve TLS (these do: "
                        f"{', '.join(n for n, y in _reg.MODELS.items() if y.tls)})")


def _check_idle(a, p) -> None:
    """--idle: its connection levels, its source addresses, and what it cannot be combined with."""
    if a.idle:
        try:
            levels = [int(x) for x in a.idle.split(",")]
        except ValueError:
            p.error(f"--idle takes connection counts, e.g. 1000 or 1000,5000,10000; got {a.idle!r}")
        if not levels or any(n < 1 for n in levels) or levels != sorted(set(levels)):
            p.error(f"--idle takes increasing positive connection counts, e.g. 1000,5000,10000; got {a.idle!r}")
        if a.transport != "tcp":
            p.error("--idle measures TCP connections (--transport tcp)")
        clash = [o for o, v in (("--rate", a.rate), ("--find-capacity", a.find_capacity or None), ("--sweep", a.sweep))
                 if v is not None]
        if clash:
            p.error(f"--idle runs no traffic of its own: drop {', '.join(clash)}")
        a.idle = tuple(levels)
        a.workers = a.workers or 0  # 0: as many processes as the descriptor limit needs
        srcs = ()
        if a.source_addrs:
            import ipaddress

            srcs = tuple(x.strip() for x in a.source_addrs.split(",") if x.strip())
            try:
                for x in srcs:
                    ipaddress.ip_address(x)
            except ValueError:
                p.error(f"--source-addrs takes IP addresses, e.g. 127.0.0.2,127.0.0.3; got {a.source_addrs!r}")
            if not srcs:
                p.error(f"--source-addrs takes IP addresses, e.g. 127.0.0.2,127.0.0.3; got {a.source_addrs!r}")
        a.source_addrs = srcs
        a.max_connect_failures = a.max_connect_failures or 200
        a.conns = levels[-1]  # what the descriptor check plans for
    else:
        a.idle = ()
        a.workers = a.workers or 1
        a.source_addrs = ()
        a.max_connect_failures = 200


def _check_cluster(a, p) -> None:
    """--cluster: the scheduler address, its TLS files, and what a cluster run cannot be."""
    cluster_opts = [o for o, v in (("--cluster-workers", a.cluster_workers), ("--max-clock-offset", a.max_clock_offset),
                                   ("--cluster-tls", a.cluster_tls)) if v is not None]
    if cluster_opts and not a.cluster:
        p.error(f"{', '.join(cluster_opts)} applies to --cluster")
    a.max_clock_offset = 0.010 if a.max_clock_offset is None else a.max_clock_offset
    a.cluster_workers = tuple(x.strip() for x in (a.cluster_workers or "").split(",") if x.strip())
    tls_files = tuple(x.strip() for x in (a.cluster_tls or "").split(",") if x.strip())
    if a.cluster:
        if not a.cluster.startswith(("tcp://", "tls://")) or not a.cluster.split("://", 1)[1]:
            p.error(f"--cluster takes a Dask scheduler address, tcp://HOST:8786 or tls://HOST:8786; got {a.cluster!r}")
        clash = [o for o, v in (("--idle", a.idle), ("--find-capacity", a.find_capacity), ("--sweep", a.sweep)) if v]
        if clash:
            p.error(f"--cluster runs one closed- or open-loop run: drop {', '.join(clash)}")
        if a.transport == "unix":
            p.error("--cluster needs a network transport (tcp, udp): a Unix socket is not reachable from other hosts")
        if a.cluster.startswith("tls://") != bool(tls_files):
            p.error("a tls:// scheduler needs --cluster-tls CA,CERT,KEY, and --cluster-tls needs a tls:// scheduler")
        if tls_files:
            if len(tls_files) != 3:
                p.error("--cluster-tls takes three PEM files: CA,CERT,KEY")
            for f in tls_files:
                if not os.path.isfile(f):
                    p.error(f"--cluster-tls: {f}: no such file")
    a.cluster_tls = tuple(os.path.abspath(f) for f in tls_files)


def parse_config(argv) -> LoadConfig:
    """The command line as a LoadConfig; bad arguments are one line on stderr and exit 2 (the parser's error).
    The checks run in this order, the first that fails speaks: the load profile, the server side, the transport, the capacity
    search, the flags of --idle, TLS, --idle itself, --cluster."""
    p = build_parser()
    a = p.parse_args(argv)
    for check in (_check_profile, _check_target, _check_transport, _check_search, _check_idle_flags, _check_tls, _check_idle,
                  _check_cluster):
        check(a, p)
    fields = {k: v for k, v in vars(a).items()}
    fields["server_args"] = tuple(a.server_args)
    fields["slos"] = tuple(a.slos)
    return LoadConfig(**fields)
