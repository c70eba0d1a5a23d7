"""Connection scale: ``loadgen/run.py --idle N[,N...]`` (issue 13's first part).

Opens connections to the server level by level (as fast as possible, or paced by ``--connect-rate``), times
every connect, proves every new connection with one echo (every byte checked: a connection the server never
accepted is not counted as held), then measures the server's resident memory (its process and all its
children) at each level: memory per connection is (RSS at the level - RSS before any connection) / connections
held. Then it holds them ``--hold`` seconds, optionally with a trickle (``--trickle T``: each connection echoes
one message every T seconds, staggered, every byte checked), and measures again.

Failures are counted by kind (refused, timeout, reset, eof, out of descriptors, wrong bytes ...), never
dropped: attempted = established + failed at every level. One process and one source address for now: up to
the client's descriptor limit (20,000 here) and ~28,000 ports per destination.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import time
from collections import Counter

import psutil

from . import stats
from .envinfo import environment

CONNECT_CONCURRENCY = 256  # connects in flight at once when --connect-rate is not given
PROBE_TIMEOUT_S = 5.0  # one echo on a new connection must come back within this
SETTLE_S = 0.3  # after a level's last echo, before the server's memory is read
WARM_UP_CONNS = 8  # opened, echoed and closed before the baseline is read


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _kind(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, EOFError):
        return "eof"
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        return "out of file descriptors (client)"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRNOTAVAIL:
        return "no free local port"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


class Mismatch(Exception):
    """The echo differed from what was sent."""


def server_rss(pid: int | None) -> int | None:
    """Resident bytes of the server process and all its descendants (a multi-process model's workers too)."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def message(conn_id: int, seq: int, size: int) -> bytes:
    """The bytes a connection sends for its seq-th echo: its identity and the sequence, repeated to ``size``."""
    unit = f"{conn_id:08d}:{seq:08d};".encode()
    return (unit * (size // len(unit) + 1))[:size]


class IdleRun:
    def __init__(self, cfg, addr: tuple, family: int, pid: int | None, log, loop) -> None:
        self.cfg = cfg
        self.addr = addr
        self.family = family
        self.pid = pid
        self.log = log
        self.socks: list[tuple[int, socket.socket]] = []  # (conn id, socket) held
        self.failures: Counter = Counter()
        self.connect_ns: list[int] = []
        self.attempted = 0
        self.next_id = 0
        self.loop = loop
        self.probe_timeout = max(PROBE_TIMEOUT_S, cfg.connect_timeout)

    async def echo(self, cid: int, sock: socket.socket, seq: int) -> None:
        data = message(cid, seq, self.cfg.size)
        await self.loop.sock_sendall(sock, data)
        got = bytearray()
        while len(got) < len(data):
            chunk = await self.loop.sock_recv(sock, len(data) - len(got))
            if not chunk:
                raise EOFError("the server closed the connection")
            got += chunk
        if bytes(got) != data:
            raise Mismatch("the echo differed from what was sent")

    async def open_one(self, cid: int) -> None:
        sock = None
        try:
            sock = socket.socket(self.family, socket.SOCK_STREAM)
            sock.setblocking(False)
            t0 = time.perf_counter_ns()
            await asyncio.wait_for(self.loop.sock_connect(sock, self.addr), self.cfg.connect_timeout)
            self.connect_ns.append(time.perf_counter_ns() - t0)
            # proof that the server accepted it (a listen backlog completes the handshake by itself)
            await asyncio.wait_for(self.echo(cid, sock, 0), self.probe_timeout)
        except Mismatch:
            self.failures["wrong bytes echoed"] += 1
        except Exception as exc:  # noqa: BLE001 (every failure is counted by kind, never lost)
            self.failures[_kind(exc)] += 1
        else:
            self.socks.append((cid, sock))
            return
        if sock is not None:
            sock.close()

    async def warm_up(self, n: int) -> None:
        """Open, echo on and close ``n`` connections (not counted)."""
        for i in range(n):
            sock = socket.socket(self.family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await asyncio.wait_for(self.loop.sock_connect(sock, self.addr), self.cfg.connect_timeout)
                await asyncio.wait_for(self.echo(-1 - i, sock, 0), self.probe_timeout)
            except Exception:  # noqa: BLE001 (a failure shows again, counted, in the measured levels)
                pass
            finally:
                sock.close()

    async def open_level(self, n: int) -> float:
        """Open connections until n have been attempted in all; returns the seconds the connects took."""
        want = n - self.attempted
        t0 = time.perf_counter()
        rate = self.cfg.connect_rate
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def paced(i: int, cid: int) -> None:
            if rate is not None:
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            async with sem:
                await self.open_one(cid)

        tasks = []
        for i in range(want):
            tasks.append(paced(i, self.next_id))
            self.next_id += 1
        self.attempted += want
        await asyncio.gather(*tasks)
        return time.perf_counter() - t0

    async def hold(self, seconds: float, trickle: float | None) -> dict:
        """Keep every connection open ``seconds``; with ``trickle``, each echoes once every ``trickle`` s (staggered
        from one shared start). Then every connection is checked without waiting: one the server closed or reset
        meanwhile is counted as lost, by kind."""
        ok = [0]
        failed: Counter = Counter()
        dead: set[int] = set()
        checked: set[int] = set()
        if trickle:
            start = time.perf_counter()
            end = start + seconds
            n = len(self.socks)

            async def one(k: int, cid: int, sock: socket.socket) -> None:
                seq = 1
                next_at = start + trickle * k / max(1, n)
                while next_at < end:
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                    try:
                        await asyncio.wait_for(self.echo(cid, sock, seq), self.probe_timeout)
                    except Mismatch:
                        failed["wrong bytes echoed"] += 1
                        dead.add(cid)
                        return
                    except Exception as exc:  # noqa: BLE001 (counted by kind)
                        failed[_kind(exc)] += 1
                        dead.add(cid)
                        return
                    ok[0] += 1
                    checked.add(cid)
                    seq += 1
                    next_at += trickle

            await asyncio.gather(*(one(k, cid, s) for k, (cid, s) in enumerate(self.socks)))
        else:
            await asyncio.sleep(seconds)
        for cid, sock in self.socks:  # still there? EOF or a reset shows without waiting
            if cid in dead:
                continue
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    failed["eof"] += 1
                    dead.add(cid)
                else:  # bytes nobody asked for
                    failed["unexpected bytes"] += 1
                    dead.add(cid)
            except BlockingIOError:
                pass
            except OSError as exc:
                failed[_kind(exc)] += 1
                dead.add(cid)
        return {"echoes": ok[0], "failures": dict(failed), "every_s": trickle, "connections_lost": len(dead),
                "connections_checked_by_echo": len(checked) if trickle else 0}

    def close(self) -> None:
        for _cid, s in self.socks:
            s.close()
        self.socks = []


def run_idle(cfg, log) -> tuple[dict, int]:
    """The whole connection-scale run; (result document, exit code)."""
    from .runner import EXIT_FAILURES, EXIT_INCOMPLETE, EXIT_OK, RunError, ensure_fds, plan_cpus
    from .target import ManagedServer

    levels = list(cfg.idle)
    client_cpus, server_cpus = plan_cpus(cfg)
    fd_limit = ensure_fds(cfg)  # one line, before any connect, when the client cannot hold them
    server = None
    old_affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(client_cpus))
    try:
        if cfg.server:
            server = ManagedServer(cfg.server, cfg.host, cfg.server_workers, server_cpus, extra=cfg.server_args)
            host, port, pid = server.addr[0], server.addr[1], server.pid
        else:
            host, port, pid = cfg.host, cfg.port, cfg.server_pid
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        except OSError as exc:
            raise RunError(f"cannot resolve {host}: {exc}") from None
        if pid is not None and not psutil.pid_exists(pid):
            raise RunError(f"--server-pid {pid}: no such process")
        loop = asyncio.SelectorEventLoop()  # no thread pool: it would count as the client's memory and CPU
        asyncio.set_event_loop(loop)
        run = IdleRun(cfg, info[4], info[0], pid, log, loop)
        out_levels = []
        hold = {"echoes": 0, "failures": {}, "every_s": cfg.trickle, "connections_lost": 0,
                "connections_checked_by_echo": 0}
        rss_end = None
        base = None
        interrupted = False
        old_term = signal.signal(signal.SIGTERM, _interrupt)
        try:
            # a few connections opened, echoed and closed first: the server's one-off costs (the first accept,
            # lazy imports, allocator arenas) are then in the baseline, not charged to the connections measured
            loop.run_until_complete(run.warm_up(WARM_UP_CONNS))
            loop.run_until_complete(asyncio.sleep(SETTLE_S))
            base = server_rss(pid)
            for n in levels:
                before = Counter(run.failures)
                seconds = loop.run_until_complete(run.open_level(n))
                held = len(run.socks)
                loop.run_until_complete(asyncio.sleep(SETTLE_S))
                rss = server_rss(pid)
                per = (rss - base) / held if rss is not None and base is not None and held else None
                prev = out_levels[-1] if out_levels else None
                marginal = None
                if prev and rss is not None and prev["server_rss_bytes"] is not None and held > prev["established"]:
                    marginal = (rss - prev["server_rss_bytes"]) / (held - prev["established"])
                new_fail = run.failures - before
                out_levels.append({"attempted": run.attempted, "established": held,
                                   "failed": sum(run.failures.values()), "failures": dict(new_fail),
                                   "seconds": round(seconds, 3),
                                   "connects_per_s": round((held - (prev["established"] if prev else 0)) / seconds, 1)
                                   if seconds > 0 else None,
                                   "server_rss_bytes": rss,
                                   "server_rss_per_conn_bytes": round(per) if per is not None else None,
                                   "marginal_per_conn_bytes": round(marginal) if marginal is not None else None})
                log(f"idle: {held:,} of {run.attempted:,} connections held"
                    + (f", server RSS {rss / 2**20:,.1f} MiB" if rss is not None else ""))
                if held == 0:
                    break
            hold = loop.run_until_complete(run.hold(cfg.hold, cfg.trickle))
            rss_end = server_rss(pid)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            signal.signal(signal.SIGTERM, old_term)
            run.close()
            for t in asyncio.all_tasks(loop):
                t.cancel()
            loop.close()
            asyncio.set_event_loop(None)
        server_alive = server.alive() if server else (psutil.pid_exists(pid) if pid is not None else None)
    finally:
        os.sched_setaffinity(0, old_affinity)
        if server is not None:
            server.stop()
    total_s = sum(lv["seconds"] for lv in out_levels)
    last = out_levels[-1] if out_levels else None
    lat = stats.percentiles_of(run.connect_ns)
    marginals = [lv["marginal_per_conn_bytes"] for lv in out_levels if lv["marginal_per_conn_bytes"] is not None]
    result = {
        "mode": "idle",
        "complete": (not interrupted and bool(last) and last["failed"] == 0 and not hold["failures"]
                     and server_alive is not False),
        "incomplete_reason": ("interrupted" if interrupted else "the server exited" if server_alive is False
                              else None),
        "connect": {"attempted": run.attempted, "established": (last or {}).get("established", 0),
                    "failures": dict(run.failures), "per_s": round(run.attempted / total_s, 1) if total_s > 0 else None,
                    "latency_us": lat},
        "memory": {"server_pid": pid, "server_rss_before_bytes": base, "levels": out_levels,
                   "server_rss_after_hold_bytes": rss_end,
                   # the headline: between the first and the last level when there are several (fixed costs cancel),
                   # else all connections over the baseline
                   "server_rss_per_conn_bytes": (round((last["server_rss_bytes"] - out_levels[0]["server_rss_bytes"])
                                                       / (last["established"] - out_levels[0]["established"]))
                                                 if marginals and last["established"] > out_levels[0]["established"]
                                                 and last["server_rss_bytes"] is not None
                                                 and out_levels[0]["server_rss_bytes"] is not None
                                                 else (last or {}).get("server_rss_per_conn_bytes")),
                   "note": None if pid is not None else "no --server or --server-pid: the server's memory is unknown"},
        "trickle": hold,
        "server_alive": server_alive,
    }
    doc = {"schema_version": 2, "kind": "echobench-idle", "config": cfg.as_dict(), "env": environment(),
           "target": {"host": host, "port": port, "server_model": cfg.server, "server_pid": pid},
           "pinning": {"loadgen_cpus": list(client_cpus), "server_cpus": list(server_cpus) if server_cpus else None},
           "fd_limit": fd_limit, "result": result}
    if "wrong bytes echoed" in hold["failures"] or run.failures.get("wrong bytes echoed"):
        return doc, EXIT_FAILURES
    return doc, EXIT_OK if result["complete"] else EXIT_INCOMPLETE


def render(doc: dict, file=None) -> None:
    import sys

    file = file or sys.stdout
    r = doc["result"]
    c, m = r["connect"], r["memory"]
    print(f"idle connections: {c['established']:,} of {c['attempted']:,} held"
          + (f" (failed: {', '.join(f'{k} {v:,}' for k, v in c['failures'].items())})" if c["failures"] else ""),
          file=file)
    lat = c["latency_us"] or {}
    fmt = lambda v: "-" if v is None else f"{v:,.0f}"  # noqa: E731
    print(f"connect: {fmt(c['per_s'])} connects/s; latency p50 {fmt(lat.get('p50'))} us, p90 {fmt(lat.get('p90'))} us, "
          f"p99 {fmt(lat.get('p99'))} us, max {fmt(lat.get('max'))} us", file=file)
    print(f"{'attempted':>10} {'held':>8} {'failed':>7} {'connects/s':>11} {'server RSS MiB':>15} {'per conn':>10}", file=file)
    for lv in m["levels"]:
        rss = "-" if lv["server_rss_bytes"] is None else f"{lv['server_rss_bytes'] / 2**20:,.1f}"
        per = "-" if lv["server_rss_per_conn_bytes"] is None else f"{lv['server_rss_per_conn_bytes'] / 1024:,.1f} KiB"
        print(f"{lv['attempted']:>10,} {lv['established']:>8,} {lv['failed']:>7,} {fmt(lv['connects_per_s']):>11} "
              f"{rss:>15} {per:>10}", file=file)
    if m["note"]:
        print(m["note"], file=file)
    t = r["trickle"]
    if t["every_s"]:
        print(f"trickle: {t['echoes']:,} echoes, every byte checked, one per connection every {t['every_s']:g} s"
              + (f"; failed: {t['failures']}" if t["failures"] else ""), file=file)
