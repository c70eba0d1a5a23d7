"""What else ran on a run's CPUs: the CPU time other processes took, and what the hypervisor stole, per window.

Paired rounds cancel a host whose speed drifts slowly; they do not cancel contention. Another process on the
server's CPU costs a model more the more memory it touches per message (the heavier models' ratios grew by up
to 25% beside a callgrind job, and pairs swapped order), and an idle vCPU that the hypervisor deschedules
breaks a latency step. So every measured window records, for the CPUs the run pins to:

* **foreign CPU**: the CPU time of every process that is not the run's own (this process, its descendants -
  the load generator's workers, the servers it started - and a server given by PID with its descendants),
  kernel threads included: each process's CPU clock (nanoseconds, every thread) plus the time of the children
  it reaped in the window (``cutime + cstime``, clock ticks: a compiler or an installer runs as many short
  processes that end inside a window), counted on the side of the CPUs it may run on (the server's or the load
  generator's), or, where it may run on either, on the side of the CPU it ran on last; a process that may run
  on none of the run's CPUs is not counted. Why not "busy minus own" from the CPUs' idle time: a CPU woken
  from idle thousands of times a second spends each wake-up's interrupt outside every task and outside idle
  too (3-6% of a CPU at 10,000-100,000 echoes a second here, measured): that is the run's own cost, not
  another process's.
* **steal**: ``/proc/stat``'s 8th column per CPU (10 ms units): time the hypervisor ran something else while
  this VM wanted the CPU. The run's own clocks do not include it, so it is neither theirs nor foreign; it is
  reported beside foreign CPU and counts towards a disturbance.

What this cannot see: a process that started and ended inside one window and whose parent had not reaped it
by the window's end (its time shows in the parent's ``cutime`` in a later window).

Nothing here opens a socket: :func:`snapshot` reads ``/proc`` once (a fraction of a millisecond for a hundred
processes); :func:`between` is arithmetic on two snapshots (unit-tested with hand-made ones).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# A window whose pinned CPUs lost more than this share of their time to other processes (or to steal) is
# disturbed. The figure comes from measurement (docs/bench-paired.md#a-busy-host): below it, ratios moved less
# than their intervals; and it stays above what a quiet run's accounting leaves over.
DISTURBED_SHARE = 0.05


@dataclass(frozen=True)
class Proc:
    """One process in a snapshot: its CPU clock and reaped children's time (seconds), the CPUs it may run on and
    the one its main thread ran on last."""

    cpu_s: float
    children_s: float
    allowed: frozenset[int]
    last_cpu: int | None
    ppid: int = 0
    name: str = ""
    start_ticks: int = 0  # when it started, clock ticks after boot


@dataclass(frozen=True)
class Snapshot:
    """One reading: when, each pinned CPU's steal seconds, every process, and which of them are the run's own."""

    t: float  # time.monotonic()
    steal_s: dict[int, float]
    procs: dict[int, Proc]
    own: frozenset[int]
    boot_ticks: float = 0.0  # the same instant in clock ticks after boot (the processes' start times' clock)


@dataclass(frozen=True)
class HostLoad:
    """What a window's pinned CPUs did besides the run: foreign CPU and steal, in seconds and as a share of the
    CPUs' wall time, per side."""

    wall_s: float
    server_cpus: tuple[int, ...]
    loadgen_cpus: tuple[int, ...]
    server_foreign_s: float
    loadgen_foreign_s: float
    steal_s: float  # over every pinned CPU
    busiest: tuple[tuple[str, float], ...] = ()  # the foreign processes that took most, (name, seconds)

    def share(self, side: str) -> float:
        """Foreign CPU on one side (``server`` or ``loadgen``) as a share of its CPUs' wall time."""
        cpus = self.server_cpus if side == "server" else self.loadgen_cpus
        foreign = self.server_foreign_s if side == "server" else self.loadgen_foreign_s
        return foreign / (self.wall_s * len(cpus)) if self.wall_s > 0 and cpus else 0.0

    @property
    def steal_share(self) -> float:
        n = len(set(self.server_cpus) | set(self.loadgen_cpus))
        return self.steal_s / (self.wall_s * n) if self.wall_s > 0 and n else 0.0

    @property
    def worst_share(self) -> float:
        """The larger side's foreign share plus the steal share: what a disturbance is judged on."""
        return max(self.share("server"), self.share("loadgen")) + self.steal_share

    def disturbed(self, threshold: float = DISTURBED_SHARE) -> bool:
        return self.worst_share > threshold

    def as_dict(self) -> dict:
        return {"wall_s": round(self.wall_s, 4), "server_cpus": list(self.server_cpus),
                "loadgen_cpus": list(self.loadgen_cpus),
                "server_foreign_s": round(self.server_foreign_s, 5), "loadgen_foreign_s": round(self.loadgen_foreign_s, 5),
                "server_foreign_share": round(self.share("server"), 5),
                "loadgen_foreign_share": round(self.share("loadgen"), 5),
                "steal_s": round(self.steal_s, 3), "steal_share": round(self.steal_share, 5),
                "worst_share": round(self.worst_share, 5),
                "busiest": [list(x) for x in self.busiest]}


