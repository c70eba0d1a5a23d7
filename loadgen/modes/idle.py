"""Connection scale: ``loadgen/run.py --idle N[,N...]`` (issue 13's first part).

Opens connections to the server level by level (as fast as possible, or paced by ``--connect-rate``), times
every connect, proves every new connection with one echo (every byte checked: a connection the server never
accepted is not counted as held), then measures the server's resident memory (its process and all its
children) at each level: memory per connection is (RSS at the level - RSS before any connection) / connections
held. Then it holds them ``--hold`` seconds, optionally with a trickle (``--trickle T``: each connection echoes
one message every T seconds, staggered, every byte checked), and measures again.

Failures are counted by kind (refused, timeout, reset, eof, out of descriptors, wrong bytes ...), never
dropped: attempted = established + failed at every level.

Past one process's descriptor limit (20,000 here) and the ~28,000 local ports one source address has per
destination, the connections are spread over load-generator processes (``--workers``, or as many as the
descriptor limit needs) and over loopback source addresses (``--source-addrs``, or 127.0.0.1, 127.0.0.2, ...
as many as the port range needs). The parent holds the first share itself and drives the others level by
level over pipes; every count is merged exactly. A level stops opening connections once
``--max-connect-failures`` have failed (a server past its limit would otherwise cost a timeout per connection),
and the run says where it stopped and why, from the server's side when it can: its descriptors against its
limit, its threads against the kernel's, whether it is still alive.
"""

from __future__ import annotations

import array
import asyncio
import errno
import ipaddress
import math
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, replace

import psutil

from servers.procs import die_with_parent

from .. import stats
from ..envinfo import environment
from ..lifecycle import RunScope
from ..result import IDLE
from ..result import version as doc_version

