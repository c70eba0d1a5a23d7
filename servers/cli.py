"""``python -m servers MODEL [--transport tcp|udp|unix] [--host H] [--port P] [--path PATH] [--workers N] [--inner MODEL]``.

Prints one line on stdout once the server accepts traffic: the bound
``host:port`` (TCP and UDP) or ``unix:PATH``; everything else goes to stderr. SIGINT/SIGTERM stop it with
exit code 0. Bad input is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from . import net, registry
from .config import DEFAULT_HOST, DEFAULT_PORT, ServerConfig

EXIT_USAGE = 2
EXIT_FAILURE = 1
PARENT_ENV = "ECHOBENCH_STOP_WITH_PID"  # set by the load generator that started this server (loadgen/target.py)


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports errors in one line (no usage block)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0..65535")
    return port


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    names = list(registry.MODELS)
    p = _OneLineParser(
        prog="python -m servers",
        description="Run one echobench echo server model.",
        epilog="Models: " + ", ".join(names) + ". See --list.",
    )
    p.add_argument("model", nargs="?", metavar="MODEL", help="server model (see --list)")
    p.add_argument("--list", action="store_true", help="list the models, one a line, and exit")
    p.add_argument("--transport", choices=net.TRANSPORTS, default="tcp",
                   help="tcp (default), udp (datagram echo), or unix (a Unix stream socket at --path)")
    p.add_argument("--host", help=f"address to bind (default {DEFAULT_HOST}; UDP too: an echo reachable from "
                   "outside can reflect spoofed traffic)")
    p.add_argument("--port", type=_port, help=f"port to bind, 0 = any free port (default {DEFAULT_PORT})")
    p.add_argument("--path", help="socket file for --transport unix (removed on exit; a stale one is replaced)")
    p.add_argument("--workers", type=_positive, help="worker processes (multi-process models; default: usable CPUs)")
    p.add_argument("--inner", help="model each worker runs (reuseport; default uvloop-protocol)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve TLS 1.3 with this certificate chain (with --tls-key; "
                   "python -m servers.tls DIR makes a session one)")
    p.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    p.add_argument("--burn-ns", type=_positive, help="TEST ONLY: burn this many ns of CPU per received chunk, "
                   "to inject a known regression (selectors, asyncio-protocol, uvloop-protocol)")
    p.add_argument("--burn-loop", type=_positive, help="TEST ONLY: run a loop of this many iterations per received "
                   "chunk: a fixed instruction count, for the cost gate (same models as --burn-ns)")
    return p


def parse_config(argv: list[str] | None) -> ServerConfig | None:
    """Parse and validate; None means ``--list`` was asked for. Exits on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        return None
    if args.model is None:
        parser.error("a MODEL is required (see --list)")
    if args.model not in registry.MODELS:
        parser.error(f"unknown model {args.model!r} (choose from {', '.join(registry.MODELS)})")
    if args.host is not None and not args.host:
        parser.error("--host is empty; to listen on every interface say 0.0.0.0 or :: explicitly")
    model = registry.get(args.model)
    if refusal := model.transport_refusal(args.transport):
        parser.error(refusal)
    if args.transport == "unix":
        if args.path is None:
            parser.error("--transport unix needs --path PATH (the socket file)")
        if args.host is not None or args.port is not None:
            parser.error("--host and --port do not apply to --transport unix (use --path)")
        try:
            net.check_unix_path(args.path)
        except net.ServerError as exc:
            parser.error(str(exc))
    elif args.path is not None:
        parser.error("--path applies only to --transport unix")
    if not model.multiprocess and (args.workers is not None or args.inner is not None):
        parser.error(f"--workers and --inner apply only to multi-process models, not {model.name!r}")
    kwargs = {}
    if args.inner is not None:
        inner = registry.MODELS.get(args.inner)
        if inner is None or inner.multiprocess or inner.external:
            single = [m.name for m in registry.MODELS.values() if not (m.multiprocess or m.external)]
            parser.error(f"--inner must be a single-process model ({', '.join(single)}), not {args.inner!r}")
        kwargs["inner"] = args.inner
    for opt in ("burn_ns", "burn_loop"):
        if getattr(args, opt) is not None:
            if not model.burn:
                supported = [m.name for m in registry.MODELS.values() if m.burn]
                parser.error(f"--{opt.replace('_', '-')} is implemented only by {', '.join(supported)}")
            kwargs[opt] = getattr(args, opt)
    if args.burn_ns is not None and args.burn_loop is not None:
        parser.error("--burn-ns and --burn-loop are exclusive")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_cert is not None:
        if args.transport == "udp":
            parser.error("TLS is for stream transports (tcp, unix), not --transport udp")
        tls_models = [model] + ([registry.get(kwargs.get("inner", ServerConfig.inner))] if model.multiprocess else [])
        for m in tls_models:
            if not m.tls:
                supported = [x.name for x in registry.MODELS.values() if x.tls]
                parser.error(f"model {m.name!r} does not serve TLS (these do: {', '.join(supported)})")
        from . import tls

        try:
            tls.server_context(args.tls_cert, args.tls_key)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            parser.error(f"--tls-cert/--tls-key: cannot load them: {getattr(exc, 'strerror', None) or exc}")
        kwargs["tls_cert"], kwargs["tls_key"] = args.tls_cert, args.tls_key
    needed = [model]
    if model.multiprocess:
        needed.append(registry.get(kwargs.get("inner", ServerConfig.inner)))
    for m in needed:
        if reason := m.unavailable_reason():
            parser.exit(EXIT_FAILURE, f"{parser.prog}: error: model {m.name!r} is unavailable: {reason}\n")
    return ServerConfig(model=model.name, transport=args.transport, path=args.path,
                        host=DEFAULT_HOST if args.host is None else args.host,
                        port=DEFAULT_PORT if args.port is None else args.port, workers=args.workers, **kwargs)


def list_models() -> str:
    lines = []
    for m in registry.MODELS.values():
        reason = m.unavailable_reason()
        suffix = f" [unavailable: {reason}]" if reason else ""
        lines.append(f"{m.name:<18} {m.description} [{'/'.join(m.transports)}]{suffix}")
    return "\n".join(lines)


def stop_with_parent() -> bool:
    """When the process that started this server asked for it (``ECHOBENCH_STOP_WITH_PID``, its PID), SIGTERM
    (a clean stop) as soon as that process dies, however it dies: a load generator killed outright must not leave
    a pinned server behind. Set here, after exec, not in a fork hook of a possibly threaded parent; survives the
    exec of the Go server. The variable is removed so a server's own children do not inherit the request. False
    when the parent is already gone."""
    want = os.environ.pop(PARENT_ENV, None)
    if not want or not want.isdigit():
        return True
    from .procs import die_with_parent

    return die_with_parent(signal.SIGTERM, int(want))  # False: the parent died before the request took effect


def main(argv: list[str] | None = None) -> int:
    if not stop_with_parent():
        return EXIT_FAILURE
    config = parse_config(argv)
    if config is None:
        print(list_models())
        return 0
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s servers[%(process)d] %(levelname)s %(message)s",
    )
    limit = net.raise_nofile_limit()
    model = registry.get(config.model)

    def on_ready(sockname) -> None:
        print(net.format_addr(sockname), flush=True)
        logging.getLogger("servers").info("%s listening on %s (fd limit %d)", config.model, net.format_addr(sockname), limit)

    try:
        model.load()(config, on_ready, **model.options)
    except net.ServerError as exc:
        print(f"python -m servers: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:  # SIGINT before the model installed its handler
        return 0
    finally:
        net.remove_unix_sockets()
    return 0
