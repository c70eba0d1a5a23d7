"""The probe behind 2026-12-06-threads-at-scale.md: the ``threads`` model at N busy connections.

Per level (connections, GIL switch interval): the server (``python -m servers threads``, the interval set with
``sys.setswitchinterval`` before it starts) pinned to CPU 0, the load generator (native engine, closed loop,
1 KiB) on CPU 1. Inside the load generator's measured window, two samples about 2 s apart of: the server's threads,
its listener's accept queue (``ss``: connections the kernel completed and the server has not accepted), its
user and kernel CPU (/proc/PID/stat), and the context switches of all its threads (voluntary and not, summed over
/proc/PID/task/*/status). Bounded: 2 s warm-up, 4 s measured, 30 s echo timeout, one server at a time.

    python docs/measurements/2026-12-06-threads-probe.py 100:0.005 10000:0.005 10000:0.0005
    python docs/measurements/2026-12-06-threads-probe.py --perf 100:0.005 10000:0.005

With ``--perf``: ``perf record -e cpu-clock -C 0 -g`` for 1.5 s from the first sample (a software clock: this
host has no hardware counters), and the share of CPU 0's samples by the innermost user-space frame: the GIL's
locks (glibc's mutex and condition variable, ``take_gil``/``drop_gil``), the echo's ``send``/``recv`` (with the
kernel's TCP work under them), and the rest.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WARMUP, DURATION, GAP = 2.0, 4.0, 1.8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample(pid: int, port: int) -> dict:
    vol = inv = 0
    tasks = glob.glob(f"/proc/{pid}/task/*/status")
    for f in tasks:
        try:
            for line in open(f):
                if line.startswith("voluntary_ctxt_switches"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    inv += int(line.split()[1])
        except OSError:
            pass
    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ss = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout.split()
    hz = os.sysconf("SC_CLK_TCK")
    return {"t": time.monotonic(), "threads": len(tasks), "acceptq": int(ss[1]) if len(ss) > 1 else None,
            "user_s": int(stat[11]) / hz, "sys_s": int(stat[12]) / hz, "ctx": vol + inv}


GIL_FRAMES = ("pthread_cond", "lll_lock", "futex_abstimed", "pthread_mutex", "condvar", "take_gil", "drop_gil",
              "PyEval_RestoreThread", "PyEval_SaveThread", "PyThread_acquire_lock")


def perf_shares(data: str) -> dict:
    """{category: share of CPU 0's samples} from a ``perf record -g`` file."""
    text = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True, timeout=300).stdout
    counts = {"GIL locks": 0, "send/recv": 0, "other": 0}
    total = 0
    for block in text.split("\n\n"):
        lines = block.strip().splitlines()
        if not lines:
            continue
        total += 1
        user = [x.split()[1] for x in lines[1:] if "[kernel" not in x and len(x.split()) > 1]
        top = user[0] if user else ""
        if any(f in top for f in GIL_FRAMES):
            counts["GIL locks"] += 1
        elif "send" in top or "recv" in top:
            counts["send/recv"] += 1
        else:
            counts["other"] += 1
    return {k: v / total for k, v in counts.items()} if total else {}


NOWAIT = """import _thread, threading
def _start(self):
    with threading._active_limbo_lock:
        threading._limbo[self] = self
    _thread.start_new_thread(self._bootstrap, ())
threading.Thread.start = _start
threading.Thread.join = lambda self, timeout=None: None
"""


def per_second(timeline: list) -> tuple[int, int]:
    """The lowest and the highest count of echoes in one second of the measured window (from the timeline's
    100 ms intervals, timed from the window's start)."""
    secs: dict[int, int] = {}
    for iv in timeline:
        k = math.ceil(iv["t_s"] - 1e-6)
        secs[k] = secs.get(k, 0) + iv["messages"]
    return min(secs.values()), max(secs.values())