def _steal_s() -> dict[int, float]:
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                out[int(name[3:])] = (int(vals[7]) if len(vals) > 7 else 0) / USER_HZ
    return out


def descendants(procs: dict[int, "Proc"], roots) -> set[int]:
    """``roots`` and every process below them, from the snapshot's parent links."""
    kids: dict[int, list[int]] = {}
    for pid, p in procs.items():
        kids.setdefault(p.ppid, []).append(pid)
    out, todo = set(), [r for r in roots if r]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo += kids.get(pid, [])
    return out


def read_proc(pid: int) -> Proc | None:
    """One process's CPU clock, reaped children's time, allowed CPUs and last CPU; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        cpu = time.clock_gettime_ns(((~pid) << 3) | 2) / 1e9
        allowed = frozenset(os.sched_getaffinity(pid))
    except OSError:
        return None
    name = raw[raw.find(b"(") + 1:raw.rfind(b")")].decode(errors="replace")
    f = raw[raw.rfind(b")") + 2:].split()
    try:  # fields from the 3rd (state): ppid 4th, cutime and cstime 16th and 17th, starttime 22nd, processor 39th
        children = (int(f[13]) + int(f[14])) / USER_HZ
        last, ppid, start = int(f[36]), int(f[1]), int(f[19])
    except (IndexError, ValueError):
        children, last, ppid, start = 0.0, None, 0, 0
    return Proc(cpu, children, allowed, last, ppid, name, start)


def snapshot(cpus, roots=()) -> Snapshot:
    """Read every process's CPU time and ``cpus``' steal now; the run's own processes are this process, a server
    given by PID (``roots``) and everything below them."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            p = read_proc(int(entry))
            if p is not None:
                procs[int(entry)] = p
    stat = _steal_s()
    own = descendants(procs, (os.getpid(), *roots))
    boot = time.clock_gettime(time.CLOCK_BOOTTIME) * USER_HZ
    return Snapshot(time.monotonic(), {c: stat.get(c, 0.0) for c in cpus}, procs, frozenset(own), boot)


def between(a: Snapshot, b: Snapshot, server_cpus, loadgen_cpus, top: int = 3) -> "HostLoad":
    """The foreign CPU and steal on ``server_cpus`` and ``loadgen_cpus`` between two snapshots (the run's own
    processes: those own in either). A process that appeared between the snapshots counts from zero if it was
    born in the window (else it was missed, and is left out); one that vanished is left out, and where its parent
    reaped it, the part of its time the parent's ``cutime`` adds that the first snapshot had already seen is
    taken off (a long-lived child's whole life lands in its parent's ``cutime`` when it ends). Where both sides
    are the same CPUs (a 1-CPU machine), one figure is told on both."""
    server_cpus, loadgen_cpus = tuple(server_cpus or ()), tuple(loadgen_cpus or ())
    s_set, l_set = set(server_cpus), set(loadgen_cpus)
    pinned = s_set | l_set
    wall = max(0.0, b.t - a.t)
    own = a.own | b.own
    fs = fl = 0.0
    names: dict[str, float] = {}
    # what processes that ended in the window had used by ``a``, on the nearest ancestor still alive at ``b``: its
    # ``cutime`` takes in their whole lives when they are reaped (a child's, and through it a grandchild's)
    seen_before: dict[int, float] = {}
    for pid, q in a.procs.items():
        if pid not in b.procs:
            up, hops = q.ppid, 0
            while up in a.procs and up not in b.procs and hops < 64:
                up, hops = a.procs[up].ppid, hops + 1
            seen_before[up] = seen_before.get(up, 0.0) + q.cpu_s + q.children_s
    for pid, p in b.procs.items():
        if pid in own:
            continue
        q = a.procs.get(pid)
        if q is None and a.boot_ticks and p.start_ticks < a.boot_ticks - 1:
            continue  # not in the first snapshot, yet older than it: missed there, its time cannot be told
        reaped = p.children_s - (q.children_s if q else 0.0)
        used = p.cpu_s - (q.cpu_s if q else 0.0) + max(0.0, reaped - seen_before.get(pid, 0.0))
        # no process can have used more than the run's CPUs it may run on, for the whole window (what is left of an
        # older descendant's life that this window did not see, e.g. one born and gone between two windows)
        used = min(used, wall * max(1, len(p.allowed & pinned)))
        if used <= 0 or not (p.allowed & pinned):
            continue
        if p.allowed <= s_set and s_set != l_set:
            side = "server"
        elif p.allowed <= l_set:
            side = "loadgen"
        elif p.last_cpu in pinned:  # may run on either: where it ran last
            side = "server" if p.last_cpu in s_set and p.last_cpu not in l_set else "loadgen"
        else:
            continue  # it ran last on a CPU this run does not use
        if side == "server":
            fs += used
        else:
            fl += used
        names[p.name] = names.get(p.name, 0.0) + used
    if s_set == l_set or not s_set:
        fs = fl = fs + fl
    steal = sum(max(0.0, b.steal_s.get(c, 0.0) - a.steal_s.get(c, 0.0)) for c in pinned)
    busiest = sorted(names.items(), key=lambda kv: -kv[1])[:top]
    return HostLoad(wall, server_cpus, loadgen_cpus, fs, fl, steal, tuple((n, round(s, 4)) for n, s in busiest))