CONNECT_CONCURRENCY = 256  # connects in flight at once over all processes when --connect-rate is not given (more
# would only queue in a slow server's backlog, timing out connects the server would have taken)
PROBE_TIMEOUT_S = 5.0  # one echo on a new connection must come back within this
SETTLE_S = 0.3  # after a level's last echo, before the server's memory is read
WARM_UP_CONNS = 8  # opened, echoed and closed before the baseline is read
FDS_RESERVED = 64  # per process, beside its connections: stdio, pipes, the event loop, imported modules
FDS_PER_PART = 3  # held by the parent for each other load-generator process: its pipe end, two sentinels
PORT_SHARE = 0.45  # of the ephemeral port range per (source address, destination): past about half, connect()
# spends longer and longer finding a free port (measured here: 699 connects/s at 88% full vs 4,543 at 44%)
MAX_AUTO_WORKERS = 64
DEFAULT_MAX_CONNECT_FAILURES = 200
# Linux: bind() picks no port; connect() then picks one unique for the 4-tuple, not for the address alone
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def ephemeral_ports() -> int:
    """How many local ports connect() may pick from (``net.ipv4.ip_local_port_range``)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return hi - lo + 1
    except (OSError, ValueError):
        return 28232  # Linux's default range, 32768-60999


@dataclass(frozen=True)
class Spread:
    """How a connection-scale run is spread: load-generator processes and source addresses (None: the kernel's)."""

    workers: int
    sources: tuple[str | None, ...]
    why: str | None  # why more than one process or address, in words


def plan_spread(n: int, host: str, fd_hard: int, ports: int, workers: int | None = None,
                sources: tuple[str, ...] | None = None) -> Spread:
    """Processes and source addresses for ``n`` connections to ``host``: enough that no process needs more than its
    hard descriptor limit ``fd_hard`` allows and no (source, destination) pair more than ``PORT_SHARE`` of ``ports``.
    An explicit ``workers`` or ``sources`` that cannot hold ``n`` raises ValueError (one line, for the user)."""
    if fd_hard == resource.RLIM_INFINITY:
        fd_hard = n + FDS_RESERVED
    if fd_hard - FDS_RESERVED < 1:
        raise ValueError(f"the hard limit of {fd_hard} file descriptors leaves none for connections")
    # the parent holds FDS_PER_PART (a pipe, multiprocessing's sentinels) for each other process beside its share
    need_w = 1
    while math.ceil(n / need_w) > fd_hard - FDS_RESERVED - FDS_PER_PART * (need_w - 1) and need_w <= n:
        need_w += 1
    per_proc = fd_hard - FDS_RESERVED - FDS_PER_PART * (need_w - 1)
    why = []
    if workers is not None:
        if workers < need_w:
            raise ValueError(f"{n:,} connections need at least {need_w} load-generator processes (--workers): the hard "
                             f"limit is {fd_hard:,} file descriptors per process")
    else:
        if need_w > MAX_AUTO_WORKERS:
            raise ValueError(f"{n:,} connections would need {need_w} load-generator processes of {fd_hard:,} file "
                             f"descriptors each; raise the hard limit ('ulimit -Hn') or pass --workers")
        workers = need_w
        if workers > 1:
            why.append(f"{workers} processes: at most {per_proc:,} connections each under the hard limit of "
                       f"{fd_hard:,} file descriptors")
    per_source = max(1, int(ports * PORT_SHARE))
    need_s = max(1, math.ceil(n / per_source))
    if sources:
        if len(sources) < need_s:
            raise ValueError(f"{n:,} connections to one destination need at least {need_s} source addresses "
                             f"(--source-addrs): ~{per_source:,} local ports each")
        return Spread(workers, tuple(sources), "; ".join(why) or None)
    if need_s == 1:
        return Spread(workers, (None,), "; ".join(why) or None)
    try:
        loopback = ipaddress.ip_address(host).version == 4 and ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{n:,} connections to one destination need {need_s} source addresses (~{per_source:,} "
                         f"local ports each): pass --source-addrs with addresses of this host")
    why.append(f"{need_s} source addresses: ~{per_source:,} local ports each per destination")
    return Spread(workers, tuple(f"127.0.0.{i}" for i in range(1, need_s + 1)), "; ".join(why))


def check_sources(sources: tuple[str | None, ...], family: int) -> None:
    """Each source address must be one this host can bind: one line (ValueError) before any connection, else."""
    for addr in sources:
        if addr is None:
            continue
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((addr, 0))
        except (OSError, OverflowError) as exc:
            raise ValueError(f"--source-addrs {addr}: cannot bind it here ({getattr(exc, 'strerror', None) or exc})") \
                from None


WRONG_BYTES = "wrong bytes echoed"  # the failure kind that is an integrity failure (exit code 1), not a limit


def split(n: int, parts: int, i: int) -> int:
    """Part ``i``'s share of ``n`` split as evenly as possible over ``parts``."""
    return n // parts + (1 if i < n % parts else 0)


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


def _server_tree(pid: int | None) -> list | None:
    """The server process and all its descendants (a multi-process model's workers too); None when it is gone."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return None


def server_rss(pid: int | None) -> int | None:
    """Resident bytes of the server process and all its descendants."""
    procs = _server_tree(pid)
    if procs is None:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def server_limits(pid: int | None) -> dict | None:
    """What the server holds against its limits (its process and all descendants): open descriptors against each
    process's soft limit, threads against the kernel's. The evidence for why a level stopped."""
    procs = _server_tree(pid)
    if procs is None:
        return None
    fds = threads = 0
    fullest = None  # (open, limit) of the process closest to its descriptor limit
    for p in procs:
        try:
            n = p.num_fds()
            soft = p.rlimit(psutil.RLIMIT_NOFILE)[0]
            threads += p.num_threads()
        except psutil.Error:
            continue
        fds += n
        if soft > 0 and (fullest is None or n / soft > fullest[0] / fullest[1]):
            fullest = (n, soft)
    return {"processes": len(procs), "fds": fds, "threads": threads,
            "fullest_fds": fullest[0] if fullest else None, "fullest_fd_limit": fullest[1] if fullest else None,
            "pid_max": _read_int("/proc/sys/kernel/pid_max"), "threads_max": _read_int("/proc/sys/kernel/threads-max")}


def why_stopped(limits: dict | None, alive: bool | None, failures: dict, connect_timeout: float) -> str:
    """Why a level could not be held, in words: the server's own limit when its state shows one, else the failures."""
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(failures.items(), key=lambda kv: -kv[1]))
    if alive is False:
        return f"the server exited ({kinds})" if kinds else "the server exited"
    if limits:
        if limits["fullest_fd_limit"] and limits["fullest_fds"] >= 0.97 * limits["fullest_fd_limit"]:
            return (f"the server ran out of file descriptors ({limits['fullest_fds']:,} open, limit "
                    f"{limits['fullest_fd_limit']:,} per process; {kinds})")
        cap = min(x for x in (limits["pid_max"], limits["threads_max"]) if x) if (limits["pid_max"] or
                                                                               limits["threads_max"]) else None
        if cap and limits["threads"] >= 0.95 * cap:
            return f"the server ran out of threads ({limits['threads']:,}; the kernel allows {cap:,}; {kinds})"
    mem = psutil.virtual_memory()
    if mem.available < 0.05 * mem.total:
        return f"the machine is out of memory ({mem.available / 2**20:,.0f} MiB available; {kinds})"
    if limits and failures and set(failures) == {"timeout"}:
        return (f"the server accepted or answered too slowly: connects or their first echo timed out "
                f"(--connect-timeout {connect_timeout:g} s) below its descriptor and thread limits ({kinds})")
    return f"connections failed: {kinds}" if kinds else "connections failed"


