"""Paired rounds: measure what you compare side by side, in the same minutes, and judge the paired ratio.

On a shared host whose speed moves by tens of percent within seconds, two figures taken minutes apart compare
the minutes, not the things measured. The remedy, used by ``make bench-loadgen`` and ``make bench-ab``: keep
both sides running, measure them in short slices back to back (A B, then B A in the next round, so neither
side always goes first), take each ratio within its round, where a change of the host's speed lands on both,
and judge the median of the per-round ratios on a distribution-free confidence interval.

This module holds the pieces every paired comparison shares: the interval (:func:`median_ci`), the verdicts
(:func:`judge` against a target, :func:`ab_verdict` for a change between two sides), the slice order
(:func:`slice_order`), a process's CPU time in nanoseconds (:func:`process_cpu_ns`) and one slice of closed-loop
load against a running server (:func:`run_slice`).
"""

from __future__ import annotations

import enum
import statistics
import time
from dataclasses import dataclass, replace

from ..procs import process_cpu_ns  # noqa: F401  (re-exported: the rounds and their tests read it here)

LEVEL = 0.95
MIN_ROUNDS = 6  # the fewest values whose order statistics give a 95% interval for the median


def median_ci(xs: list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """A distribution-free confidence interval for the median of ``xs``: the order statistics x(j) and x(n+1-j)
    with the largest j whose coverage 1 - 2 P(B < j), B ~ Binomial(n, 1/2), is still >= ``level``; with too few
    values for that, the whole range and its coverage. Returns (low, high, coverage). No assumption about the
    ratios' distribution, and no resampling: the same rounds always give the same interval."""
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        raise ValueError("no values")
    best = None
    cdf, pmf = 0.0, 0.5 ** n  # P(B <= j - 2), P(B = j - 1)
    for j in range(1, n // 2 + 1):  # the interval [x(j), x(n + 1 - j)], 1-based
        cdf += pmf
        cover = 1 - 2 * cdf
        if cover < level:
            break
        best = (xs[j - 1], xs[n - j], cover)
        pmf = pmf * (n - j + 1) / j
    if best is None:
        best = (xs[0], xs[-1], max(0.0, 1 - 2 * 0.5 ** n) if n > 1 else 0.0)
    return best


def judge(xs: list[float], low: float | None = None, high: float | None = None) -> str:
    """Whether per-round ratios meet a target (>= low, <= high, or both), judged on the median's confidence
    interval: ``met`` when the whole interval meets it, ``missed`` when none of it does, else ``not told apart``
    (the rounds cannot say: more rounds, or a quieter machine); ``too few rounds`` below the 6 that a 95%
    interval needs."""
    lo, hi, cover = median_ci(xs)
    if cover < LEVEL:
        return "too few rounds"  # 6 at least
    ok_lo = low is None or lo >= low
    ok_hi = high is None or hi <= high
    if ok_lo and ok_hi:
        return "met"
    if (low is not None and hi < low) or (high is not None and lo > high):
        return "missed"
    return "not told apart"


class Change(str, enum.Enum):
    """The verdict on a paired ratio head/base. Decisions are taken on these values; the words are for people."""

    SLOWER = "slower"
    FASTER = "faster"
    NO_CHANGE = "no change"
    NOT_TOLD_APART = "not told apart"
    TOO_FEW = "too few rounds"


def ab_verdict(ratios: list[float], threshold: float, higher_is_worse: bool) -> Change:
    """Per-round ratios head/base of one metric, judged on the 95% interval of their median: ``slower`` or
    ``faster`` when the whole interval lies beyond ``threshold`` (relative) in that direction, ``no change``
    when it lies within +-threshold, ``not told apart`` otherwise (more rounds, or a quieter host, could say)."""
    lo, hi, cover = median_ci(ratios)
    if cover < LEVEL:
        return Change.TOO_FEW
    up, down = lo > 1 + threshold, hi < 1 - threshold
    if up or down:
        return Change.SLOWER if up == higher_is_worse else Change.FASTER
    if 1 - threshold <= lo and hi <= 1 + threshold:
        return Change.NO_CHANGE
    return Change.NOT_TOLD_APART


def slice_order(rounds: int, sides: tuple[str, str] = ("base", "head")) -> list[tuple[int, str]]:
    """(round, side) in ABBA order: A B, B A, A B, ... so that neither side always runs first in its round
    (the first slice of a round can meet a host that is still waking up)."""
    a, b = sides
    return [(r, s) for r in range(rounds) for s in ((a, b) if r % 2 == 0 else (b, a))]


def process_user_kernel_s(pid: int) -> tuple[float, float]:
    """(user, kernel) CPU seconds of ``pid`` and its live descendants, from ``/proc/PID/stat``: clock ticks,
    sampled (the split is good summed over seconds, not for one short slice; the total is :func:`process_cpu_ns`)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        raise ProcessLookupError(pid) from None
    user = kernel = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        user, kernel = user + t.user, kernel + t.system
    return user, kernel


@dataclass(frozen=True)
class Slice:
    """One slice of load against one running server."""

    msgs_per_s: float  # in the measured window
    p99_us: float | None  # in the measured window
    server_ns_per_msg: float  # server CPU (process clock) over the whole slice / every message echoed in it
    messages: int  # echoed over the whole slice (warm-up included), the divisor of server_ns_per_msg
    client_pct: float | None  # the load generator's CPU use in the window (a saturated client caps msgs/s)
    errors: int
    server_user_s: float = 0.0  # the server's user and kernel CPU over the slice (ticks: sum them over slices)
    server_kernel_s: float = 0.0
    p50_us: float | None = None  # in the measured window
    client_us_per_msg: float | None = None  # the load generator's CPU per message in the window
    verdict: str | None = None  # the load generator's verdict on the window (server-bound, client-bound, ...)
    server_ns: int = 0  # the server's CPU over the whole slice (process clock), the numerator of server_ns_per_msg
    histogram: str | None = None  # the window's latency histogram, encoded (loadgen.stats.encode)
    loss_pct: float | None = None  # UDP: datagrams not echoed in time
    jain: float | None = None  # how evenly the connections were served
    started_at: float | None = None  # when the slice started (epoch s) and how long it ran: its place on a timeline
    wall_s: float | None = None
    host: dict | None = None  # what else ran on the run's CPUs in the measured window (loadgen/hostload.py)

    @property
    def disturbance(self) -> float:
        """The larger side's share of its CPUs that other processes took in the window, plus steal (0 unknown)."""
        return (self.host or {}).get("worst_share") or 0.0


class SliceError(Exception):
    """A slice that did not run cleanly (errors, a wrong echo, a server that died): one line."""


def run_slice(cfg, pid: int, addr: tuple, children: bool = True) -> Slice:
    """One closed-loop run of the load generator (``cfg``: a LoadConfig with conns, size, warm-up, duration,
    CPUs) against the running server ``pid`` at ``addr``, in this process (no interpreter start per slice).

    The server's CPU is read from its process clock just before the load generator starts and just after it
    stopped, and divided by every message echoed in between: the connects and the warm-up are on both sides of
    a comparison alike, and the idle server between slices costs nothing."""
    from ..runner import Runner

    where = {"path": addr[0]} if cfg.transport == "unix" else {"host": addr[0], "port": addr[1]}
    cfg = replace(cfg, **where, server=None, server_pid=pid, quiet=True)
    split0, before = process_user_kernel_s(pid), process_cpu_ns(pid, children)
    started_at, t0 = time.time(), time.monotonic()
    doc, code = Runner(cfg, log=lambda msg: None).execute()
    wall_s = time.monotonic() - t0
    after, split1 = process_cpu_ns(pid, children), process_user_kernel_s(pid)
    res = doc["result"]
    if res["incomplete_reason"] == "interrupted":  # Ctrl-C or SIGTERM reached the load generator: the caller's
        raise KeyboardInterrupt
    errors = sum(res["errors"].values()) + res["integrity_failures"]
    if code != 0 or not res["complete"] or errors:
        why = res["incomplete_reason"] or (f"{errors} errors {res['errors']}" if errors else f"exit {code}")
        raise SliceError(f"a slice against pid {pid} did not run cleanly: {why}")
    n = res["messages_total"]
    if n <= 0:
        raise SliceError(f"a slice against pid {pid} echoed nothing")
    lat = res.get("latency_us") or {}
    return Slice(msgs_per_s=res["msgs_per_s"], p99_us=lat.get("p99"), server_ns_per_msg=(after - before) / n,
                 messages=n, client_pct=res["cpu"].get("loadgen_pct"), errors=errors,
                 server_user_s=split1[0] - split0[0], server_kernel_s=split1[1] - split0[1],
                 p50_us=lat.get("p50"), client_us_per_msg=res["cpu"].get("loadgen_us_per_msg"), verdict=res["verdict"],
                 server_ns=after - before, histogram=res.get("histogram"),
                 loss_pct=(res.get("udp") or {}).get("loss_pct"), jain=(res.get("fairness") or {}).get("jain"),
                 started_at=started_at, wall_s=wall_s, host=res.get("host"))


def summary(xs: list[float]) -> dict:
    """median, its 95% interval and the interval's coverage, the range and the count of per-round ratios."""
    lo, hi, cover = median_ci(xs)
    return {"median": statistics.median(xs), "ci": [lo, hi], "coverage": round(cover, 4),
            "range": [min(xs), max(xs)], "rounds": len(xs)}
