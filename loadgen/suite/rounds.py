"""Paired rounds for ``make bench``: every model of a cell measured in the same minutes, each ratio within a round.

A cell (transport, connections, message size) is measured like this:

* every model's server runs for the whole transport (two instances per model, started apart: instance 0 of
  every model, then instance 1 of every model), pinned to the server CPUs; an idle server waits in its event
  loop, which this module checks (:class:`IdleCheck`);
* a *round* visits every model once, in an order rotated by one each round and reversed every other round
  (:func:`plan_rounds`), each for one short slice of closed-loop load after a short warm-up
  (:func:`loadgen.suite.paired.run_slice`); round r measures instance ``(r // 2) % instances`` of every model;
* per round, each model's figure is divided by the reference model's in the same round, and every model's by
  every other's (:func:`pair_ratios`); over the rounds, the median and its distribution-free 95% interval
  (:func:`loadgen.suite.paired.median_ci`);
* two models are tied when the interval of their per-round ratio includes 1, ordered otherwise
  (:func:`tiers`, which does not chain).

A change of the host's speed that lasts longer than a round lands on every model of that round and cancels in
its ratios; what it cannot cancel is a change faster than a round (a round of ten models is ~4 s here), and
anything that treats models differently (what one slice leaves behind for the next: the rotation and the
reversal spread that over the models, they do not remove it).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field, replace

from ..hostload import DISTURBED_SHARE
from .paired import LEVEL, Slice, SliceError, median_ci, process_cpu_ns, run_slice

# the per-round figures a cell compares between models: slice attribute -> (label, higher is better)
METRICS = {
    "server_ns_per_msg": ("server CPU per message", False),
    "msgs_per_s": ("msgs/s", True),
    "p50_us": ("p50", False),
    "p99_us": ("p99", False),
}
TICKS_PER_S = 100  # the fewest the kernel samples user/kernel time at (USER_HZ); conservative for the split's interval


def plan_rounds(models: list[str], rounds: int, instances: int = 2) -> list[list[tuple[str, int]]]:
    """The visiting order: ``rounds`` lists of (model, instance). Every model once per round. Round r starts at
    model r (mod k, k models) and goes round the list forwards in even rounds and backwards in odd ones: over
    any k consecutive rounds each model is first once and last once, every model sits at every distance from the
    reference, and each of two neighbours runs just before the other about as often (a slice can leave the
    server CPU's caches or clock to its successor). Round r measures instance (r // 2) % ``instances`` of every
    model, so each instance gets rounds of both directions (and as many as the other when rounds is a multiple
    of 2 x instances)."""
    if rounds < 1 or not models or instances < 1:
        raise ValueError("rounds >= 1, instances >= 1 and at least one model")
    k = len(models)
    out = []
    for r in range(rounds):
        step = 1 if r % 2 == 0 else -1
        out.append([(models[(r + step * i) % k], (r // 2) % instances) for i in range(k)])
    return out


def wilson(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% with z = 1.96); (0, 1) with no trials."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def split_us(slices: list[Slice], total_ci: tuple[float, float, float] | None) -> dict | None:
    """Server CPU per message split into user and kernel time, from utime/stime summed over the slices: the
    kernel samples which side a tick lands on, so the share is a proportion of ticks, with its Wilson interval
    (n = CPU seconds x 100, the fewest ticks). Each part's median is the share times the total's median (the
    process clock's, per slice); its interval, the share's interval times the total's. None without ticks."""
    user = sum(s.server_user_s for s in slices)
    kernel = sum(s.server_kernel_s for s in slices)
    if user + kernel <= 0 or total_ci is None:
        return None
    share = user / (user + kernel)
    lo, hi = wilson(share * (user + kernel) * TICKS_PER_S, (user + kernel) * TICKS_PER_S)
    med, tlo, thi = total_ci
    return {"user_share": round(share, 4), "user_share_ci": [round(lo, 4), round(hi, 4)],
            "ticks": round((user + kernel) * TICKS_PER_S),
            "user_us_per_msg": med * share, "user_ci": [tlo * lo, thi * hi],
            "kernel_us_per_msg": med * (1 - share), "kernel_ci": [tlo * (1 - hi), thi * (1 - lo)]}


def interval(xs: list[float]) -> dict | None:
    """median, its 95% interval (distribution-free) and the interval's coverage; None without values."""
    if not xs:
        return None
    lo, hi, cover = median_ci(xs)
    return {"median": statistics.median(xs), "ci": [lo, hi], "coverage": round(cover, 4), "n": len(xs)}


def pair_ratios(per_round: dict[str, list[Slice | None]], a: str, b: str, metric: str) -> list[float]:
    """a's figure over b's, round by round, for the rounds in which both ran and both figures exist."""
    out = []
    for x, y in zip(per_round[a], per_round[b]):
        if x is None or y is None:
            continue
        vx, vy = getattr(x, metric), getattr(y, metric)
        if vx is not None and vy:
            out.append(vx / vy)
    return out


def tied(ratios: list[float]) -> bool | None:
    """Whether two models are tied on a metric: the 95% interval of their per-round ratio includes 1. None when
    the rounds are too few for a 95% interval (nothing can be said)."""
    if not ratios:
        return None
    lo, hi, cover = median_ci(ratios)
    if cover < LEVEL:
        return None
    return lo <= 1.0 <= hi


def tiers(order: list[str], is_tied) -> list[list[str]]:
    """Group models, already sorted best first, into tiers: a model joins the current tier when it is tied with
    that tier's first (best) model, else starts the next. Ties are judged against the leader only, so they do
    not chain (A tied with B and B with C does not tie A with C). ``is_tied(a, b)`` -> bool (None counts as
    tied: rounds too few to tell them apart)."""
    out: list[list[str]] = []
    for m in order:
        if out and is_tied(out[-1][0], m) is not False:
            out[-1].append(m)
        else:
            out.append([m])
    return out


@dataclass
class ModelRun:
    """One model's rounds in one cell: a slice per round (None where it did not run), and why it stopped."""

    model: str
    slices: list[Slice | None] = field(default_factory=list)
    stopped: str | None = None  # why the model's rounds stopped early (its server died, a slice failed)
    stopped_round: int | None = None
    notes: list[str] = field(default_factory=list)
    discarded: list[tuple[int, Slice]] = field(default_factory=list)  # (round, slice) of rounds rerun: disturbed


@dataclass
class IdleCheck:
    """CPU used by the servers that were *not* being measured, while another one was (its connections had
    closed before: the server measured in the slice before is left out, it may still be closing them)."""

    ns: int = 0
    wall_s: float = 0.0
    worst: tuple[str, float] = ("", 0.0)  # (model, its idle CPU as a fraction of one CPU)
    # other processes on the run's CPUs (loadgen/hostload.py): a round whose share is beyond ``threshold`` is
    # rerun, up to ``reruns_allowed`` times a cell; (round, its share) of each rerun and each kept one
    threshold: float = DISTURBED_SHARE
    reruns_allowed: int = 0
    reruns: list[tuple[int, float]] = field(default_factory=list)
    kept_disturbed: list[tuple[int, float]] = field(default_factory=list)
    others: dict[str, float] = field(default_factory=dict)  # other processes' names -> CPU seconds in the slices
    kept_shares: list[float] = field(default_factory=list)  # every kept round's share

    def as_dict(self) -> dict:
        return {"cpu_fraction": round(self.ns / 1e9 / self.wall_s, 6) if self.wall_s else None,
                "worst_model": self.worst[0] or None, "worst_cpu_fraction": round(self.worst[1], 6)}

    def host_dict(self) -> dict:
        """The cell's rounds against other processes: rerun, kept although disturbed, the threshold."""
        return {"threshold": self.threshold, "reruns_allowed": self.reruns_allowed,
                "rerun": [{"round": r + 1, "share": round(x, 4)} for r, x in self.reruns],
                "kept_disturbed": [{"round": r + 1, "share": round(x, 4)} for r, x in self.kept_disturbed],
                "disturbed": bool(self.kept_disturbed),
                "max_round_share": round(max(self.kept_shares, default=0.0), 4),
                "median_round_share": round(statistics.median(self.kept_shares), 4) if self.kept_shares else 0.0,
                "busiest": [[n, round(x, 3)] for n, x in sorted(self.others.items(), key=lambda kv: -kv[1])[:3]]}


class ServerPool:
    """The running servers of one transport: ``instances`` per model, started apart, restarted at a cell's start
    when one died (the restart is noted). ``start(model, i)`` returns a ManagedServer or raises TargetError."""

    def __init__(self, start, models: list[str], instances: int, log) -> None:
        self._start = start
        self.models = list(models)
        self.instances = instances
        self.log = log
        self.servers: dict[tuple[str, int], object] = {}
        self.failed: dict[str, str] = {}  # model -> why it could not be started

    def ensure(self) -> dict[str, str]:
        """Start every instance that is not running (instance 0 of each model, then instance 1 of each, so the
        two are apart in time). Returns {model: note} for models restarted or that cannot run."""
        from ..target import TargetError

        notes = {}
        for i in range(self.instances):
            for m in self.models:
                s = self.servers.get((m, i))
                if s is not None and s.alive():
                    continue
                if s is not None:
                    notes[m] = f"instance {i + 1} had died ({s.stderr_tail()}) and was restarted"
                    s.stop()
                try:
                    self.servers[(m, i)] = self._start(m)
                    self.failed.pop(m, None)
                except TargetError as exc:
                    self.servers.pop((m, i), None)
                    self.failed[m] = str(exc)
                    notes[m] = f"could not start: {exc}"
        return notes

    def get(self, model: str, instance: int):
        return self.servers.get((model, instance))

    def stop(self) -> None:
        for s in self.servers.values():
            s.stop()
        self.servers.clear()


def default_reruns(rounds: int) -> int:
    """Disturbed rounds a cell may rerun: half its rounds, at least 2 (a busy host costs at most 1.5x the time)."""
    return max(2, rounds // 2)


GIVE_UP_AFTER = 3  # disturbed attempts in a row: the host is busy for longer than reruns can wait out


def measure_cell(cfg, models: list[str], pool: ServerPool, rounds: int, children: dict[str, bool],
                 on_slice=None, warm: bool = False, threshold: float = DISTURBED_SHARE,
                 max_reruns: int | None = None) -> tuple[dict[str, ModelRun], IdleCheck, float]:
    """Run ``rounds`` rounds of one cell (``cfg``: the LoadConfig of one slice) over ``models``, whose servers
    ``pool`` holds. ``warm``: first one discarded slice per running instance (first connections, first
    allocations). A model whose server dies or whose slice fails stops for the rest of the cell; the others go
    on. ``on_slice(model, round)`` is called after each slice (progress).

    A round whose slices' CPUs lost more than ``threshold`` of their time to other processes (or to steal;
    :func:`host_share`, loadgen/hostload.py) is discarded and run again in the same order, up to ``max_reruns`` times in the
    cell (default :func:`default_reruns`), and not after ``GIVE_UP_AFTER`` disturbed attempts in a row (a host
    busy for longer than that is not waited out: the rest is kept, marked, at little extra time); a round not
    rerun is kept and recorded as disturbed. Returns per model
    its ModelRun, the idle and host checks, and the cell's wall time in seconds."""
    runs = {m: ModelRun(m) for m in models}
    for m in models:
        if m in pool.failed:
            runs[m].stopped, runs[m].stopped_round = f"its server could not start: {pool.failed[m]}", 0
    idle = IdleCheck(threshold=threshold, reruns_allowed=default_reruns(rounds) if max_reruns is None else max_reruns)
    t0 = time.monotonic()
    if warm:
        for i in range(pool.instances):
            for m in models:
                s = pool.get(m, i)
                if s is not None and runs[m].stopped is None:
                    try:
                        run_slice(cfg, s.pid, s.addr, children[m])
                    except (SliceError, ProcessLookupError) as exc:
                        runs[m].stopped, runs[m].stopped_round = f"its warm-up slice failed: {exc}", 0
    previous = None
    plan = plan_rounds(models, rounds, pool.instances)
    r = in_a_row = 0
    while r < len(plan):
        order = plan[r]
        begun = {m: len(runs[m].slices) for m in models}
        for m, inst in order:
            run = runs[m]
            if run.stopped is not None:
                run.slices.append(None)
                continue
            s = pool.get(m, inst)
            if s is None or not s.alive():
                run.stopped, run.stopped_round = (f"its server (instance {inst + 1}) died in round {r + 1}: "
                                                  f"{s.stderr_tail() if s else 'not running'}"), r
                run.slices.append(None)
                continue
            others = [(om, x) for (om, oi), x in pool.servers.items()
                      if x is not s and x is not previous and om in runs and x.alive()]
            before = _cpu_of(others, children)
            t = time.monotonic()
            try:
                sl = run_slice(cfg, s.pid, s.addr, children[m])
            except (SliceError, ProcessLookupError) as exc:
                why = "its server died" if not s.alive() else "a slice failed"
                run.stopped, run.stopped_round = f"{why} in round {r + 1}: {exc}", r
                run.slices.append(None)
                if on_slice:
                    on_slice(m, r)
                previous = s
                continue
            dt = time.monotonic() - t
            after = _cpu_of(others, children)
            for key, ns in after.items():
                used = ns - before.get(key, ns)
                idle.ns += used
                frac = used / 1e9 / dt if dt > 0 else 0.0
                if frac > idle.worst[1]:
                    idle.worst = (key[0], frac)
            idle.wall_s += dt * len(after)
            run.slices.append(sl)
            for name, secs in (sl.host or {}).get("busiest") or ():
                idle.others[name] = idle.others.get(name, 0.0) + secs
            previous = s
            if on_slice:
                on_slice(m, r)
        worst = host_share([x for m in models for x in runs[m].slices[begun[m]:]])
        in_a_row = in_a_row + 1 if worst > threshold else 0
        if worst > threshold:
            if len(idle.reruns) < idle.reruns_allowed and in_a_row < GIVE_UP_AFTER:
                idle.reruns.append((r, worst))
                for m in models:
                    runs[m].discarded += [(r, x) for x in runs[m].slices[begun[m]:] if x is not None]
                    del runs[m].slices[begun[m]:]
                continue  # the same round again
            idle.kept_disturbed.append((r, worst))
        idle.kept_shares.append(worst)
        r += 1
    return runs, idle, time.monotonic() - t0


def _cpu_of(servers: list[tuple[str, object]], children: dict[str, bool]) -> dict[tuple[str, int], int]:
    out = {}
    for m, s in servers:
        try:
            out[(m, s.pid)] = process_cpu_ns(s.pid, children[m])
        except ProcessLookupError:
            pass
    return out


def _shares(hosts: list[dict]) -> tuple[float, float, float] | None:
    """(server, load generator, steal) shares over some windows' host figures (loadgen/hostload.py): each side's
    foreign CPU seconds summed over the windows, over its CPUs' wall time summed; steal over every pinned CPU's.
    None without windows or wall time."""
    wall = sum(h["wall_s"] for h in hosts)
    if not hosts or wall <= 0:
        return None
    s_cpus, l_cpus = hosts[0].get("server_cpus") or (), hosts[0].get("loadgen_cpus") or ()
    n = len(set(s_cpus) | set(l_cpus)) or 1
    return (sum(h["server_foreign_s"] for h in hosts) / (wall * (len(s_cpus) or 1)),
            sum(h["loadgen_foreign_s"] for h in hosts) / (wall * (len(l_cpus) or 1)),
            sum(h["steal_s"] for h in hosts) / (wall * n))


def host_share(slices: list[Slice | None]) -> float:
    """Other processes' share of the run's CPUs over some slices (a round's): the larger side's share, plus
    steal's (:func:`_shares`). A round, not a slice, is judged: a kernel thread's 25 ms burst is 12% of one 0.2 s
    slice but lands on one model's ratio in one round, which the median over rounds absorbs; a share that holds
    over a whole round lands on every model's, and moves the median (docs/bench-paired.md#a-busy-host)."""
    sh = _shares([x.host for x in slices if x is not None and x.host])
    return 0.0 if sh is None else max(sh[0], sh[1]) + sh[2]


def host_summary(slices: list[Slice]) -> dict | None:
    """Other processes' CPU over a model's kept slices (loadgen/hostload.py): each side's share of its CPUs'
    time, steal's (:func:`_shares`), and the worst slice's. None where no slice measured it."""
    measured = [x for x in slices if x.host]
    if not measured:
        return None
    server, loadgen, steal = _shares([x.host for x in measured]) or (0.0, 0.0, 0.0)
    return {"server_foreign_share": round(server, 5), "loadgen_foreign_share": round(loadgen, 5),
            "steal_share": round(steal, 5), "worst_slice_share": round(max(x.disturbance for x in measured), 5),
            "slices": len(measured)}


def summarise(runs: dict[str, ModelRun], reference: str, instances: int, transport: str, conns: int,
              size: int, disturbed: bool = False) -> list[dict]:
    """Per model, the cell's summary: medians with their 95% intervals, ratios to ``reference`` taken round by
    round, the user/kernel split, the verdicts, every pair's ratio interval (for tiers), and the spread between
    the model's server instances. Same keys as the fresh-trials mode's cells where they mean the same."""
    from ..stats import CLIENT_SATURATED

    per_round = {m: r.slices for m, r in runs.items()}
    out = []
    for m, run in runs.items():
        ok = [s for s in run.slices if s is not None]

        def col(attr, scale=1.0, ok=ok):
            return [getattr(s, attr) * scale for s in ok if getattr(s, attr) is not None]

        cpu = interval(col("server_ns_per_msg", 1e-3))
        verdicts = [s.verdict for s in ok if s.verdict]
        saturated = sum(v in CLIENT_SATURATED for v in verdicts)
        vs_ref = {}
        if reference in runs and m != reference:
            for metric in METRICS:
                xs = pair_ratios(per_round, m, reference, metric)
                if xs:
                    vs_ref[metric] = interval(xs)
        pairs = {}
        for other in runs:
            if other != m:
                for metric in ("server_ns_per_msg", "msgs_per_s"):
                    xs = pair_ratios(per_round, m, other, metric)
                    if len(xs) >= 1:
                        iv = interval(xs)
                        pairs.setdefault(metric, {})[other] = [round(iv["median"], 5), round(iv["ci"][0], 5),
                                                               round(iv["ci"][1], 5)]
        # how far apart the model's instances are: the ratio to the reference on instance-2 rounds over instance-1 rounds
        inst = None
        if instances > 1 and reference in runs and m != reference:
            by = [pair_ratios({m: [s if i % instances == k else None for i, s in enumerate(run.slices)],
                               reference: runs[reference].slices}, m, reference, "server_ns_per_msg")
                  for k in range(instances)]
            if all(by):
                inst = statistics.median(by[1]) / statistics.median(by[0]) - 1
        hist = _merge([s.histogram for s in ok])
        messages = sum(s.messages for s in ok)
        status = "ok" if ok and run.stopped is None else ("failed" if not ok else "partial")
        failures = [{"trial": run.stopped_round or 0, "reason": run.stopped}] if run.stopped else []
        out.append({
            "model": m, "transport": transport, "conns": conns, "size": size, "status": status, "mode": "paired",
            # other processes on the run's CPUs over the kept slices; disturbed: the cell kept a round in which
            # they took more than the threshold (its ratios are shown, not tiered or ranked)
            "host": host_summary(ok), "disturbed": disturbed,
            "reruns": len(run.discarded),  # its slices in rounds discarded and run again (other processes)
            "trials_ok": len(ok), "trials": len(run.slices), "rounds": len(run.slices), "failures": failures,
            "notes": run.notes,
            "median": {
                "msgs_per_s": _med(col("msgs_per_s")), "mb_per_s": _med([x * size / 1e6 for x in col("msgs_per_s")]),
                "p50_us": _med(col("p50_us")), "p99_us": _med(col("p99_us")), "p999_us": None,
                "server_us_per_msg": cpu["median"] if cpu else None,
                "loadgen_us_per_msg": _med(col("client_us_per_msg")),
                "server_pct": None, "loadgen_pct": _med(col("client_pct")),
                "loss_pct": _med(col("loss_pct")), "jain": _med(col("jain")),
            },
            "ci": {"msgs_per_s": interval(col("msgs_per_s")), "server_us_per_msg": cpu,
                   "p50_us": interval(col("p50_us")), "p99_us": interval(col("p99_us")),
                   "loadgen_us_per_msg": interval(col("client_us_per_msg"))},
            # the range over slices, for code that reads the fresh-trials mode's spread
            "spread": {k: ({"min": min(v), "max": max(v), "n": len(v), "values": [round(x, 4) for x in v]} if v else None)
                       for k, v in (("msgs_per_s", col("msgs_per_s")), ("p99_us", col("p99_us")),
                                    ("server_us_per_msg", col("server_ns_per_msg", 1e-3)))},
            "split": split_us(ok, (cpu["median"], *cpu["ci"]) if cpu else None),
            "vs_reference": vs_ref, "reference": reference if reference in runs else None,
            "pairs": pairs,
            "instance_spread": None if inst is None else round(inst, 5),
            "verdicts": {v: verdicts.count(v) for v in sorted(set(verdicts))},
            "verdict": max(set(verdicts), key=verdicts.count) if verdicts else None,
            "client_bound_trials": saturated,
            "messages": messages,
            "histogram": hist,
        })
    return out


def _med(xs):
    return statistics.median(xs) if xs else None


def _merge(encoded: list[str | None]) -> str | None:
    from .. import stats

    encoded = [e for e in encoded if e]
    return stats.encode(stats.merge(encoded)) if encoded else None


def slice_config(base, transport: str, conns: int, size: int, workers: int, slice_s: float, warmup_s: float, tls_ca=None):
    """The LoadConfig of one slice of a cell (``transport`` as the matrix names it: tcp, unix, udp, tls, tcp-py)."""
    real = "tcp" if transport in ("tls", "tcp-py") else transport
    return replace(base, server=None, conns=conns, size=size, workers=workers, transport=real, tls=transport == "tls",
                   tls_ca=tls_ca if transport == "tls" else None, duration=slice_s, warmup=warmup_s,
                   timeout=1.0 if transport == "udp" else base.timeout,
                   engine="python" if transport in ("udp", "tls", "tcp-py") else base.engine)
