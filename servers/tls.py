"""TLS for the echo servers: one server context (TLS 1.3 only), and a session certificate authority.

``python -m servers.tls DIR`` writes ``ca.pem`` (the authority a client trusts), ``server.pem`` and
``server.key`` (a certificate for 127.0.0.1, ::1 and localhost signed by it), made fresh with ``trustme``:
nothing secret is committed, and a certificate made for one session is trusted by nothing else.

    .venv/bin/python -m servers.tls /tmp/echo-tls
    .venv/bin/python -m servers uvloop-protocol --tls-cert /tmp/echo-tls/server.pem --tls-key /tmp/echo-tls/server.key
    .venv/bin/python loadgen/run.py --port 25000 --tls --tls-ca /tmp/echo-tls/ca.pem
    openssl s_client -connect 127.0.0.1:25000 -CAfile /tmp/echo-tls/ca.pem -tls1_3 -quiet
"""

from __future__ import annotations

import os
import ssl
import sys
from dataclasses import dataclass

IDENTITIES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class SessionCerts:
    ca: str
    cert: str
    key: str


def unavailable_reason() -> str | None:
    """Why session certificates cannot be made here (the ``trustme`` package is missing), or None."""
    import importlib.util

    if importlib.util.find_spec("trustme") is None:
        return "needs the 'trustme' package (make venv installs it: echobench[models])"
    return None


def make_session_certs(directory: str, extra_names: tuple[str, ...] = ()) -> SessionCerts:
    """A fresh authority and a server certificate for the loopback names (and ``extra_names``: the address a
    --cluster run's server listens on), written into ``directory``."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert(*IDENTITIES, *(n for n in extra_names if n not in IDENTITIES))
    paths = SessionCerts(os.path.join(directory, "ca.pem"), os.path.join(directory, "server.pem"),
                         os.path.join(directory, "server.key"))
    ca.cert_pem.write_to_path(paths.ca)
    leaf.cert_chain_pems[0].write_to_path(paths.cert)
    for extra in leaf.cert_chain_pems[1:]:
        extra.write_to_path(paths.cert, append=True)
    leaf.private_key_pem.write_to_path(paths.key)
    os.chmod(paths.key, 0o600)
    return paths


def server_context(cert: str, key: str, context_class=ssl.SSLContext) -> ssl.SSLContext:
    """TLS 1.3 only, the certificate and key given (ssl.SSLError / OSError when they cannot be loaded).
    ``context_class``: gevent needs its own (``gevent.ssl.SSLContext``: its sockets wait cooperatively)."""
    ctx = context_class(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key, password=lambda: b"")  # an encrypted key fails here, never prompts on a tty
    return ctx


def client_context(ca: str | None) -> ssl.SSLContext:
    """What the load generator and the tests connect with: TLS 1.3, the server's certificate verified against
    ``ca`` (the system's authorities when None), its name checked."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def context_for(config, context_class=ssl.SSLContext) -> ssl.SSLContext | None:
    """The server context a model's ``ServerConfig`` asks for, or None for plain TCP."""
    if not config.tls_cert:
        return None
    return server_context(config.tls_cert, config.tls_key, context_class)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = "usage: python -m servers.tls DIR  (writes a session authority and a server certificate: ca.pem, server.pem, server.key)"
    if argv in (["-h"], ["--help"]):
        print(usage)
        return 0
    if len(argv) != 1 or argv[0].startswith("-"):  # an option is never a folder name
        print(usage if not argv or len(argv) > 1 else f"python -m servers.tls: error: unknown option {argv[0]!r} ({usage})",
              file=sys.stderr)
        return 2
    if reason := unavailable_reason():
        print(f"python -m servers.tls: error: {reason}", file=sys.stderr)
        return 1
    try:
        os.makedirs(argv[0], exist_ok=True)
        paths = make_session_certs(argv[0])
    except OSError as exc:
        print(f"python -m servers.tls: error: {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"ca {paths.ca}\ncert {paths.cert}\nkey {paths.key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
