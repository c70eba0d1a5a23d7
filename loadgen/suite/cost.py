"""``python -m loadgen.suite.cost`` / ``make bench-cost``: user-space instructions per message, per server model.

Seconds do not repeat on a shared machine; instruction counts do. Each Python server model runs under
``valgrind --tool=callgrind`` and is driven by a deterministic workload: ``--conns`` blocking connections,
``--size``-byte messages, one message in flight in all (each connection in turn sends its block of ``N / conns``
messages, each after the echo of the last), ``N`` messages. Two runs, of ``N1`` and ``N2`` messages, are subtracted: start-up, connects and
shutdown cancel, and ``(I(N2) - I(N1)) / (N2 - N1)`` is what one echo costs the server in user space. Repeated
``--repeats`` times from scratch, the figures' spread is printed (the goal: under 0.1%).

Repeatable by construction: ``PYTHONHASHSEED=0``, ``ECHOBENCH_SCHEDULER_SEED=0`` (trio's scheduler's coin),
address-space randomisation off for the server (``setarch -R``), a fixed environment, argv and working directory, the server pinned to one CPU, the client
strictly sequential.

Where the instructions go: the same subtraction per function (callgrind's inclusive cost), so the report's
tables say what one message costs inside each function, per model, and side by side for two models.

What the count does not see: kernel work (syscalls, TCP/IP: most of an echo's CPU time), cache misses and
branch mispredictions (no cache simulation), time spent waiting, and other processes. The wall-clock gate
(``make bench-compare``) stays for those; the count decides changes in the servers' own code.

Output: ``results/<stamp>-<sha>/cost.json`` (versioned) and ``cost.md``, ``results/latest`` pointing at it;
``python -m loadgen.suite.compare`` judges two such folders.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from servers import registry
from servers.net import read_ready_line

from .. import output, result
from ..config import OneLineParser
from ..envinfo import ROOT, environment
from ..payload import MessageMaker

COST_SCHEMA_VERSION = result.version(result.COST)
KIND = result.COST
READY_TIMEOUT_S = 120.0  # Python starting under valgrind takes seconds
STOP_TIMEOUT_S = 120.0
IO_TIMEOUT_S = 60.0
TOP = 15  # functions per model in the report
DEFAULT_SIDE_BY_SIDE = ("asyncio-streams", "asyncio-protocol")
_ANNOTATE_LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*?)(?:\s+\[(.*)\])?\s*$")


class CostError(Exception):
    """A measurement that could not be made (a server that did not start, a wrong echo): one line, exit 3."""


class UsageError(Exception):
    """A request that cannot be measured here (unknown model, missing tool): one line, exit 2."""


def python_models(transport: str) -> list[str]:
    """Every Python model (not the Go reference) that claims ``transport`` and can run here."""
    return [m.name for m in registry.MODELS.values()
            if not m.external and transport in m.transports and m.unavailable_reason() is None]


def tools_missing() -> str | None:
    for tool in ("valgrind", "callgrind_annotate", "callgrind_control", "setarch", "taskset"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: valgrind, util-linux)"
    return None


def _fixed_env(home: str, root: Path = ROOT) -> dict[str, str]:
    """The measured process's whole environment: the same on every run (its size moves the stack)."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
            "LC_ALL": "C", "HOME": home,
            "ECHOBENCH_SCHEDULER_SEED": "0",  # servers/trio_model.py: trio's scheduler flips coins
            "PYTHONPATH": str(root)}


def _echo(sock: socket.socket, msg: bytes, buf: bytearray, what: str) -> None:
    sock.sendall(msg)
    got = 0
    view = memoryview(buf)
    while got < len(msg):
        k = sock.recv_into(view[got:], len(msg) - got)
        if k == 0:
            raise CostError(f"the server closed the connection ({what})")
        got += k
    if buf != msg:
        raise CostError(f"the echo of {what} differs from what was sent")


