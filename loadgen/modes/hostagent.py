"""One client host's share of a ``--cluster`` run: ``python -m loadgen.modes.hostagent``, started by the Dask task
(loadgen/modes/cluster.py ``host_task``) on that host, in a process of its own (a Dask worker's process is threaded
and daemonic: no place to fork load-generator workers from).

It is an ordinary run (loadgen/runner.py) of its share of the connections, with one difference: when every
connection is open it says ``ready`` and waits for the instant all hosts agreed on, instead of choosing its own.

stdin, JSON lines: the spec first, then ``{"kind": "start", "t_ns": T}`` (T on the coordinator's clock) or
``{"kind": "stop"}``; end of input is a stop. stdout, JSON lines: ``{"kind": "ready", ...}`` then
``{"kind": "final", ...}`` (this host's result document and the material the coordinator merges exactly).
Every time in what it sends is converted to the coordinator's clock, using the offset the coordinator measured.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import tempfile
import threading
import time

from servers.procs import die_with_parent

from ..config import LoadConfig
from ..runner import EXIT_USAGE, Abort, RunError, Runner, send
from ..target import TargetError

LATE_START_NS = 100_000_000  # a host that learns of the start instant this long after it is incomplete


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def config_from(d: dict) -> LoadConfig:
    """A LoadConfig from its ``as_dict()`` (lists back to tuples)."""
    d = dict(d)
    for k in ("server_args", "slos", "idle", "source_addrs", "cluster_workers", "cluster_tls"):
        d[k] = tuple(d.get(k) or ())
    for k in ("cpus", "server_cpus"):
        if d.get(k) is not None:
            d[k] = tuple(d[k])
    return LoadConfig(**d)


class AgentRunner(Runner):
    def __init__(self, cfg, log, conn_ids, offset_ns: int, starts: queue.Queue, start_wait_s: float) -> None:
        super().__init__(cfg, log, conn_ids=conn_ids)
        self.offset_ns = offset_ns  # this host's clock minus the coordinator's
        self.starts = starts
        self.start_wait_s = start_wait_s
        self.stop_event = threading.Event()
        # coordinator's clock = perf_counter_ns + shift: fixed once, at the start, so that a step or slew of
        # this host's wall clock during the run moves none of its times
        self.shift_ns: int | None = None
        self.late_ns = 0

    def start_instant(self, pipes) -> int:
        _emit({"kind": "ready", "conns": len(self.connect_ns), "pid": os.getpid()})
        try:
            msg = self.starts.get(timeout=self.start_wait_s)
        except queue.Empty:
            msg = {"kind": "stop", "reason": f"no start from the coordinator within {self.start_wait_s:.0f} s of ready"}
        if msg["kind"] != "start":
            self.incomplete = msg.get("reason") or "stopped by the coordinator before the start"
            for pp in pipes:
                send(pp, ("stop",))
            raise Abort()
        real, perf = time.time_ns(), time.perf_counter_ns()
        self.shift_ns = real - perf - self.offset_ns
        t0 = msg["t_ns"] - self.shift_ns  # the agreed instant on this host's perf_counter
        self.late_ns = max(0, perf - t0)
        if self.late_ns > LATE_START_NS:  # this host would measure a window of its own: say so, and stop
            self.incomplete = (f"the start instant reached this host {self.late_ns / 1e6:.0f} ms after it had passed "
                               f"(over {LATE_START_NS / 1e6:.0f} ms)")
            for pp in pipes:
                send(pp, ("stop",))
            raise Abort()
        return t0

    def merge_material(self) -> dict:
        """What the coordinator needs to merge this host exactly, every time on the coordinator's clock."""
        shift = self.shift_ns if self.shift_ns is not None else time.time_ns() - time.perf_counter_ns() - self.offset_ns
        intervals = [[i, w, {**rep, "t_ns": rep["t_ns"] + shift}]
                     for i, by_worker in sorted(self.intervals.items()) for w, rep in sorted(by_worker.items())]
        finals = [[w, {**f, "measured_end_ns": f["measured_end_ns"] + shift}] for w, f in sorted(self.finals.items())]
        side = None
        if self.client_side is not None:
            csid, wall = self.client_side
            side = {"seconds": csid.seconds, "busiest_process": csid.busiest_process, "cpus": csid.cpus, "wall_s": wall}
        return {"intervals": intervals, "finals": finals, "connect_ns": self.connect_ns,
                "warm_t_ns": None if self.warm_t_ns is None else self.warm_t_ns + shift,
                "incomplete": self.incomplete, "client_cpu": side, "start_late_us": round(self.late_ns / 1e3, 1)}


def _read_commands(commands, starts: queue.Queue, on_stop) -> None:
    """stdin after the spec: the start instant goes to the runner; a stop (or the coordinator's end of input)
    ends the run as Ctrl-C would, keeping what was measured (the runner checks for it; no signal is sent)."""
    for line in commands:
        msg = json.loads(line)
        starts.put(msg)
        if msg["kind"] != "start":
            on_stop(msg.get("reason") or "stopped by the coordinator")
            return
    starts.put({"kind": "stop", "reason": "the coordinator went away"})
    on_stop("the coordinator went away")


def main() -> int:
    # The commands come on a private copy of stdin, and stdin itself becomes /dev/null: a forked load-generator
    # worker closes sys.stdin first thing (multiprocessing), which would wait forever for the buffer lock that
    # the reader thread below holds while it waits for a line.
    commands = os.fdopen(os.dup(0), "r")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(os.devnull)
    spec = json.loads(commands.readline())
    # SIGTERM (a clean stop) when the Dask worker thread that started this agent dies; set here, after exec,
    # rather than in a preexec_fn of that threaded worker process
    if not die_with_parent(signal.SIGTERM, spec.get("parent_pid") or None):
        sys.exit(3)  # the parent died before the request took effect
    cfg = config_from(spec["cfg"])
    tmp = None
    if spec.get("tls_ca_pem"):  # the authority the coordinator trusts for this run's server
        tmp = tempfile.mkdtemp(prefix="echobench-agent-")
        ca = os.path.join(tmp, "ca.pem")
        with open(ca, "w") as f:
            f.write(spec["tls_ca_pem"])
        cfg = cfg.__class__(**{**cfg.__dict__, "tls_ca": ca})
    starts: queue.Queue = queue.Queue()

    def log(msg: str) -> None:
        print(f"loadgen[{spec.get('name', '?')}]: {msg}", file=sys.stderr, flush=True)

    runner = AgentRunner(cfg, log, spec["conn_ids"], int(spec["offset_ns"]), starts, float(spec["start_wait_s"]))

    def on_stop(reason: str) -> None:  # the runner acts on it while it connects or runs; afterwards it changes nothing
        runner.stop_reason = runner.stop_reason or reason
        runner.stop_event.set()

    threading.Thread(target=_read_commands, args=(commands, starts, on_stop), daemon=True).start()
    try:
        try:
            doc, code = runner.execute()
        except (RunError, TargetError) as exc:
            _emit({"kind": "final", "error": str(exc), "code": EXIT_USAGE if isinstance(exc, RunError) else 3})
            return 0
        doc["result"].pop("histogram_uncorrected", None)  # merged from the intervals instead
        _emit({"kind": "final", "doc": doc, "code": code, "merge": runner.merge_material()})
        return 0
    finally:
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides, through stdin
    sys.exit(main())
