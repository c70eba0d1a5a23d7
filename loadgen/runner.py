"""Orchestrates one load-generator run: server, workers, barrier, merging, CPU, faults.

Workers are forked processes (one event loop each) that connect, report
ready, and start together at one instant the parent chooses. Every second
each sends its interval (message count and encoded histograms); the parent
merges histograms (percentiles of the merged distribution, never averaged
percentiles), shows progress and samples CPU time of both sides.
"""

from __future__ import annotations

import datetime as dt
import math
import multiprocessing
import multiprocessing.connection
import os
import resource
import sys
import threading
import time
from dataclasses import replace

from . import hostload, stats
from .config import LoadConfig
from .engine import UDP_COUNTS, drain_seconds, native, worker_main
from .envinfo import environment
from .lifecycle import RunScope
from .output import SCHEMA_VERSION
from .output import where as _where
from .procs import pid_exists as _pid_exists
from .result import EXIT_FAILURES, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, exit_code  # noqa: F401 (home: result.py)
from .target import CpuSampler, ManagedServer, TargetError, cpu_delta

START_DELAY_NS = 50_000_000  # all workers start 50 ms after the parent says go
FDS_PER_WORKER_OVERHEAD = 64


class RunError(Exception):
    """Refused before any traffic: one line for the user."""


