"""One client host's share of a ``--cluster`` run: ``python -m loadgen.hostagent``, started by the Dask task
(loadgen/cluster.py ``host_task``) on that host, in a process of its own (a Dask worker's process is threaded
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

from .config import LoadConfig
from .runner import EXIT_USAGE, Runner, RunError, _Abort, _send
from .target import TargetError

START_WAIT_S = 120.0  # ready, and no start (or stop) from the coordinator within this: give up on our own


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
    def __init__(self, cfg, log, conn_ids, offset_ns: int, starts: queue.Queue) -> None:
        super().__init__(cfg, log, conn_ids=conn_ids)
        self.offset_ns = offset_ns  # this host's clock minus the coordinator's
        self.starts = starts

    def start_instant(self, pipes) -> int:
        _emit({"kind": "ready", "conns": len(self.connect_ns), "pid": os.getpid()})
        try:
            msg = self.starts.get(timeout=START_WAIT_S)
        except queue.Empty:
            msg = {"kind": "stop", "reason": f"no start from the coordinator within {START_WAIT_S:.0f} s of ready"}
        if msg["kind"] != "start":
            self.incomplete = msg.get("reason") or "stopped by the coordinator before the start"
            for pp in pipes:
                _send(pp, ("stop",))
            raise _Abort()
        host_t = msg["t_ns"] + self.offset_ns  # the agreed instant on this host's clock
        return time.perf_counter_ns() + (host_t - time.time_ns())

    def merge_material(self) -> dict:
        """What the coordinator needs to merge this host exactly, every time on the coordinator's clock."""
        shift = time.time_ns() - time.perf_counter_ns() - self.offset_ns
        intervals = [[i, w, {**rep, "t_ns": rep["t_ns"] + shift}]
                     for i, by_worker in sorted(self.intervals.items()) for w, rep in sorted(by_worker.items())]
        finals = [[w, {**f, "measured_end_ns": f["measured_end_ns"] + shift}] for w, f in sorted(self.finals.items())]
        side = None
        if self.client_side is not None:
            csid, wall = self.client_side
            side = {"seconds": csid.seconds, "busiest_process": csid.busiest_process, "cpus": csid.cpus, "wall_s": wall}
        return {"intervals": intervals, "finals": finals, "connect_ns": self.connect_ns,
                "warm_t_ns": None if self.warm_t_ns is None else self.warm_t_ns + shift,
                "incomplete": self.incomplete, "client_cpu": side}


def _read_commands(commands, starts: queue.Queue, finished: threading.Event, on_stop) -> None:
    """stdin after the spec: the start instant goes to the runner; a stop (or the coordinator's end of input)
    interrupts the run as Ctrl-C would (the runner turns SIGTERM into that), keeping what was measured."""
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
    cfg = config_from(spec["cfg"])
    tmp = None
    if spec.get("tls_ca_pem"):  # the authority the coordinator trusts for this run's server
        tmp = tempfile.mkdtemp(prefix="echobench-agent-")
        ca = os.path.join(tmp, "ca.pem")
        with open(ca, "w") as f:
            f.write(spec["tls_ca_pem"])
        cfg = cfg.__class__(**{**cfg.__dict__, "tls_ca": ca})
    starts: queue.Queue = queue.Queue()
    finished = threading.Event()
    runner = None

    def on_stop(reason: str) -> None:
        if finished.is_set() or runner is None:
            return
        runner.incomplete = runner.incomplete or reason  # said in this host's result instead of "interrupted"
        os.kill(os.getpid(), signal.SIGTERM)

    def log(msg: str) -> None:
        print(f"loadgen[{spec.get('name', '?')}]: {msg}", file=sys.stderr, flush=True)

    runner = AgentRunner(cfg, log, spec["conn_ids"], int(spec["offset_ns"]), starts)
    threading.Thread(target=_read_commands, args=(commands, starts, finished, on_stop), daemon=True).start()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stop that comes once the run is over changes nothing
    try:
        try:
            doc, code = runner.execute()
        except (RunError, TargetError) as exc:
            finished.set()
            _emit({"kind": "final", "error": str(exc), "code": EXIT_USAGE if isinstance(exc, RunError) else 3})
            return 0
        finished.set()
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