class Watch:
    """Foreign CPU over a window: ``start()``, then ``stop()`` returns the HostLoad since. The own processes are
    listed at each reading (the load generator's workers and the servers are descendants of this process;
    ``extra_roots``: a server given by PID)."""

    def __init__(self, server_cpus, loadgen_cpus, extra_roots: tuple[int, ...] = ()) -> None:
        self.server_cpus = tuple(server_cpus or ())
        self.loadgen_cpus = tuple(loadgen_cpus or ())
        self.cpus = tuple(sorted(set(self.server_cpus) | set(self.loadgen_cpus)))
        self.extra_roots = tuple(p for p in extra_roots if p)
        self.first: Snapshot | None = None

    def read(self) -> Snapshot:
        return snapshot(self.cpus, self.extra_roots)
    def start(self) -> None:
        self.first = self.read()

    def stop(self) -> HostLoad | None:
        if self.first is None or not self.cpus:
            return None
        return between(self.first, self.read(), self.server_cpus, self.loadgen_cpus)


GUARD_WINDOW_S = 1.0  # how long --quiet-host watches before a run starts


class HostBusy(Exception):
    """``--quiet-host``: other processes use the CPUs a run would pin: one line naming the busiest."""


def require_quiet(cpus, threshold: float = DISTURBED_SHARE, window_s: float = GUARD_WINDOW_S) -> float:
    """``--quiet-host``: watch ``cpus`` for ``window_s`` seconds before a run; raise HostBusy (one line, with the
    processes that used most) when other processes (or steal) took more than ``threshold`` of them. Returns the
    share they took."""
    cpus = tuple(sorted(set(cpus)))
    if not cpus:
        return 0.0
    first = snapshot(cpus)
    time.sleep(window_s)  # the window itself: nothing to synchronise with
    h = between(first, snapshot(cpus), cpus, cpus, top=3)
    share = h.worst_share
    if share > threshold:
        top = ", ".join(f"{name} {secs / (h.wall_s * len(cpus)):.0%}" for name, secs in h.busiest) or "no one process"
        raise HostBusy(f"--quiet-host: other processes used {share:.0%} of CPUs {','.join(map(str, cpus))} over "
                       f"{h.wall_s:.1f} s (more than {threshold:.0%}): {top}"
                       + (f"; the hypervisor's steal {h.steal_share:.0%}" if h.steal_share >= 0.01 else "")
                       + "; run again once they stop, or without --quiet-host")
    return share


QUIET_HOST_HELP = ("refuse to start (exit 3) while other processes use more than 5%% of the CPUs the run would pin, "
                   "naming the busiest (loadgen/hostload.py)")


def refuse_if_busy(prog: str, cpus) -> bool:
    """``--quiet-host`` for a command: True (after one line on stderr) when other processes use ``cpus``, those its
    servers and load generator would be pinned to."""
    import sys

    try:
        require_quiet(cpus)
    except HostBusy as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return True
    return False