def level(conns: int, interval: float, perf: bool = False, nowait: bool = False) -> dict:
    port = free_port()
    code = (f"import sys, runpy; sys.setswitchinterval({interval}); sys.argv = ['servers', 'threads', '--port', "
            f"'{port}']; runpy.run_module('servers', run_name='__main__')")
    if nowait:  # Thread.start returns at once, not after the new thread has run (and so taken the GIL) once
        code = NOWAIT + code
    srv = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
    out = Path(tempfile.mkdtemp(prefix="threads-probe-")) / "run.json"
    try:
        srv.stdout.readline()  # the ready line
        lg = subprocess.Popen([sys.executable, "loadgen/run.py", "--port", str(port), "--server-pid", str(srv.pid),
                               "--conns", str(conns), "--duration", str(DURATION), "--warmup", str(WARMUP), "--cpus",
                               "1", "--timeout", "30", "--json", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        a, later = None, []
        for line in lg.stderr:  # the progress log, once a second: "loadgen:   2.1/6 s ..."
            m = re.search(r"(\d+\.\d)/\d+(?:\.\d+)? s", line)
            if m and a is None and float(m.group(1)) >= WARMUP + 0.05:
                a = sample(srv.pid, port)
                timer = threading.Timer(GAP, lambda: later.append(sample(srv.pid, port)))
                timer.start()
                if perf:
                    rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-C", "0", "-g", "-o",
                                            str(out.parent / "perf.data"), "--", "sleep", "1.5"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lg.wait(120)
        timer.join()
        b = later[0]
        r = json.loads(out.read_text())["result"]
        shares = {}
        if perf:
            rec.wait(60)
            shares = perf_shares(str(out.parent / "perf.data"))
    finally:
        srv.terminate()
        stop_t = time.monotonic()
        try:
            srv.wait(30)
        except subprocess.TimeoutExpired:  # its main thread, which handles SIGTERM, did not get the GIL in time
            srv.kill()
            srv.wait(30)
        stop_s = time.monotonic() - stop_t
        shutil.rmtree(out.parent, ignore_errors=True)
    secs = b["t"] - a["t"]
    msgs = r["msgs_per_s"] * secs
    return {"conns": conns, "interval_ms": interval * 1e3, "msgs_per_s": r["msgs_per_s"],
            "jain": (r.get("fairness") or {}).get("jain"), "threads": b["threads"] - 1, "acceptq": b["acceptq"],
            "user_pct": (b["user_s"] - a["user_s"]) / secs * 100, "sys_pct": (b["sys_s"] - a["sys_s"]) / secs * 100,
            "ctx_per_s": (b["ctx"] - a["ctx"]) / secs, "ctx_per_msg": (b["ctx"] - a["ctx"]) / msgs if msgs else None,
            "perf": shares, "per_second": per_second(r["timeline"]), "nowait": nowait, "stop_s": stop_s}


if __name__ == "__main__":
    perf = "--perf" in sys.argv
    print("| connections | switch interval | msgs/s | lowest-highest second | Jain | echo threads | accept queue | "
          "user % | kernel % | context switches/s | per message |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in [a for a in sys.argv[1:] if a != "--perf"]:  # CONNS:INTERVAL[:nowait]
        c, i, *rest = spec.split(":")
        x = level(int(c), float(i), perf, rest == ["nowait"])
        per = "-" if x["ctx_per_msg"] is None else f"{x['ctx_per_msg']:,.1f}"
        lo, hi = x["per_second"]
        print(f"| {x['conns']:,}{' (start without waiting)' if x['nowait'] else ''} | {x['interval_ms']:g} ms | "
              f"{x['msgs_per_s']:,.0f} | {lo:,}-{hi:,} | {x['jain']} | {x['threads']:,} | "
              f"{x['acceptq']} | {x['user_pct']:.0f} | {x['sys_pct']:.0f} | {x['ctx_per_s']:,.0f} | {per} |"
              + (" CPU 0: " + ", ".join(f"{k} {v:.0%}" for k, v in x["perf"].items()) if x["perf"] else "")
              + (f" stopped {x['stop_s']:.1f} s after SIGTERM" if x["stop_s"] > 1 else ""), flush=True)