def plan_cpus(cfg: LoadConfig) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(load generator CPUs, server CPUs or None if not ours to pin)."""
    usable = tuple(sorted(os.sched_getaffinity(0)))
    for name, cpus in (("--cpus", cfg.cpus), ("--server-cpus", cfg.server_cpus)):
        if cpus and not set(cpus) <= set(usable):
            raise RunError(f"{name} {','.join(map(str, cpus))} is not within the usable CPUs {','.join(map(str, usable))}")
    if cfg.server is None:
        client = cfg.cpus or tuple(c for c in usable if not cfg.server_cpus or c not in cfg.server_cpus) or usable
        return client, cfg.server_cpus
    if cfg.cpus and cfg.server_cpus:
        return cfg.cpus, cfg.server_cpus
    if cfg.cpus:
        return cfg.cpus, tuple(c for c in usable if c not in cfg.cpus) or usable
    if cfg.server_cpus:
        return tuple(c for c in usable if c not in cfg.server_cpus) or usable, cfg.server_cpus
    if len(usable) == 1:
        return usable, usable
    half = len(usable) // 2
    return usable[half:], usable[:half]


def suite_cpus() -> tuple[int, ...]:
    """Every CPU a suite command pins its servers and load generator to (``--quiet-host`` watches them)."""
    client, server = plan_cpus(LoadConfig(server="placeholder"))
    return tuple(sorted(set(client) | set(server or ())))


def connect_budget_s(cfg: LoadConfig, conns: int) -> float:
    """How long ``conns`` connections over ``cfg.workers`` processes may take to connect, all told."""
    return cfg.connect_timeout * max(1, conns / 256 / cfg.workers) + 10


def ensure_fds(cfg: LoadConfig, conns: int | None = None) -> int:
    """Raise the soft RLIMIT_NOFILE as far as needed (up to the hard limit), or refuse."""
    conns = cfg.conns if conns is None else conns
    per_worker = math.ceil(conns / cfg.workers) + FDS_PER_WORKER_OVERHEAD
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= per_worker:
        return soft
    if hard != resource.RLIM_INFINITY and hard < per_worker:
        raise RunError(
            f"{conns} connections need about {per_worker} file descriptors per worker; the hard limit is {hard} "
            f"(raise it with 'ulimit -Hn' as root, or spread connections with --workers)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (per_worker if hard == resource.RLIM_INFINITY else hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Progress:
    """One live line on stderr (rich), refreshed at every interval of the timeline; plain lines (once a second) when
    stderr is not a terminal (CI logs); silent with --quiet."""

    def __init__(self, quiet: bool, total_s: float, sink=None, console=None) -> None:
        """``console``: a rich Console to draw on (a test's fake terminal); default stderr, when it is one."""
        self.live = None
        self.total_s = total_s
        self.sink = sink  # a caller's callable(text) instead of our own line (make bench's suite display)
        terminal = console.is_terminal if console is not None else sys.stderr.isatty()
        self.plain = sink is None and not quiet and not terminal
        self.last_plain = float("-inf")
        if quiet or self.plain or sink is not None:
            return
        from rich.console import Console
        from rich.live import Live

        self.live = Live(console=console or Console(stderr=True), auto_refresh=False, transient=True)
        self.live.start()

    def wants(self) -> bool:
        """Whether an update now would be seen (the plain log prints once a second: no line is computed between)."""
        if self.plain:
            return time.monotonic() - self.last_plain >= 1.0
        return self.shows

    @property
    def shows(self) -> bool:
        """Whether an update is seen (with --quiet nothing is: the line is then not even computed)."""
        return self.sink is not None or self.plain or self.live is not None

    def update(self, text: str) -> None:
        if self.sink is not None:
            self.sink(text)
        elif self.plain:  # a log, not a display: once a second, however short the timeline's intervals
            now = time.monotonic()
            if now - self.last_plain >= 1.0:
                self.last_plain = now
                print(f"loadgen: {text}", file=sys.stderr, flush=True)
        elif self.live is not None:
            from rich.text import Text

            self.live.update(Text(text), refresh=True)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def live_line(elapsed: float, total: float, msgs: float, p99_us: float, errors: int, server_pct: float | None,
              phase: tuple[str, float] | None) -> str:
    """The live view's line for the interval just ended: rate, p99, errors, server CPU, the profile's phase."""
    text = f"{elapsed:5.1f}/{total:g} s  {msgs:>9,.0f} msgs/s  p99 {p99_us:8.1f} us  errors {errors}"
    if server_pct is not None:
        text += f"  server CPU {server_pct:5.1f}%"
    if phase is not None:
        text += f"  [{phase[0]} {phase[1]:,.0f}/s offered]"
    return text


class Runner:
    def __init__(self, cfg: LoadConfig, log, progress_sink=None, conn_ids=None) -> None:
        self.cfg = cfg
        # the connections this run opens: all of them, or one host's share of a --cluster run (loadgen/modes/cluster.py)
        self.conn_ids = list(range(cfg.conns)) if conn_ids is None else list(conn_ids)
        self.client_side: tuple[stats.SideCpu, float] | None = None  # the load generator's CPU, the window (s)
        # set from another thread to end the run as Ctrl-C would, saying why (a --cluster host's coordinator)
        self.stop_event: threading.Event | None = None
        self.stop_reason: str | None = None
        self.log = log  # one-line messages to stderr (silenced by --quiet)
        self.progress_sink = progress_sink
        self.tls_dir: str | None = None  # the session certificates of a --tls --server run
        self.server: ManagedServer | None = None
        self.incomplete: str | None = None
        self.intervals: dict[int, dict[int, dict]] = {}  # interval -> worker -> report
        from .profile import parse as parse_profile

        self.profile = parse_profile(cfg.profile) if cfg.profile else None  # --profile's schedule, parsed once
        self.server_sampler: CpuSampler | None = None
        # the server's CPU seconds and memory when each interval's last report came in: interval -> (ns, s, bytes)
        self.server_samples: dict[int, tuple[int, float, int | None]] = {}
        self.finals: dict[int, dict] = {}
        self.connect_ns: list[int] = []
        self.warm_t_ns: int | None = None
        self.cpu_start: tuple[dict, dict | None, dict] | None = None  # client CPU, server CPU, client run-queue wait
        self.cpu_end: tuple[dict, dict | None, dict] | None = None
        self.t_cpu_start = self.t_cpu_end = None
        self.host_watch: hostload.Watch | None = None
        self.host: hostload.HostLoad | None = None  # foreign CPU and steal on this run's CPUs in the window
        self.path = cfg.path

    # -- the run ---------------------------------------------------------------------
    def execute(self) -> tuple[dict, int]:
        try:
            engine, note = native.resolve(self.cfg.engine, self.cfg.transport, self.cfg.depth, self.cfg.tls)
        except ValueError as exc:
            raise RunError(f"--engine native: {exc}") from None
        if note is not None and self.cfg.transport != "udp" and not self.cfg.tls:  # the documented rules
            self.log(f"using the Python engine: {note}")
        self.cfg = cfg = replace(self.cfg, engine=engine, engine_note=note)
        env = environment()
        client_cpus, server_cpus = plan_cpus(cfg)
        fd_limit = ensure_fds(cfg, len(self.conn_ids))
        host, port, server_pid = cfg.host, cfg.port, cfg.server_pid
        progress = None
        procs: list = []
        pipes: list = []
        scope = RunScope(cfg).__enter__()  # SIGTERM as Ctrl-C, the affinity given back, the server stopped
        try:
            path = cfg.path
            if cfg.server:
                cfg = self.cfg = scope.start_server(server_cpus)
                self.server, self.tls_dir = scope.server, scope.tls_dir
                if cfg.transport == "unix":
                    path = self.server.addr[0]
                else:
                    host, port = self.server.addr
                server_pid = self.server.pid
                self.log(f"started {cfg.server} (pid {server_pid}) on {_where(cfg.transport, host, port, path)}, CPUs {_fmt(server_cpus)}")
            if server_pid is not None and not _pid_exists(server_pid):
                raise RunError(f"--server-pid {server_pid}: no such process")
            scope.pin(client_cpus)
            ctx = multiprocessing.get_context("fork")
            shares = [self.conn_ids[i::cfg.workers] for i in range(cfg.workers)]
            run_cfg = replace(cfg, host=host, port=port, path=path)
            self.path = path
            for i, ids in enumerate(shares):
                parent_end, child_end = ctx.Pipe()
                p = ctx.Process(target=worker_main, daemon=True,
                                args=(run_cfg, i, ids, child_end, client_cpus[i % len(client_cpus)], [*pipes, parent_end]))
                p.start()
                child_end.close()
                procs.append(p)
                pipes.append(parent_end)
            self._connect_phase(pipes)
            client = CpuSampler([os.getpid()] + [p.pid for p in procs], children=False)
            server = CpuSampler([server_pid], children=True) if server_pid is not None else None
            self.server_sampler = server
            # what else ran on the CPUs this run pins to, over the measured window (loadgen/hostload.py)
            self.host_watch = hostload.Watch(server_cpus or (), client_cpus,
                                             extra_roots=(server_pid,) if server_pid is not None else ())
            t0 = self.start_instant(pipes)
            for pp in pipes:
                pp.send(("start", t0))
            progress = Progress(cfg.quiet, cfg.warmup + cfg.duration, self.progress_sink)
            self._traffic_phase(pipes, t0, client, server, progress)
        except Abort:
            pass
        except KeyboardInterrupt:
            self.incomplete = self.incomplete or "interrupted"
            for pp in pipes:
                send(pp, ("stop",))
            self._collect_finals(pipes, deadline=time.monotonic() + 3)
        finally:
            if progress is not None:
                progress.stop()
            scope.restore()  # SIGTERM and the affinity first: an in-process caller (make bench) plans its next run
            for p in procs:
                p.join(2)
                if p.is_alive():
                    p.kill()
            scope.close()  # the managed server stopped, its certificate folder removed
        doc = self.document(env, client_cpus, server_cpus, server_pid, host, port, fd_limit)
        return doc, exit_code(doc["result"])

    def _check_stop(self) -> None:
        if self.stop_event is not None and self.stop_event.is_set():
            self.incomplete = self.incomplete or self.stop_reason or "stopped"
            raise KeyboardInterrupt

    def start_instant(self, pipes) -> int:
        """The perf_counter_ns instant every worker starts at, once all are connected (a --cluster host agent
        waits for the instant all hosts agreed on instead: loadgen/modes/hostagent.py)."""
        return time.perf_counter_ns() + START_DELAY_NS

    def _connect_phase(self, pipes) -> None:
        deadline = time.monotonic() + connect_budget_s(self.cfg, len(self.conn_ids))
        ready = set()
        while len(ready) < len(pipes):
            self._check_stop()
            left = deadline - time.monotonic()
            if left <= 0:
                raise RunError("workers did not finish connecting in time")
            for pp in multiprocessing.connection.wait([p for p in pipes if id(p) not in ready], min(left, 0.2)):
                try:
                    kind, idx, data = pp.recv()
                except (EOFError, OSError):
                    raise RunError("a load-generator worker died while connecting") from None
                self.connect_ns += data.get("connect_ns", [])
                if kind == "fatal":
                    cfg = self.cfg
                    if self.server:
                        where = f"{self.server.model} at {_where(cfg.transport, *self.server.addr[:2], self.server.addr[0])}"
                    else:
                        where = _where(cfg.transport, cfg.host, cfg.port, cfg.path)
                    hint = " (is a server listening there?)" if data["kind"] in ("connection refused", "no such socket file") else ""
                    self.incomplete = f"{data['message']} to {where}{hint}"
                    for other in pipes:
                        send(other, ("stop",))
                    raise Abort()
                ready.add(id(pp))

    def _traffic_phase(self, pipes, t0, client, server, progress) -> None:
        cfg = self.cfg
        warm_end = t0 + int(cfg.warmup * 1e9)
        end = warm_end + int(cfg.duration * 1e9)
        hard_deadline = time.monotonic() + (end - time.perf_counter_ns()) / 1e9 + drain_seconds(cfg) + 10
        open_pipes = list(pipes)
        while open_pipes:
            self._check_stop()
            now = time.perf_counter_ns()
            if self.cpu_start is None and now >= warm_end:
                self.cpu_start = (client.sample(), server.sample() if server else None, client.waits())
                self.t_cpu_start = now
                if self.host_watch is not None:
                    self.host_watch.start()
                if server is not None:  # the timeline's first server sample
                    self._sample_server(-1)
            if self.cpu_end is None and now >= end:
                self.cpu_end = (client.sample(), server.sample() if server else None, client.waits())
                self.t_cpu_end = now
                self.host = self.host_watch.stop() if self.host_watch is not None else None
            if self.server is not None and not self.server.alive() and self.incomplete is None:
                self.incomplete = f"server {self.server.model} died mid-run (exit code {self.server.proc.returncode}): {self.server.stderr_tail(3)}"
                for pp in open_pipes:
                    send(pp, ("stop",))
            if time.monotonic() > hard_deadline:
                self.incomplete = self.incomplete or "workers did not finish before the deadline"
                break
            nxt = [x for x in (warm_end, end) if x > now]
            timeout = min(0.2, (min(nxt) - now) / 1e9) if nxt else 0.2
            for pp in multiprocessing.connection.wait(open_pipes, max(0.0, timeout)):
                try:
                    kind, idx, data = pp.recv()
                except (EOFError, OSError):  # a worker that died, even halfway through a report
                    open_pipes.remove(pp)
                    if idx_missing := [i for i in range(len(pipes)) if i not in self.finals]:
                        self.incomplete = self.incomplete or f"load-generator worker(s) {idx_missing} died"
                    continue
                self._on_report(kind, idx, data, progress, t0)
                if kind == "final":
                    open_pipes.remove(pp)
                    if data["outcome"] != "complete" and self.incomplete is None:
                        self.incomplete = data["outcome"]
                        for other in open_pipes:
                            send(other, ("stop",))
        if self.cpu_end is None:  # cut short: CPU up to now
            self.cpu_end = (client.sample(), server.sample() if server else None, client.waits())
            self.t_cpu_end = time.perf_counter_ns()
            self.host = self.host_watch.stop() if self.host_watch is not None else None

    def _collect_finals(self, pipes, deadline: float) -> None:
        waiting = [p for i, p in enumerate(pipes) if i not in self.finals]
        while waiting and time.monotonic() < deadline:
            for pp in multiprocessing.connection.wait(waiting, max(0.0, deadline - time.monotonic())):
                try:
                    kind, idx, data = pp.recv()
                except (EOFError, OSError):
                    waiting.remove(pp)
                    continue
                self._on_report(kind, idx, data, None, None)
                if kind == "final":
                    waiting.remove(pp)

    def _on_report(self, kind, idx, data, progress, t0) -> None:
        if kind == "warm":
            self.warm_t_ns = data["t_ns"] if self.warm_t_ns is None else min(self.warm_t_ns, data["t_ns"])
        elif kind == "interval":
            for name in ("hist", "hist_unc", "lag"):  # the worker sends raw samples: histograms are made here
                raw = data.pop(name + "_raw", None)
                if raw is not None:
                    data[name] = stats.encode_samples(raw)
            self.intervals.setdefault(data["i"], {})[idx] = data
            got = self.intervals[data["i"]]
            if len(got) == self.cfg.workers and self.server_sampler is not None:
                self._sample_server(data["i"])
            if progress is not None and progress.wants() and len(got) == self.cfg.workers:
                span = max(r["span_ns"] for r in got.values()) / 1e9
                msgs = sum(r["msgs"] for r in got.values()) / span if span > 0 else 0
                h = stats.merge([r["hist"] for r in got.values()])
                p99 = h.get_value_at_percentile(99) / 1000 if h.get_total_count() else float("nan")
                errs = sum(r["errors"] + r["integrity"] for r in got.values())
                elapsed = (time.perf_counter_ns() - t0) / 1e9
                progress.update(live_line(elapsed, progress.total_s, msgs, p99, errs, self._server_pct(data["i"]),
                                          self._phase_at(elapsed - self.cfg.warmup)))
        elif kind == "final":
            self.finals[idx] = data

    # -- the result document ------------------------------------------------------------
    def document(self, env, client_cpus, server_cpus, server_pid, host, port, fd_limit) -> dict:
        cfg = self.cfg
        finals = list(self.finals.values())
        intervals = [self.intervals[i] for i in sorted(self.intervals)]
        per_conn = [n for f in finals for n in f["per_conn"]]
        messages = sum(per_conn)
        end_ns = max((f["measured_end_ns"] for f in finals), default=None)
        if end_ns is None and intervals:
            end_ns = max(r["t_ns"] for r in intervals[-1].values())
        duration = max(0.0, (end_ns - self.warm_t_ns) / 1e9) if (end_ns and self.warm_t_ns) else 0.0
        if len(finals) < cfg.workers and self.incomplete is None:
            self.incomplete = "not every worker reported"
        if finals:  # interval sums must agree with the final counts: a cheap self-check
            summed = sum(r["msgs"] for iv in intervals for r in iv.values())
            if summed != messages and self.incomplete is None:
                self.incomplete = f"internal: interval counts ({summed}) disagree with totals ({messages})"
        lat = stats.merge([r["hist"] for iv in intervals for r in iv.values()])
        open_loop = cfg.rate is not None
        unc = stats.merge([r.get("hist_unc", "") for iv in intervals for r in iv.values()]) if open_loop else None
        lag = stats.merge([r.get("lag", "") for iv in intervals for r in iv.values()]) if open_loop else None
        errors: dict[str, int] = {}
        integrity: dict[str, int] = {}
        samples: list[str] = []
        for f in finals:
            for k, v in f["errors"].items():
                errors[k] = errors.get(k, 0) + v
            for k, v in f["integrity"].items():
                integrity[k] = integrity.get(k, 0) + v
            samples += f["integrity_samples"]
        udp = None
        if cfg.transport == "udp" and finals:
            udp = {k: sum((f.get("udp") or {}).get(k, 0) for f in finals) for k in UDP_COUNTS}
            resolved = udp["sent"] - udp["unresolved"]
            udp["loss_pct"] = round(100 * udp["lost"] / resolved, 4) if resolved else None
            udp["note"] = ("counts cover the whole run (warm-up and drain included) except lost_in_window; lost = not "
                           "echoed within --timeout; latency percentiles are of delivered datagrams only")
        wall = ((self.t_cpu_end or 0) - (self.t_cpu_start or 0)) / 1e9 if self.cpu_start else 0.0
        cpu = {"loadgen_pct": None, "server_pct": None, "server_us_per_msg": None, "loadgen_us_per_msg": None,
               "loadgen_cpu_s": None, "server_cpu_s": None, "window_s": round(wall, 3)}
        verdict, detail = "unknown", "no measured window"
        if self.cpu_start and self.cpu_end and wall > 0:
            c_total, c_busiest = cpu_delta(self.cpu_start[0], self.cpu_end[0])
            csid = stats.SideCpu(c_total, c_busiest, min(cfg.workers, len(client_cpus)))
            ssid = None
            if self.cpu_start[1] is not None and self.cpu_end[1] is not None:
                s_total, s_busiest = cpu_delta(self.cpu_start[1], self.cpu_end[1])
                ssid = stats.SideCpu(s_total, s_busiest, len(server_cpus) if server_cpus else len(os.sched_getaffinity(0)))
                cpu.update(server_pct=round(s_total / wall * 100, 1), server_cpu_s=round(s_total, 3),
                           server_us_per_msg=stats.per_msg_us(s_total, messages),
                           server_busiest_pct=round(s_busiest / wall * 100, 1))
            cpu.update(loadgen_pct=round(c_total / wall * 100, 1), loadgen_cpu_s=round(c_total, 3),
                       loadgen_us_per_msg=stats.per_msg_us(c_total, messages),
                       loadgen_busiest_pct=round(c_busiest / wall * 100, 1))
            w0, w1 = self.cpu_start[2], self.cpu_end[2]
            wait = stats.wait_pct(w0, w1, wall)
            if wait is not None:
                cpu["loadgen_wait_pct"] = wait
            verdict, detail = stats.verdict(csid, ssid, wall)
            self.client_side = (csid, wall)
        timeline = self.timeline(intervals)
        result = {
            "complete": self.incomplete is None,
            "incomplete_reason": self.incomplete,
            "messages": messages,
            "messages_total": sum(f["messages_total"] for f in finals),
            "bytes": messages * cfg.size,
            "duration_s": round(duration, 4),
            "msgs_per_s": round(messages / duration, 1) if duration > 0 else 0.0,
            "mb_per_s": round(messages * cfg.size / duration / 1e6, 3) if duration > 0 else 0.0,
            "latency_us": stats.summary_us(lat),
            "latency_uncorrected_us": stats.summary_us(unc) if unc is not None else None,
            "send_lag_us": stats.summary_us(lag) if lag is not None else None,
            "connect_us": stats.percentiles_of(self.connect_ns),
            "connections": {"requested": len(self.conn_ids), "established": len(self.connect_ns)},
            "errors": errors,
            "integrity_failures": sum(integrity.values()),
            "integrity": integrity,
            "integrity_samples": samples[:10],
            "udp": udp,
            "cpu": cpu,
            "fairness": stats.fairness(per_conn),
            "engine": self._engine_stats(finals),
            "verdict": verdict,
            "verdict_detail": detail,
            # the CPU other processes took on this run's CPUs in the measured window, and steal (hostload.py)
            "host": self.host.as_dict() if self.host is not None else None,
            "timeline": timeline,
            "histogram_unit": "ns",
            "histogram": stats.encode(lat),
            "histogram_uncorrected": stats.encode(unc) if unc is not None else None,
            "recovery": self._recovery(timeline),  # with a --profile that spikes: what each spike did
            "capacity": None,  # set by a --find-capacity search (loadgen/modes/capacity.py)
            "sweep": None,  # set by --sweep (loadgen/modes/capacity.py)
        }
        self._lat = lat
        return {
            "schema_version": SCHEMA_VERSION,
            "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "env": env,
            "config": cfg.as_dict(),
            "target": {"transport": cfg.transport, "host": None if cfg.transport == "unix" else host,
                       "port": None if cfg.transport == "unix" else port, "path": self.path,
                       "server_model": cfg.server, "server_pid": server_pid,
                       # which interpreter ran the server (env.python_build describes this process's, which is the
                       # server's when echobench started it; a server given by --server-pid may be another)
                       "server_exe": _exe(server_pid),
                       "mode": "open loop" if open_loop else "closed loop"},
            "pinning": {"loadgen_cpus": list(client_cpus), "server_cpus": list(server_cpus) if server_cpus else None,
                        "server_pinned_by_loadgen": bool(cfg.server and server_cpus)},
            "fd_limit": fd_limit,
            "result": result,
        }


    def _server_pct(self, i: int) -> float | None:
        a, b = self.server_samples.get(i - 1), self.server_samples.get(i)
        if a is None or b is None or b[0] <= a[0]:
            return None
        return (b[1] - a[1]) / ((b[0] - a[0]) / 1e9) * 100

    def _phase_at(self, t: float) -> tuple[str, float] | None:
        """The --profile's phase at ``t`` seconds and the rate it offers then (the live line's)."""
        if self.profile is None:
            return None
        t = max(0.0, t)
        return self.profile.phases[self.profile.phase_at(t)].kind, self.profile.rate_at(t)

    def _recovery(self, timeline: list[dict]) -> list[dict] | None:
        """Per spike of the --profile: its backlog, latency peak, time to recover (loadgen/profile.py
        ``recovery``), judged against a ``--slo p99=...`` when one is given; None without a spike."""
        if self.profile is None or not any(p.kind == "spike" for p in self.profile.phases):
            return None
        from .modes.capacity import parse_slo
        from .profile import recovery

        slo = next((x.limit_us for x in map(parse_slo, self.cfg.slos) if x.percentile == "p99"), None)
        return recovery(timeline, self.profile, slo)

    def _sample_server(self, i: int) -> None:
        """The server's CPU clock (ns, its descendants included) and resident memory, at the end of interval i."""
        from .procs import process_cpu_ns

        try:
            cpu = process_cpu_ns(self.server_sampler.roots[0].pid, True) / 1e9
        except (ProcessLookupError, IndexError):
            return
        self.server_samples[i] = (time.perf_counter_ns(), cpu, self.server_sampler.rss())

    def timeline(self, intervals: list[dict[int, dict]]) -> list[dict]:
        """The run interval by interval (``cfg.tick_s``): offered (what the schedule made due in it: the profile's
        count, or the constant rate) and achieved msgs/s, latency percentiles, errors, the server's CPU and memory
        as sampled when the interval's last report came in, and the interval's own latency histogram (encoded),
        so that any window's percentiles can be computed exactly by merging its intervals' histograms."""
        cfg = self.cfg
        prof = self.profile
        out = []
        last_err: dict[int, int] = {}
        for i, iv in enumerate(intervals):
            h = stats.merge([r["hist"] for r in iv.values()])
            n = sum(r["msgs"] for r in iv.values())
            t_end = max(r["t_ns"] for r in iv.values())
            span = max(r["span_ns"] for r in iv.values()) / 1e9
            t = (t_end - self.warm_t_ns) / 1e9 if self.warm_t_ns else float(i + 1)
            errs = {w: r["errors"] + r["integrity"] for w, r in iv.items()}
            new_errors = sum(v - last_err.get(w, 0) for w, v in errs.items())
            last_err.update(errs)
            offered = due = None
            if prof is not None and span > 0:
                due = prof.due_in(max(0.0, t - span), t)
                offered = due / span
            elif cfg.rate is not None:
                offered = cfg.rate
            counted = h.get_total_count()
            entry = {"i": i, "t_s": round(t, 3), "span_s": round(span, 4),
                     "due": due, "messages": n,  # exact counts: scheduled in it (a profile's), echoed in it
                     "offered_per_s": None if offered is None else round(offered, 1),
                     "msgs_per_s": round(n / span, 1) if span > 0 else None,
                     "p50_us": round(h.get_value_at_percentile(50) / 1000, 3) if counted else None,
                     "p99_us": round(h.get_value_at_percentile(99) / 1000, 3) if counted else None,
                     "p999_us": round(h.get_value_at_percentile(99.9) / 1000, 3) if counted else None,
                     "errors": new_errors, "server_cpu_pct": None, "server_rss_mb": None,
                     "phase": prof.phases[prof.phase_at(max(0.0, t - span / 2))].kind if prof else None,
                     "histogram": stats.encode(h) if counted else None}
            a, b = self.server_samples.get(i - 1), self.server_samples.get(i)
            if b is not None:
                entry["server_rss_mb"] = None if b[2] is None else round(b[2] / 2**20, 2)
                if a is not None and b[0] > a[0]:
                    entry["server_cpu_pct"] = round((b[1] - a[1]) / ((b[0] - a[0]) / 1e9) * 100, 1)
            out.append(entry)
        return out

    def _engine_stats(self, finals: list[dict]) -> dict:
        """Which engine ran, and for the native one how bursty the echoes came (events per epoll wake-up)."""
        out = {"name": self.cfg.engine, "note": self.cfg.engine_note}
        ep = [f["epoll"] for f in finals if f.get("epoll")]
        if ep:
            waits, events = sum(e["waits"] for e in ep), sum(e["events"] for e in ep)
            out.update(epoll_waits=waits, events_per_wait=round(events / waits, 3) if waits else None)
        threads = [f["threads"] for f in finals if f.get("threads") is not None]
        if threads:  # threads in the busiest worker process while it ran (1 = none started; more cost per syscall)
            out["worker_threads"] = max(threads)
        return out


class Abort(Exception):
    """Raised inside execute() to end the run early with self.incomplete set."""


def session_certs(extra_names: tuple[str, ...] = ()):
    """(temporary folder, servers.tls.SessionCerts) for a --tls --server run."""
    # a fresh authority and server certificate (servers.tls, trustme) in a private temporary folder
    import tempfile

    from servers import tls

    if reason := tls.unavailable_reason():
        raise RunError(f"--tls with --server: {reason}")
    import shutil

    d = tempfile.mkdtemp(prefix="echobench-tls-")
    try:
        c = tls.make_session_certs(d, extra_names)
    except Exception as exc:  # noqa: BLE001 (disk full, a cryptography error: one line, the folder removed)
        shutil.rmtree(d, ignore_errors=True)
        raise RunError(f"--tls: cannot make the session certificate: {exc}") from None
    return d, c


def send(pipe, msg) -> None:
    try:
        pipe.send(msg)
    except (BrokenPipeError, OSError):
        pass




def _fmt(cpus) -> str:
    return ",".join(map(str, cpus)) if cpus else "any"


__all__ = ["Runner", "RunError", "TargetError", "EXIT_OK", "EXIT_FAILURES", "EXIT_USAGE", "EXIT_INCOMPLETE"]


def _exe(pid: int | None) -> str | None:
    """The executable of process ``pid`` (/proc/PID/exe), or None where it cannot be read."""
    if not pid:
        return None
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