def message(conn_id: int, seq: int, size: int) -> bytes:
    """The bytes a connection sends for its seq-th echo: its identity and the sequence, repeated to ``size``."""
    unit = f"{conn_id:08d}:{seq:08d};".encode()
    return (unit * (size // len(unit) + 1))[:size]


class IdleRun:
    """One process's share of the connections: part ``index`` of ``parts`` (connection ids index, index + parts,
    ...), each bound to ``sources[id % len(sources)]`` (None: the kernel picks the address). It stops opening
    connections once ``max_failures`` of its own have failed."""

    def __init__(self, cfg, addr: tuple, family: int, loop, index: int = 0, parts: int = 1,
                 sources: tuple[str | None, ...] = (None,), max_failures: int | None = None) -> None:
        self.cfg = cfg
        self.addr = addr
        self.family = family
        self.socks: list[tuple[int, socket.socket]] = []  # (conn id, socket) held
        self.failures: Counter = Counter()
        self.connect_ns = array.array("q")
        self.attempted = 0
        self.next_k = 0  # this part's next connection (its id is next_k * parts + index)
        self.index, self.parts, self.sources = index, parts, sources
        self.max_failures = max_failures
        self.gave_up = False
        self.loop = loop
        self.probe_timeout = max(PROBE_TIMEOUT_S, cfg.connect_timeout)

    def state(self) -> dict:
        """Counts so far (and this process's CPU seconds); an attempt cut short (Ctrl-C) is neither held nor failed
        yet: counted as interrupted."""
        failures = Counter(self.failures)
        gap = self.attempted - len(self.socks) - sum(failures.values())
        if gap > 0:
            failures["interrupted"] += gap
        return {"attempted": self.attempted, "established": len(self.socks), "failures": dict(failures),
                "gave_up": self.gave_up, "cpu_s": time.process_time()}

    def by_source(self) -> dict:
        out: Counter = Counter()
        for _cid, s in self.socks:
            try:
                out[s.getsockname()[0]] += 1
            except OSError:
                out["?"] += 1
        return dict(out)

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
            src = self.sources[cid % len(self.sources)]
            if src is not None:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((src, 0))
            t0 = time.perf_counter_ns()
            await asyncio.wait_for(self.loop.sock_connect(sock, self.addr), self.cfg.connect_timeout)
            self.connect_ns.append(time.perf_counter_ns() - t0)
            # proof that the server accepted it (a listen backlog completes the handshake by itself)
            await asyncio.wait_for(self.echo(cid, sock, 0), self.probe_timeout)
        except Mismatch:
            self.failures[WRONG_BYTES] += 1
        except Exception as exc:  # noqa: BLE001 (every failure is counted by kind, never lost)
            self.failures[_kind(exc)] += 1
        else:
            self.socks.append((cid, sock))
            return
        if sock is not None:
            sock.close()
        if self.max_failures is not None and sum(self.failures.values()) >= self.max_failures:
            self.gave_up = True  # the server is past its limit: each further attempt would only cost a timeout

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
        """Open connections until n have been attempted by this part in all (or until it gives up); returns the
        seconds the connects took."""
        want = n - self.attempted
        t0 = time.perf_counter()
        rate = self.cfg.connect_rate / self.parts if self.cfg.connect_rate else None
        sem = asyncio.Semaphore(max(1, CONNECT_CONCURRENCY // self.parts))

        async def paced(i: int, cid: int) -> None:
            if rate is not None:
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            async with sem:
                if self.gave_up:
                    return  # not attempted: counted nowhere
                self.attempted += 1
                await self.open_one(cid)

        tasks = []
        for i in range(max(0, want)):
            tasks.append(paced(i, self.next_k * self.parts + self.index))
            self.next_k += 1
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
                next_at = start + trickle * (k * self.parts + self.index) / max(1, n * self.parts)  # all parts staggered
                while next_at < end:
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                    try:
                        await asyncio.wait_for(self.echo(cid, sock, seq), self.probe_timeout)
                    except Mismatch:
                        failed[WRONG_BYTES] += 1
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


# -- the other processes' shares --------------------------------------------------------------------------------

def _part_main(cfg, index: int, parts: int, addr, family: int, sources, max_failures, pipe, cpus,
               inherited: list[int], parent: int) -> None:
    """A load-generator process holding part ``index`` of the connections, driven by the parent over ``pipe``:
    ("level", n) opens its share up to n, ("hold", seconds) holds, ("close",) closes and ends. It answers each with
    its counts. Anything from the parent during a command (or the parent gone: EOF) stops that command."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it tells us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # SIGKILL when the parent dies, however it dies: a helper must not outlive the run holding thousands of the
    # server's connections (not Linux: the pipe's EOF still ends it when the parent exits)
    if not die_with_parent(signal.SIGKILL, parent):
        os._exit(1)  # the parent died before the request took effect
    for fd in inherited:  # the parent's ends of the pipes, copied by fork: held here, no EOF would ever come
        try:
            os.close(fd)
        except OSError:
            pass
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    loop = asyncio.SelectorEventLoop()
    asyncio.set_event_loop(loop)
    run = IdleRun(cfg, addr, family, loop, index, parts, sources, max_failures)

    def command(coro):
        task = loop.create_task(coro)
        loop.add_reader(pipe.fileno(), task.cancel)
        try:
            return loop.run_until_complete(task), False
        except asyncio.CancelledError:
            return None, True
        finally:
            loop.remove_reader(pipe.fileno())

    try:
        pipe.send({**run.state(), "ready": True})  # its CPU from here on is the level's
        while True:
            try:
                msg = pipe.recv()
            except (EOFError, OSError):
                break
            if msg[0] == "level":
                done = len(run.connect_ns)
                seconds, cut = command(run.open_level(msg[1]))
                pipe.send({**run.state(), "seconds": seconds, "cut": cut,
                           "connect_ns": run.connect_ns[done:].tobytes()})
            elif msg[0] == "hold":
                hold, cut = command(run.hold(msg[1], msg[2]))
                pipe.send({**run.state(), "hold": hold, "cut": cut})
            else:  # "close"
                pipe.send({**run.state(), "by_source": run.by_source()})
                break
    finally:
        run.close()
        for t in asyncio.all_tasks(loop):
            t.cancel()
        loop.close()


PART_START_S = 30.0  # a forked load-generator process must say it is ready within this


class PartLost(Exception):
    """A load-generator process did not answer in time or died."""


class Parts:
    """The processes holding parts 1..n-1 (the parent holds part 0 itself)."""

    def __init__(self, cfg, parts: int, addr, family: int, sources, max_failures, cpus) -> None:
        ctx = multiprocessing.get_context("fork")
        self.pipes, self.procs = [], []
        for i in range(1, parts):
            mine, theirs = ctx.Pipe()
            inherited = [x.fileno() for x in self.pipes] + [mine.fileno()]
            p = ctx.Process(target=_part_main, args=(cfg, i, parts, addr, family, sources, max_failures, theirs, cpus,
                                                     inherited, os.getpid()), daemon=True)
            p.start()
            theirs.close()
            self.pipes.append(mine)
            self.procs.append(p)
        self.last: list[dict | None] = [None] * len(self.pipes)  # each part's latest answer
        try:
            self.collect(time.monotonic() + PART_START_S)  # each part says it is ready
        except PartLost:
            self.close(timeout=1.0)
            raise

    def send(self, msg) -> None:
        """``msg`` to every part (a function of the part's index: its own message); PartLost if one is gone."""
        for i, pipe in enumerate(self.pipes, start=1):
            try:
                pipe.send(msg(i) if callable(msg) else msg)
            except OSError:
                raise PartLost(f"load-generator process {i} is gone") from None

    def _send_quietly(self, msg) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(msg)
            except OSError:
                pass

    def collect(self, deadline: float) -> list[dict]:
        """Every part's answer to the last command, by ``deadline`` (time.monotonic()); PartLost otherwise."""
        answers: dict[int, dict] = {}
        while len(answers) < len(self.pipes):
            left = deadline - time.monotonic()
            waiting = [p for i, p in enumerate(self.pipes) if i not in answers]
            if left <= 0:
                raise PartLost(f"{len(waiting)} load-generator process(es) did not answer in time")
            for pipe in multiprocessing.connection.wait(waiting, timeout=left):
                i = self.pipes.index(pipe)
                try:
                    answers[i] = pipe.recv()
                except (EOFError, OSError):
                    raise PartLost(f"load-generator process {i + 1} died") from None
                self.last[i] = answers[i]
        return [answers[i] for i in range(len(self.pipes))]

    def close(self, timeout: float = 10.0) -> list[dict]:
        """Close every part; their final counts (what answered). A part cut short mid-command answers that command
        first: its answers are read until the final one."""
        self._send_quietly(("close",))
        finals: dict[int, dict] = {}
        deadline = time.monotonic() + timeout
        open_pipes = dict(enumerate(self.pipes))
        while open_pipes and time.monotonic() < deadline:
            for pipe in multiprocessing.connection.wait(list(open_pipes.values()), timeout=deadline - time.monotonic()):
                i = self.pipes.index(pipe)
                try:
                    msg = pipe.recv()
                except (EOFError, OSError):
                    open_pipes.pop(i, None)
                    continue
                self.last[i] = msg
                if "by_source" in msg:
                    finals[i] = msg
                    open_pipes.pop(i, None)
        for p in self.procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5)
        for pipe in self.pipes:
            pipe.close()
        self.pipes, self.procs = [], []
        return [finals[i] for i in sorted(finals)]


def _merge_counts(states: list[dict]) -> dict:
    failures: Counter = Counter()
    for s in states:
        failures.update(s["failures"])
    return {"attempted": sum(s["attempted"] for s in states), "established": sum(s["established"] for s in states),
            "failures": failures, "gave_up": any(s["gave_up"] for s in states)}


def run_idle(cfg, log) -> tuple[dict, int]:
    """The whole connection-scale run; (result document, exit code)."""
    from ..runner import EXIT_FAILURES, EXIT_INCOMPLETE, EXIT_OK, RunError, ensure_fds, plan_cpus
    from ..target import TargetError

    levels = list(cfg.idle)
    client_cpus, server_cpus = plan_cpus(cfg)
    try:
        spread = plan_spread(levels[-1], cfg.host, resource.getrlimit(resource.RLIMIT_NOFILE)[1], ephemeral_ports(),
                             cfg.workers or None, cfg.source_addrs or None)  # workers 0: as many as needed
    except ValueError as exc:
        raise RunError(str(exc)) from None
    fd_limit = ensure_fds(replace(cfg, workers=spread.workers))  # one line, before any connect, when it cannot
    max_failures = cfg.max_connect_failures
    part_budget = math.ceil(max_failures / spread.workers) if max_failures else None
    server = None
    parts = None
    # the affinity given back and the server stopped however the run ends; SIGTERM as Ctrl-C only from the
    # moment the other processes are started (below)
    scope = RunScope(cfg, term=False).__enter__()
    scope.pin(client_cpus)
    try:
        if cfg.server:
            scope.start_server(server_cpus)
            server = scope.server
            host, port, pid = server.addr[0], server.addr[1], server.pid
        else:
            host, port, pid = cfg.host, cfg.port, cfg.server_pid
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        except OSError as exc:
            raise RunError(f"cannot resolve {host}: {exc}") from None
        if pid is not None and not psutil.pid_exists(pid):
            raise RunError(f"--server-pid {pid}: no such process")
        try:
            check_sources(spread.sources, info[0])
        except ValueError as exc:
            raise RunError(str(exc)) from None
        if spread.why:
            log(f"idle: spread over {spread.why}")
        # the other processes are forked before this one has an event loop (a forked loop is not safe to use)
        scope.route_term()
        try:
            parts = Parts(cfg, spread.workers, info[4], info[0], spread.sources, part_budget, client_cpus)
        except PartLost as exc:
            scope.restore()
            raise TargetError(f"the load generator's own processes did not start: {exc}") from None
        except KeyboardInterrupt:  # (the helpers die with this process or on their pipe's EOF)
            scope.restore()
            raise TargetError("interrupted before the first connection") from None
        loop = asyncio.SelectorEventLoop()  # no thread pool: it would count as the client's memory and CPU
        asyncio.set_event_loop(loop)
        run = IdleRun(cfg, info[4], info[0], loop, 0, spread.workers, spread.sources, part_budget)
        out_levels = []
        hold = {"echoes": 0, "failures": {}, "every_s": cfg.trickle, "connections_lost": 0,
                "connections_checked_by_echo": 0}
        rss_end = None
        base = None
        interrupted = False
        lost = None  # a load-generator process that died or hung
        stopped = None  # where a level stopped short, and why
        limits = None
        # the longest a part's level may take: every attempt failing slowly, CONNECT_CONCURRENCY at a time
        per_attempt_s = (cfg.connect_timeout + run.probe_timeout) / max(1, CONNECT_CONCURRENCY // spread.workers)
        connect_ns = array.array("q")
        by_source: Counter = Counter()
        states: list[dict] = []
        try:
            # a few connections opened, echoed and closed first: the server's one-off costs (the first accept,
            # lazy imports, allocator arenas) are then in the baseline, not charged to the connections measured
            loop.run_until_complete(run.warm_up(WARM_UP_CONNS))
            loop.run_until_complete(asyncio.sleep(SETTLE_S))
            base = server_rss(pid)
            for n in levels:
                before = Counter(_merge_counts([run.state(), *[x for x in parts.last if x]])["failures"])
                t0 = time.perf_counter()
                cpu0 = time.process_time() + sum((x or {}).get("cpu_s", 0.0) for x in parts.last)
                done_local = len(run.connect_ns)
                parts.send(lambda i, n=n: ("level", split(n, spread.workers, i)))  # each part's share, cumulative
                share = split(n, spread.workers, 0)
                loop.run_until_complete(run.open_level(share))
                deadline = time.monotonic() + 60 + share * per_attempt_s + (share / (cfg.connect_rate / spread.workers)
                                                                            if cfg.connect_rate else 0)
                answers = parts.collect(deadline)
                seconds = time.perf_counter() - t0
                client_cpu = time.process_time() + sum(a["cpu_s"] for a in answers) - cpu0
                connect_ns.extend(run.connect_ns[done_local:])
                for a in answers:
                    connect_ns.frombytes(a["connect_ns"])
                merged = _merge_counts([run.state(), *answers])
                held = merged["established"]
                loop.run_until_complete(asyncio.sleep(SETTLE_S))
                rss = server_rss(pid)
                limits = server_limits(pid)
                per = (rss - base) / held if rss is not None and base is not None and held else None
                prev = out_levels[-1] if out_levels else None
                marginal = None
                if prev and rss is not None and prev["server_rss_bytes"] is not None and held > prev["established"]:
                    marginal = (rss - prev["server_rss_bytes"]) / (held - prev["established"])
                new_fail = merged["failures"] - before
                out_levels.append({"planned": n, "attempted": merged["attempted"], "established": held,
                                   "failed": sum(merged["failures"].values()), "failures": dict(new_fail),
                                   "seconds": round(seconds, 3),
                                   "connects_per_s": round((held - (prev["established"] if prev else 0)) / seconds, 1)
                                   if seconds > 0 else None,
                                   "server_rss_bytes": rss,
                                   "server_rss_per_conn_bytes": round(per) if per is not None else None,
                                   "marginal_per_conn_bytes": round(marginal) if marginal is not None else None,
                                   # the load generator's CPU over the level (all its processes, % of its CPUs):
                                   # >= 90% and connects/s measures the client, not the server
                                   "client_cpu_pct": round(client_cpu / seconds
                                                           / min(len(client_cpus), spread.workers) * 100, 1)
                                   if seconds > 0 else None,
                                   "server_fds": (limits or {}).get("fds"),
                                   "server_threads": (limits or {}).get("threads")})
                log(f"idle: {held:,} of {merged['attempted']:,} connections held"
                    + (f", server RSS {rss / 2**20:,.1f} MiB" if rss is not None else ""))
                if merged["gave_up"] or (held == 0 and n != levels[-1]):
                    alive = server.alive() if server else (psutil.pid_exists(pid) if pid is not None else None)
                    stopped = {"level": n, "attempted": merged["attempted"], "established": held,
                               "reason": why_stopped(limits, alive, dict(merged["failures"]), cfg.connect_timeout),
                               "levels_not_attempted": [x for x in levels if x > n]}
                    log(f"idle: stopped at {held:,} connections: {stopped['reason']}")
                    break
            parts.send(("hold", cfg.hold, cfg.trickle))
            holds = [loop.run_until_complete(run.hold(cfg.hold, cfg.trickle))]
            answers = parts.collect(time.monotonic() + cfg.hold + run.probe_timeout + 60)
            holds += [a["hold"] for a in answers]
            hold = _merge_holds(holds, cfg.trickle)
            rss_end = server_rss(pid)
        except KeyboardInterrupt:
            interrupted = True
        except PartLost as exc:
            lost = str(exc)
        finally:
            by_source.update(run.by_source())
            states = [run.state()]
            run.close()
            for t in asyncio.all_tasks(loop):
                t.cancel()
            loop.close()
            asyncio.set_event_loop(None)
            # closing is bounded (PartLost deadlines); a second Ctrl-C or SIGTERM meanwhile must not cut it short
            old_int = signal.signal(signal.SIGINT, lambda *_: None)
            signal.signal(signal.SIGTERM, lambda *_: None)
            try:
                finals = parts.close()
            finally:
                signal.signal(signal.SIGINT, old_int)
                scope.restore()  # SIGTERM as before the run (and the affinity)
            parts = None
            if len(finals) < spread.workers - 1 and lost is None:
                lost = f"{spread.workers - 1 - len(finals)} load-generator process(es) did not report their counts"
            for f in finals:
                by_source.update(f.get("by_source") or {})
            states += finals
        server_alive = server.alive() if server else (psutil.pid_exists(pid) if pid is not None else None)
    finally:
        if parts is not None:
            parts.close()
        scope.close()  # the affinity given back, the managed server stopped

    final = _merge_counts(states)
    total_s = sum(lv["seconds"] for lv in out_levels)
    last = out_levels[-1] if out_levels else None
    lat = stats.percentiles_of(connect_ns)
    marginals = [lv["marginal_per_conn_bytes"] for lv in out_levels if lv["marginal_per_conn_bytes"] is not None]
    result = {
        "mode": "idle",
        "complete": (not interrupted and lost is None and stopped is None and bool(last) and last["failed"] == 0
                     and not hold["failures"] and server_alive is not False),
        "incomplete_reason": ("interrupted" if interrupted else lost if lost else "the server exited"
                              if server_alive is False else None),
        "connect": {"attempted": final["attempted"], "established": final["established"],
                    "failures": dict(final["failures"]),
                    "per_s": round(final["attempted"] / total_s, 1) if total_s > 0 else None,
                    # over the levels where no connection failed: the rate the server accepts at below its limit
                    "per_s_clean": _clean_rate(out_levels),
                    "latency_us": lat, "by_source": dict(sorted(by_source.items()))},
        "spread": {"workers": spread.workers, "source_addrs": [s for s in spread.sources if s is not None] or None,
                   "why": spread.why, "max_connect_failures": max_failures},
        "stopped": stopped,
        "server_limits": limits,
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
    doc = {"schema_version": doc_version(IDLE), "kind": IDLE, "config": cfg.as_dict(), "env": environment(),
           "target": {"host": host, "port": port, "server_model": cfg.server, "server_pid": pid},
           "pinning": {"loadgen_cpus": list(client_cpus), "server_cpus": list(server_cpus) if server_cpus else None},
           "fd_limit": fd_limit, "result": result}
    if WRONG_BYTES in hold["failures"] or final["failures"].get(WRONG_BYTES):
        return doc, EXIT_FAILURES
    return doc, EXIT_OK if result["complete"] else EXIT_INCOMPLETE


def _clean_rate(levels: list[dict]) -> float | None:
    held = seconds = 0.0
    prev = 0
    for lv in levels:
        if not lv["failures"]:
            held += lv["established"] - prev
            seconds += lv["seconds"]
        prev = lv["established"]
    return round(held / seconds, 1) if seconds > 0 and held else None


def _merge_holds(holds: list[dict], every: float | None) -> dict:
    failures: Counter = Counter()
    for h in holds:
        failures.update(h["failures"])
    return {"echoes": sum(h["echoes"] for h in holds), "failures": dict(failures), "every_s": every,
            "connections_lost": sum(h["connections_lost"] for h in holds),
            "connections_checked_by_echo": sum(h["connections_checked_by_echo"] for h in holds)}


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
    print(f"{'attempted':>10} {'held':>8} {'failed':>7} {'connects/s':>11} {'client CPU':>11} {'server RSS MiB':>15} "
          f"{'per conn':>10}", file=file)
    for lv in m["levels"]:
        rss = "-" if lv["server_rss_bytes"] is None else f"{lv['server_rss_bytes'] / 2**20:,.1f}"
        per = "-" if lv["server_rss_per_conn_bytes"] is None else f"{lv['server_rss_per_conn_bytes'] / 1024:,.1f} KiB"
        pct = lv.get("client_cpu_pct")
        print(f"{lv['attempted']:>10,} {lv['established']:>8,} {lv['failed']:>7,} {fmt(lv['connects_per_s']):>11} "
              f"{'-' if pct is None else f'{pct:.0f}%':>11} {rss:>15} {per:>10}", file=file)
    if m["note"]:
        print(m["note"], file=file)
    sp = r.get("spread") or {}
    if sp.get("workers", 1) > 1 or sp.get("source_addrs"):
        srcs = ", ".join(f"{a} {n:,}" for a, n in c.get("by_source", {}).items())
        procs = f"{sp['workers']} load-generator process" + ("es" if sp["workers"] > 1 else "")
        print(f"spread: {procs}; connections held by source address: {srcs}", file=file)
    if r.get("stopped"):
        st = r["stopped"]
        print(f"stopped at {st['established']:,} connections held (level {st['level']:,}): {st['reason']}"
              + (f"; not attempted: {', '.join(f'{x:,}' for x in st['levels_not_attempted'])}"
                 if st["levels_not_attempted"] else ""), file=file)
    t = r["trickle"]
    if t["every_s"]:
        print(f"trickle: {t['echoes']:,} echoes, every byte checked, one per connection every {t['every_s']:g} s"
              + (f"; failed: {t['failures']}" if t["failures"] else ""), file=file)