def server_tasks(pid: int) -> list[str]:
    """``/proc`` stat files of every thread of ``pid`` and of its descendants (a multi-process server's workers)."""
    pids = [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    return [f"/proc/{p}/task/{t}/stat" for p in pids for t in os.listdir(f"/proc/{p}/task")]


def wait_idle(pid: int, timeout: float = IO_TIMEOUT_S) -> None:
    """Return once every thread of the server is asleep (state S: blocked in its next receive or poll), seen on
    two reads in a row. The server then has finished all the work of the last message, and does the next one's
    from the same place: without this, whether a model's next receive finds the message already there (gevent
    and trio try the socket before they yield to their hub) or a count is dumped mid-iteration depends on the
    timing of the two processes, and so does the count (gevent's repeats were ~3% apart)."""
    deadline = time.monotonic() + timeout
    files = server_tasks(pid)
    calm = 0
    while calm < 2:
        try:
            states = [open(f).read().rsplit(")", 1)[1].split()[0] for f in files]
        except (OSError, IndexError):  # a thread came or went (a thread-per-connection server): list them again
            files, states = server_tasks(pid), ["R"]
        calm = calm + 1 if all(st in "SDI" for st in states) else 0
        if time.monotonic() > deadline:
            raise CostError(f"the server (pid {pid}) did not go idle within {timeout:g} s after an echo")
        if calm < 2:
            time.sleep(0.0002)  # a poll with a deadline; the server runs on its own CPU meanwhile


def _drive(addr, transport: str, conns: int, size: int, n: int, socks: list, connected, idle=None) -> None:
    """The deterministic workload: ``n`` messages, one in flight in all, round robin over ``conns`` connections.

    Connections are opened one at a time, each with one echo before the next connects, so the server accepts
    them one by one in every run (accepting several per wake-up, as timing allows, would vary the count). They
    are left open in ``socks``: the caller stops the server first (closing them first would race the server's
    EOF handling against its shutdown, a different amount of work each run). ``connected()`` is called when
    every connection is up, before the measured messages; ``idle()`` after each echo, before the next message."""
    makers = [MessageMaker(c, size) for c in range(conns)]
    buf = bytearray(size)
    for c in range(conns):
        if transport == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(IO_TIMEOUT_S)
            s.connect(addr[0])
        else:
            s = socket.create_connection(addr, timeout=IO_TIMEOUT_S)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
        _echo(s, makers[c].message(0), buf, f"connection {c}'s first message")
    connected()
    # in blocks, connection by connection, not round robin: a thread-per-connection server then has one thread
    # at work for a whole block, instead of a hand-over of the GIL between two threads at every message, whose
    # timing (and so its instruction count) varies from run to run; an event loop does the same work either way
    for i in range(n):
        c = i * conns // n
        if idle is not None:
            idle()
        _echo(socks[c], makers[c].message(1 + i), buf, f"message {i} on connection {c}")


def measure_once(model: str, n: int, transport: str, conns: int, size: int, cpu: int,
                 server_args: tuple[str, ...], workdir: Path, annotate: bool,
                 root: Path = ROOT, python: str | None = None) -> tuple[int, dict[str, tuple]]:
    """One server process under callgrind, ``n`` messages: (user-space instructions, inclusive per function).
    The server's code is imported from ``root`` (another commit's worktree, for an A/B run) and run by ``python``
    (default this interpreter; a variant's, for make bench-pythons)."""
    out_dir = Path(tempfile.mkdtemp(prefix=f"cg-{model}-{n}-", dir=workdir))
    argv = ["setarch", platform.machine(), "-R", "taskset", "-c", str(cpu),
            "valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={out_dir}/cg.%p",
            "--dump-instr=no", "--compress-strings=no", "--compress-pos=no",
            python or sys.executable, "-m", "servers", model]
    path = None
    if transport == "unix":
        path = str(workdir / "cost.sock")  # the same path every run: same argv, same work
        argv += ["--transport", "unix", "--path", path]
    else:
        argv += ["--port", "0"]
    if registry.get(model).multiprocess:
        argv += ["--workers", "1"]
    argv += list(server_args)
    proc = subprocess.Popen(argv, cwd=root, env=_fixed_env(str(workdir), root), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    socks: list[socket.socket] = []
    try:
        try:
            host, port = read_ready_line(proc.stdout, READY_TIMEOUT_S)
        except (TimeoutError, EOFError, ValueError) as exc:
            raise CostError(f"{model} under valgrind did not start: {exc}; stderr: "
                            f"{_tail(proc)}") from None
        def dump(label: str) -> None:
            # The server is idle (every echo done, every process blocked in a system call): callgrind_control,
            # through vgdb (which can interrupt a blocked process), writes each process's counts so far and
            # zeroes them. Two dumps bracket the messages: start-up (thread starts, accepts) and shutdown, whose
            # work varies with thread timing, are never counted.
            for pid in [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]:
                r = subprocess.run(["callgrind_control", f"--dump={label}", str(pid)], capture_output=True, text=True,
                                   timeout=IO_TIMEOUT_S)
                if r.returncode != 0:
                    raise CostError(f"callgrind_control could not dump {model} (pid {pid}): {r.stdout.strip()[-200:]}")

        try:
            idle = lambda: wait_idle(proc.pid)  # noqa: E731
            _drive((host, port), transport, conns, size, n, socks, lambda: (idle(), dump("connected")), idle)
            idle()
            dump("workload")
        except (OSError, psutil.Error, subprocess.TimeoutExpired) as exc:
            raise CostError(f"{model} under valgrind: {type(exc).__name__}: {exc}; stderr: {_tail(proc)}") from None
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CostError(f"{model} under valgrind did not stop within {STOP_TIMEOUT_S:g} s") from None
        if proc.returncode != 0:
            raise CostError(f"{model} under valgrind exited with {proc.returncode}: {_tail(proc)}")
    finally:
        for s in socks:
            s.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if path:
            Path(path).unlink(missing_ok=True)
    files = sorted(out_dir.glob("cg.*.2"))  # the messages only: .1 is start-up, cg.PID the shutdown
    if not files:
        raise CostError(f"{model}: callgrind wrote no profile at the end of the workload")
    total, funcs = 0, {}
    for f in files:  # a multi-process model writes one profile per process: the server is all of them
        t, fs = read_profile(f, annotate)
        total += t
        for k, (own, incl) in fs.items():
            o, i = funcs.get(k, (0, 0))
            funcs[k] = (o + own, i + incl)
    shutil.rmtree(out_dir, ignore_errors=True)
    return total, funcs


def _tail(proc) -> str:
    try:
        err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
    except Exception:
        err = ""
    lines = [x for x in err.strip().splitlines() if not x.startswith("==")]
    return " | ".join(lines[-3:]) or "(nothing on stderr)"


def _annotate(path: Path, inclusive: bool) -> dict[str, int]:
    """{function: Ir} from callgrind_annotate (self cost, or inclusive), objects folded. Recursion levels stay
    apart (``name'2`` is a nested call of a recursive ``name``): see ``measure_model`` for why."""
    try:
        out = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", "--threshold=100",
                              str(path)], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise CostError(f"callgrind_annotate did not finish reading {path}") from None
    funcs: dict[str, int] = {}
    started = False
    for line in out.stdout.splitlines():
        if "file:function" in line:
            started = True
            continue
        m = _ANNOTATE_LINE.match(line) if started else None
        if not m or "PROGRAM TOTALS" in line:
            continue
        where = m.group(2)
        name = where.split(":", 1)[1] if ":" in where else where
        # an object without debug information gives "???:crc32_z [libz.so]": the file is unknown, the function is
        # not (it was dropped with the rest once, so work in libz or libc never showed); an address is no name
        if name.startswith(("???", "0x")):
            continue
        cost = int(m.group(1).replace(",", ""))
        # the same function can be listed per source file or object: self costs add up, inclusive ones overlap
        funcs[name] = max(funcs.get(name, 0), cost) if inclusive else funcs.get(name, 0) + cost
    return funcs


def read_profile(path: Path, annotate: bool = True) -> tuple[int, dict[str, tuple[int, int]]]:
    """(total Ir, {function: (self Ir, inclusive Ir)}) of one callgrind profile."""
    total, found = 0, False
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            total, found = max(total, int(line.split()[1])), True
    if not found:
        raise CostError(f"{path}: no instruction total in the profile")
    if not annotate or not total:  # a process idle between the dumps (reuseport's parent) costs nothing
        return total, {}
    own, incl = _annotate(path, False), _annotate(path, True)
    return total, {k: (own.get(k, 0), incl.get(k, 0)) for k in set(own) | set(incl)}


def measure_model(model: str, a, cpu: int, workdir: Path, log, root: Path = ROOT, every_function: bool = False,
                  label: str = "", python: str | None = None) -> dict:
    """Instructions per message for one model: ``repeats`` pairs of runs, each pair N1 then N2. The servers run
    from ``root``; ``every_function`` keeps every function above half an instruction per message (an A/B diff
    needs both sides' full tables), not only the report's top lists."""
    extra = tuple(a.server_args)
    per_msg, tops = [], []
    for r in range(a.repeats):
        annotate = r == 0  # where the instructions go: from the first pair (the counts repeat)
        t1, f1 = measure_once(model, a.n1, a.transport, a.conns, a.size, cpu, extra, workdir, annotate, root, python)
        t2, f2 = measure_once(model, a.n2, a.transport, a.conns, a.size, cpu, extra, workdir, annotate, root, python)
        dn = a.n2 - a.n1
        per_msg.append((t2 - t1) / dn)
        if annotate:
            tops.append({k: ((f2.get(k, (0, 0))[0] - f1.get(k, (0, 0))[0]) / dn,
                             (f2.get(k, (0, 0))[1] - f1.get(k, (0, 0))[1]) / dn) for k in set(f1) | set(f2)})
        log(f"cost: {label}{model}: repeat {r + 1}/{a.repeats}: {per_msg[-1]:,.1f} instructions/message")
    mean = statistics.fmean(per_msg)
    spread = (max(per_msg) - min(per_msg)) / mean if mean else None
    # The functions on the call stack when the counts are dumped (main, the interpreter's outermost frame, the
    # event loop's run call: everything down to the blocked epoll_wait) are charged the whole interval, as self
    # cost too: a dump's artefact. They span the whole message anyway, so they are left out; the interpreter's
    # real work shows as its nested levels (_PyEval_EvalFrameDefault'2 and deeper).
    costs = {k: v for k, v in tops[0].items() if max(v) < 0.95 * mean}
    by_self = sorted(costs, key=lambda k: -costs[k][0])[:TOP * 2]
    by_incl = sorted(costs, key=lambda k: -costs[k][1])[:TOP * 2]
    keep = [k for k in (costs if every_function else dict.fromkeys(by_self + by_incl)) if max(costs[k]) > 0.5]
    return {"instructions_per_msg": round(mean, 2), "runs": [round(x, 2) for x in per_msg],
            "spread": round(spread, 6) if spread is not None else None, "server_args": list(extra),
            "functions": [{"function": k, "self_per_msg": round(costs[k][0], 1),
                           "inclusive_per_msg": round(costs[k][1], 1)} for k in keep]}


def measure_at_once(tasks: list, measure, jobs: int, prefix: str) -> list:
    """``measure(task, cpu, workdir)`` for every task, ``jobs`` at once (at most one per usable CPU), each on a CPU
    and in a work folder of its own; the results in the tasks' order. The folders are all of one length (a folder
    is its server's HOME, and the path's length moves the count); the counts do not depend on the other CPU's load
    (an A/A run gives exact zeros with two at once). On an error or Ctrl-C nothing more starts, and the runs under
    way end within their own timeouts."""
    from concurrent.futures import ThreadPoolExecutor

    cpus = sorted(os.sched_getaffinity(0))
    jobs = max(1, min(jobs, len(cpus), len(tasks)))
    with tempfile.TemporaryDirectory(prefix=prefix) as work:
        dirs = [Path(work) / f"j{i}" for i in range(jobs)]
        for d in dirs:
            d.mkdir()
        free = list(range(jobs))
        lock = threading.Lock()

        def one(task):
            with lock:
                slot = free.pop()
            try:
                return measure(task, cpus[slot], dirs[slot])
            finally:
                with lock:
                    free.append(slot)

        pool = ThreadPoolExecutor(max_workers=jobs)
        try:
            return list(pool.map(one, tasks))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


# -- the report ------------------------------------------------------------------------------------

def markdown(doc: dict, pair: tuple[str, str] | None) -> str:
    cfg = doc["config"]
    models = doc["models"]
    lines = [f"# echobench cost: user-space instructions per message ({doc['timestamp']})", "",
             f"{cfg['conns']} connections, {output.human_size(cfg['size'])} messages over {cfg['transport']}, one message "
             f"in flight; (I(N2) - I(N1)) / (N2 - N1) with N1 = {cfg['n1']:,}, N2 = {cfg['n2']:,}; {cfg['repeats']} "
             f"repeats from scratch; callgrind, PYTHONHASHSEED=0, setarch -R, server pinned to one CPU. "
             f"Commit `{(doc['env'].get('git_commit') or '?')[:12]}`, Python {doc['env'].get('python')}, "
             f"uvloop {doc['env'].get('uvloop')}.", "",
             "What this counts: the server's own user-space instructions (Python, the event loop, libc). What it "
             "does not: kernel work (syscalls and TCP/IP, most of an echo's CPU time), cache misses, waiting. "
             "The wall-clock gate (`make bench-compare`) covers those, noisily; this count repeats to well "
             "under 0.1%, so it decides changes in the servers' own code.", "",
             "| model | instructions/msg | vs lowest | spread of repeats | repeats |", "|---|---|---|---|---|"]
    low = min(m["instructions_per_msg"] for m in models.values())
    for name, m in sorted(models.items(), key=lambda kv: kv[1]["instructions_per_msg"]):
        spread = "-" if m["spread"] is None else f"{m['spread'] * 100:.3f}%"
        lines.append(f"| {name} | {m['instructions_per_msg']:,.0f} | {m['instructions_per_msg'] / low:.2f}x | {spread} | "
                     + ", ".join(f"{x:,.1f}" for x in m["runs"]) + " |")
    lines += ["", "## Where each model's instructions go", "",
              "Per message, by function (the same N2 - N1 subtraction per function). **self**: instructions executed "
              "in the function itself; **inclusive**: with everything it calls (nested calls count in each caller). "
              "`name'2` is a nested level of a recursive function (the interpreter's eval loop calling itself). The "
              "call chain that spans the whole message (main, the outermost eval frame, the event loop's run call) "
              "is left out: the counts are dumped while it is on the stack, which charges it the whole interval.", ""]
    for name, m in sorted(models.items(), key=lambda kv: kv[1]["instructions_per_msg"]):
        total = m["instructions_per_msg"]
        fs = m["functions"]
        own = sorted(fs, key=lambda f: -f["self_per_msg"])[:TOP]
        incl = sorted((f for f in fs if f["inclusive_per_msg"] < 0.95 * total), key=lambda f: -f["inclusive_per_msg"])[:TOP]
        lines += [f"### {name}: {total:,.0f} per message", "", "| self | share | function | | inclusive | share | function |",
                  "|---|---|---|---|---|---|---|"]
        for i in range(max(len(own), len(incl))):
            a = own[i] if i < len(own) else None
            b = incl[i] if i < len(incl) else None
            left = f"{a['self_per_msg']:,.0f} | {a['self_per_msg'] / total:.1%} | `{a['function']}`" if a else " | | "
            right = (f"{b['inclusive_per_msg']:,.0f} | {b['inclusive_per_msg'] / total:.0%} | `{b['function']}`"
                     if b else " | | ")
            lines.append(f"| {left} | | {right} |")
        lines.append("")
    if pair and all(p in models for p in pair):
        a, b = pair
        fa = {f["function"]: f["self_per_msg"] for f in models[a]["functions"]}
        fb = {f["function"]: f["self_per_msg"] for f in models[b]["functions"]}
        diff = sorted(((k, fa.get(k, 0.0) - fb.get(k, 0.0)) for k in set(fa) | set(fb)), key=lambda kv: -abs(kv[1]))
        ta, tb = models[a]["instructions_per_msg"], models[b]["instructions_per_msg"]
        lines += [f"## `{a}` vs `{b}`: where the difference goes", "",
                  f"{a}: {ta:,.0f}, {b}: {tb:,.0f} instructions per message ({ta / tb:.2f}x, {ta - tb:+,.0f}). "
                  "Self cost per function, largest differences first (functions outside either model's list count "
                  "as 0 there).", "", f"| function | {a} | {b} | difference |", "|---|---|---|---|"]
        for k, d in diff[:TOP]:
            lines.append(f"| `{k}` | {fa.get(k, 0):,.0f} | {fb.get(k, 0):,.0f} | {d:+,.0f} |")
        ia = {f["function"]: f["inclusive_per_msg"] for f in models[a]["functions"] if f["inclusive_per_msg"] < 0.95 * ta}
        ib = {f["function"]: f["inclusive_per_msg"] for f in models[b]["functions"] if f["inclusive_per_msg"] < 0.95 * tb}
        idiff = sorted(((k, ia.get(k, 0.0) - ib.get(k, 0.0)) for k in set(ia) | set(ib)), key=lambda kv: -abs(kv[1]))
        lines += ["", "Inclusive cost per function (what each code path costs with everything it calls):", "",
                  f"| function | {a} | {b} | difference |", "|---|---|---|---|"]
        for k, d in idiff[:TOP]:
            lines.append(f"| `{k}` | {ia.get(k, 0):,.0f} | {ib.get(k, 0):,.0f} | {d:+,.0f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


# -- the command -----------------------------------------------------------------------------------

def run(a, log) -> tuple[Path, dict]:
    if (why := tools_missing()) is not None:
        raise UsageError(why)
    models = a.models or python_models(a.transport)
    for m in models:
        model = registry.MODELS.get(m)
        if model is None or model.external:
            raise UsageError(f"{m!r} is not a Python server model (choose from {', '.join(python_models(a.transport))})")
        if (why := model.unavailable_reason()) is not None:
            raise UsageError(f"{m}: {why}")
        if (why := model.transport_refusal(a.transport)) is not None:
            raise UsageError(why)
    cpu = min(os.sched_getaffinity(0))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    from .bench import git_short

    out_dir = Path(a.results) / f"{stamp}-{git_short()}"
    out_dir.mkdir(parents=True)
    t0 = time.monotonic()
    got = measure_at_once(models, lambda m, c, work: measure_model(m, a, c, work, log), a.jobs, "echobench-cost-")
    results = dict(zip(models, got))
    doc = {
        "kind": KIND, "schema_version": COST_SCHEMA_VERSION,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "env": environment(),
        "config": {"transport": a.transport, "conns": a.conns, "size": a.size, "n1": a.n1, "n2": a.n2,
                   "repeats": a.repeats, "tool": "callgrind", "cpu": cpu, "jobs": min(a.jobs, len(os.sched_getaffinity(0))),
                   "pythonhashseed": 0, "aslr": "off"},
        "models": results,
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    output.write_json(doc, str(out_dir / "cost.json"))
    (out_dir / "cost.md").write_text(markdown(doc, tuple(a.side_by_side.split(",")) if a.side_by_side else None))
    output.point_latest(Path(a.results), out_dir)
    return out_dir, doc


def load_cost(path: str) -> dict:
    """A cost document from a run folder or its cost.json; ValueError (one line) when it is not one."""
    doc, p = output.read_json(path, "cost.json")
    result.check(doc, KIND, p)
    models = doc.get("models")
    if (not isinstance(doc.get("config"), dict) or not isinstance(models, dict) or not models
            or not all(isinstance(m, dict) and isinstance(m.get("instructions_per_msg"), (int, float)) for m in models.values())):
        raise ValueError(f"{p}: incomplete cost document (config, models and their instructions_per_msg are needed)")
    return doc


def positive_count(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def main(argv=None) -> int:
    from ..config import parse_size

    p = OneLineParser(prog="python -m loadgen.suite.cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=lambda s: [x for x in s.split(",") if x], help="comma-separated (default: every "
                   "Python model that can run here)")
    p.add_argument("--transport", choices=["tcp", "unix"], default="tcp")
    p.add_argument("--conns", type=positive_count, default=10)
    p.add_argument("--size", type=parse_size, default=1024)
    p.add_argument("--n1", type=positive_count, default=1000, help="messages in the short run (default 1000)")
    p.add_argument("--n2", type=positive_count, default=3000, help="messages in the long run (default 3000)")
    p.add_argument("--repeats", type=positive_count, default=2, help="pairs of runs per model, to measure the spread (default 2)")
    p.add_argument("--jobs", type=positive_count, default=min(2, len(os.sched_getaffinity(0))),
                   help="callgrind runs at once, one per CPU (default: 2 where there are 2 CPUs)")
    p.add_argument("--server-arg", dest="server_args", action="append", default=[], metavar="ARG",
                   help="an extra argument for every server (e.g. --server-arg=--burn-loop=20)")
    p.add_argument("--side-by-side", default=",".join(DEFAULT_SIDE_BY_SIDE), metavar="A,B",
                   help="two models to compare function by function in the report (default asyncio-streams,asyncio-protocol)")
    p.add_argument("--results", default=str(ROOT / "results"), help="where run folders go (default results/)")
    p.add_argument("--quiet", action="store_true")
    p.error = lambda msg: (sys.stderr.write(f"python -m loadgen.suite.cost: error: {msg}\n"), sys.exit(2))
    a = p.parse_args(argv)
    if a.n2 <= a.n1:
        p.error("--n2 must be larger than --n1")
    if a.side_by_side and len(a.side_by_side.split(",")) != 2:
        p.error("--side-by-side takes two models, A,B")

    def log(msg: str) -> None:
        if not a.quiet:
            print(msg, file=sys.stderr, flush=True)

    try:
        out_dir, doc = run(a, log)
    except UsageError as exc:
        print(f"python -m loadgen.suite.cost: error: {exc}", file=sys.stderr)
        return 2
    except CostError as exc:
        print(f"python -m loadgen.suite.cost: error: {exc}", file=sys.stderr)
        return 3
    for name, m in sorted(doc["models"].items(), key=lambda kv: kv[1]["instructions_per_msg"]):
        spread = "-" if m["spread"] is None else f"{m['spread'] * 100:.3f}%"
        print(f"{name:<18} {m['instructions_per_msg']:>10,.1f} instructions/msg   spread {spread}")
    log(f"cost: {len(doc['models'])} models in {doc['elapsed_s']:.0f} s; report {out_dir / 'cost.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
