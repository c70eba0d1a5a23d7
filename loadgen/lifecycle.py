"""The lifecycle every mode of a run shares, written once (the runner, ``--idle`` and ``--cluster`` use it).

A run owns, for its length: SIGTERM turned into Ctrl-C (so a caller's stop keeps what was measured), the
caller's CPU affinity (restored at the end: an in-process caller such as ``make bench`` plans its next run from
it) and, with ``--server``, the managed server: started pinned to the server CPUs, with a session TLS authority
when the run is over TLS, and stopped, its certificate folder removed, however the run ends.
"""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import replace

from .procs import interrupt


class RunScope:
    """``with RunScope(cfg) as scope:``; ``scope.start_server(cpus)``, ``scope.pin(cpus)``; ``scope.restore()``
    gives SIGTERM and the affinity back early (a mode whose cleanup must not be cut short by a second signal);
    the end of the ``with`` restores them (if not yet), stops the server and removes the TLS folder.

    ``term``: route SIGTERM to KeyboardInterrupt from the start (False: the mode does it itself, for a window
    of its choosing, with :meth:`route_term`)."""

    def __init__(self, cfg, term: bool = True) -> None:
        self.cfg = cfg
        self.term = term
        self.server = None
        self.tls_dir: str | None = None
        self._old_term = None
        self._old_affinity = None

    def __enter__(self) -> "RunScope":
        self._old_affinity = os.sched_getaffinity(0)
        if self.term:
            self.route_term()
        return self

    def route_term(self) -> None:
        """From now on, SIGTERM raises KeyboardInterrupt in this process (until :meth:`restore`)."""
        old = signal.signal(signal.SIGTERM, interrupt)
        if self._old_term is None:
            self._old_term = old

    def pin(self, cpus) -> None:
        """Pin this process to ``cpus`` (restored at the end)."""
        os.sched_setaffinity(0, set(cpus))

    def start_server(self, server_cpus, cert_names: tuple[str, ...] = ()):
        """Start ``cfg.server`` pinned to ``server_cpus``; over TLS with a certificate made for this run (for
        ``cert_names`` too), the load generator trusting only its authority. Returns the config with ``tls_ca``
        set where it was made; the server is ``self.server``."""
        from .runner import session_certs
        from .target import ManagedServer

        cfg = self.cfg
        extra = cfg.server_args
        if cfg.tls:
            self.tls_dir, certs = session_certs(cert_names)
            extra = (*extra, "--tls-cert", certs.cert, "--tls-key", certs.key)
            cfg = self.cfg = replace(cfg, tls_ca=certs.ca)
        self.server = ManagedServer(cfg.server, cfg.host, cfg.server_workers, server_cpus, extra,
                                    transport=cfg.transport, path=cfg.path)
        return cfg

    def restore(self) -> None:
        """SIGTERM's handler and the CPU affinity as they were before the run (idempotent)."""
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)
            self._old_term = None
        if self._old_affinity is not None:
            os.sched_setaffinity(0, self._old_affinity)
            self._old_affinity = None

    def close(self) -> None:
        self.restore()
        if self.server is not None:
            self.server.stop()
        if self.tls_dir is not None:
            shutil.rmtree(self.tls_dir, ignore_errors=True)
            self.tls_dir = None

    def __exit__(self, *exc) -> bool:
        self.close()
        return False
