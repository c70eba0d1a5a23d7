"""``reuseport``: N worker processes, each with its own ``SO_REUSEPORT`` listener.

The kernel spreads incoming connections across the workers' listening
sockets, so there is no shared accept queue and no hand-off. The parent
holds the port with a bound, non-listening ``SO_REUSEPORT`` socket (so
``--port 0`` resolves once and a replacement worker can always rebind), runs
no event loop, and supervises: a worker that dies is reported on stderr and
replaced.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from dataclasses import replace

from . import net, registry
from .config import ServerConfig, default_workers
from .loop_control import StopSignal
from .procs import die_with_parent

log = logging.getLogger("servers")

READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 1.5  # of the 2 s stop budget: SIGTERM, then SIGKILL for stragglers
RESTART_MIN_INTERVAL_S = 1.0  # a worker that crashes at once is not restarted in a tight loop


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker if the supervisor dies (even by SIGKILL); not Linux: workers may outlive
    a killed parent."""
    die_with_parent(signal.SIGTERM)


def _worker(config: ServerConfig, ready_w) -> None:
    signal.set_wakeup_fd(-1)  # the supervisor's wake-up socket is not ours
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    model = registry.get(config.model)

    def on_ready(sockname) -> None:
        ready_w.send(sockname)
        ready_w.close()

    try:
        model.load()(config, on_ready, **model.options)
    except net.ServerError as exc:
        log.error("worker: %s", exc)
        os._exit(1)


class _Supervisor:
    def __init__(self, worker_config: ServerConfig, n: int) -> None:
        self.config = worker_config
        self.n = n
        self.ctx = multiprocessing.get_context("fork")  # the parent runs no loop and no threads
        self.workers: dict[int, multiprocessing.Process] = {}  # sentinel -> process
        self.last_start = 0.0

    def start_one(self):
        ready_r, ready_w = self.ctx.Pipe(duplex=False)
        p = self.ctx.Process(target=_worker, args=(self.config, ready_w), daemon=False)
        p.start()
        ready_w.close()
        self.workers[p.sentinel] = p
        self.last_start = time.monotonic()
        return p, ready_r

    def wait_ready(self, pending, stop: StopSignal) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = dict(pending)  # ready_r -> process
        while pending:
            if stop.stopped:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise net.ServerError(f"{len(pending)} worker(s) not ready after {READY_TIMEOUT_S:.0f} s")
            for r in multiprocessing.connection.wait(list(pending) + [stop.wake], left):
                if r is stop.wake:
                    stop.drain()
                    continue
                p = pending.pop(r)
                try:
                    r.recv()
                except EOFError:
                    p.join(1)
                    raise net.ServerError(f"worker pid {p.pid} exited with code {p.exitcode} before it was ready") from None
                finally:
                    r.close()

    def supervise(self, stop: StopSignal) -> None:
        while not stop.stopped:
            ready = multiprocessing.connection.wait(list(self.workers) + [stop.wake])
            if stop.stopped:
                return
            for s in ready:
                if s is stop.wake:
                    stop.drain()
                    continue
                p = self.workers.pop(s)
                p.join()
                how = f"signal {-p.exitcode}" if p.exitcode < 0 else f"exit code {p.exitcode}"
                log.warning("worker pid %d died (%s); starting a new one", p.pid, how)
                wait = self.last_start + RESTART_MIN_INTERVAL_S - time.monotonic()
                if wait > 0:  # crash loop guard, interruptible by a stop signal
                    multiprocessing.connection.wait([stop.wake], wait)
                    if stop.stopped:
                        return
                new, ready_r = self.start_one()
                self.wait_ready({ready_r: new}, stop)
                log.warning("worker pid %d replaces pid %d", new.pid, p.pid)

    def stop_all(self) -> None:
        procs = list(self.workers.values())
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                log.warning("worker pid %d ignored SIGTERM; killing it", p.pid)
                p.kill()
                p.join(0.4)


def serve(config: ServerConfig, on_ready) -> None:
    inner = registry.get(config.inner)
    n = config.workers or default_workers()
    holder = net.listen(config.host, config.port, reuse_port=True, bind_only=True)
    sockname = holder.getsockname()
    worker_config = replace(config, model=inner.name, port=sockname[1], reuse_port=True, workers=None)
    stop = StopSignal()
    sup = _Supervisor(worker_config, n)
    try:
        pending = dict(reversed(sup.start_one()) for _ in range(n))
        sup.wait_ready(pending, stop)
        if stop.stopped:
            return
        log.info("%d %s workers: pids %s", n, inner.name, " ".join(str(p.pid) for p in sup.workers.values()))
        on_ready(sockname)
        sup.supervise(stop)
    finally:
        sup.stop_all()
        stop.close()
        holder.close()
