"""The one list of server models.

The CLI's choices, ``make bench`` and the parametrized tests all read
``MODELS``. A model is named by ``"module:function"`` and imported only when
chosen, so uvloop is loaded only if a uvloop model is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Model:
    name: str
    target: str  # "servers.module:function", called as function(config, on_ready, **options)
    description: str
    requires: tuple[str, ...] = ()  # importable modules the model needs
    options: dict[str, Any] = field(default_factory=dict)
    multiprocess: bool = False  # takes --workers (and --inner)
    asyncio_based: bool = False  # may run inside a reuseport worker
    burn: bool = False  # implements the test-only --burn-ns and --burn-loop
    check: str | None = None  # "module:function" returning a reason it cannot run, or None
    external: bool = False  # execs another program (cannot run inside a reuseport worker)
    transports: tuple[str, ...] = ("tcp", "unix")  # what --transport accepts; stream models get Unix sockets free
    tls: bool = False  # serves TLS over its stream transports (--tls-cert/--tls-key)

    def unavailable_reason(self) -> str | None:
        """Why this model cannot run here, or None when it can."""
        for mod in self.requires:
            if importlib.util.find_spec(mod) is None:
                return f"needs the {mod!r} package, which is not installed"
        if self.check:
            module, _, func = self.check.partition(":")
            return getattr(importlib.import_module(module), func)()
        return None

    def transport_refusal(self, transport: str) -> str | None:
        """Why this model cannot serve ``transport`` (one line for a CLI), or None when it can."""
        if transport in self.transports:
            return None
        return f"model {self.name!r} does not support --transport {transport} (it supports {', '.join(self.transports)})"

    def load(self) -> Callable[..., None]:
        module, _, func = self.target.partition(":")
        return getattr(importlib.import_module(module), func)


_MODELS = [
    Model(
        "threads",
        "servers.threads:serve",
        "a thread per connection with blocking sockets (the goroutine-per-connection twin)",
        transports=("tcp", "unix", "udp"),
        tls=True,
    ),
    Model(
        "asyncio-streams",
        "servers.aio_streams:serve",
        "asyncio.start_server with StreamReader/StreamWriter and drain()",
        options={"loop": "asyncio"},
        asyncio_based=True,
        tls=True,
    ),
    Model(
        "asyncio-protocol",
        "servers.aio_protocol:serve",
        "asyncio.Protocol with flow control (pause reading while the write buffer is high)",
        options={"loop": "asyncio"},
        asyncio_based=True,
        burn=True,
        transports=("tcp", "unix", "udp"),
        tls=True,
    ),
    Model(
        "uvloop-streams",
        "servers.aio_streams:serve",
        "the asyncio-streams code path on uvloop's event loop",
        requires=("uvloop",),
        options={"loop": "uvloop"},
        asyncio_based=True,
        tls=True,
    ),
    Model(
        "uvloop-protocol",
        "servers.aio_protocol:serve",
        "the asyncio-protocol code path on uvloop's event loop",
        requires=("uvloop",),
        options={"loop": "uvloop"},
        asyncio_based=True,
        burn=True,
        transports=("tcp", "unix", "udp"),
        tls=True,
    ),
    Model(
        "gevent",
        "servers.gevent_model:serve",
        "gevent.server.StreamServer: a greenlet per connection, blocking-style code on one thread (no monkey-patching)",
        requires=("gevent",),
        tls=True,
    ),
    Model(
        "trio",
        "servers.trio_model:serve",
        "trio.serve_listeners: a task per connection in one nursery (structured concurrency)",
        requires=("trio",),
        tls=True,
    ),
    Model(
        "reuseport",
        "servers.reuseport:serve",
        "N supervised worker processes, each with its own SO_REUSEPORT listener (default inner: uvloop-protocol)",
        multiprocess=True,
        transports=("tcp",),  # SO_REUSEPORT groups are a TCP listener feature here
        tls=True,
    ),
    Model(
        "go",
        "servers.gomodel:serve",
        "the Go reference: goroutine per connection, io.Copy-style (the study's own server)",
        check="servers.gomodel:unavailable_reason",
        external=True,
        transports=("tcp", "unix", "udp"),
        tls=True,
    ),
    Model(
        "go-1proc",
        "servers.gomodel:serve",
        "the Go reference with GOMAXPROCS=1, for a one-core comparison",
        check="servers.gomodel:unavailable_reason",
        external=True,
        options={"gomaxprocs": 1},
        transports=("tcp", "unix", "udp"),
        tls=True,
    ),
    Model(
        "selectors",
        "servers.select_loop:serve",
        "a single-threaded non-blocking selectors loop: the no-framework baseline",
        burn=True,
        transports=("tcp", "unix", "udp"),
    ),
]

MODELS: dict[str, Model] = {m.name: m for m in _MODELS}


def get(name: str) -> Model:
    """The model called ``name``; KeyError if there is none."""
    return MODELS[name]
