"""Capacity at a latency SLO: the open-loop rate search (``loadgen/run.py --find-capacity``, ``make bench``'s
capacity column and latency-versus-load plot) and ``--sweep``.

A closed loop slows down with the server, so it never shows the knee where queues build. The search drives
an open loop (``--rate``, coordinated omission corrected) at planned rates: it ramps up geometrically from a
start rate while every SLO holds, and once one breaks it bisects (geometrically) between the highest rate
that held and the lowest that broke, until the two are within ``precision`` of each other. The capacity is
the highest *valid* rate that met every SLO.

A step is valid only if the figures can be trusted: the run completed, no integrity failure or error
occurred, the load generator was not the bottleneck (its CPU below the saturation mark) and not starved of
its CPU (run-queue wait below ``CLIENT_WAIT_LIMIT_PCT``). When fewer than ``MIN_ACHIEVED`` of the planned
messages were echoed, someone fell behind: the client if its own timers ran late (send lag p50 >=
``CLIENT_LAG_LIMIT_US``) or nothing shows it had headroom ("client cannot offer this rate", invalid); otherwise
the server (with ``--depth`` messages in flight, messages due while the window was full wait, and are timed
from when they were due): the overload the search looks for, a valid step that breaks the SLO even where its
percentiles held, since a rate the server cannot sustain is not within its capacity.

A step the client cannot offer, above a rate that held, becomes a ceiling: the search bisects below it, and
ends, if no valid break turns up, with the highest rate that held as a lower bound, saying the client was the
limit. Any other invalid step ends the search with the reason and the same lower bound, never a guess beyond
it. With ``confirm`` the rate found is run again and must hold twice. The search is bounded in steps
(``max_steps``) and by ``max_rate``, and stops by itself.

On this VM a broken step is not always the server's (issue 32: the same search gave 677 msgs/s, then 10,834, back
to back): an idle vCPU wakes up late, so a light step can break on the host's wake-up tail while a busier one
holds, and one stall breaks a p99 resting on ~100 slow samples. So (``confirm_breaks``, ``floor``; on in
``--find-capacity``, ``make bench`` and ``make bench-overload``) a broken step records the host's signs
(:func:`host_signs`) and is run again before it counts (:func:`_verdict`); a break on a mostly idle server before
anything held sends the search up, not down; and a first step at a light load measures the host's floor, reported
apart, below which the search never comes down (if it breaks, confirmed, the search ends: ``Stop.BELOW_FLOOR``).

``--sweep`` runs open-loop steps at a fixed list of rates (or fractions of the capacity just found), judged
the same way, for latency-versus-load curves.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Callable

from ..hostload import DISTURBED_SHARE
from ..stats import CLIENT_SATURATED

MIN_ACHIEVED = 0.99  # below 99% of the planned rate echoed, someone fell behind (see judge)
MIN_RATE = 1.0  # msgs/s: below this the search gives up coming down
# The client's own lateness: half its timed sends later than this means it could not keep its schedule. A client
# with headroom is late by tens of microseconds; one that falls behind by even 1% is late by the backlog, which
# grows through the run (1% of a 1 s window is 10 ms).
CLIENT_LAG_LIMIT_US = 1000.0
# The client's time runnable but waiting for its CPU (another process had it), as % of the window: at or above
# this its timing is not its own, and its shortfall cannot be told from the server's.
CLIENT_WAIT_LIMIT_PCT = 10.0
# Evidence that a broken step was broken by the host, not the server (issue 32: p99 <= 1 ms came out 677 msgs/s,
# then 10,834, back to back; the first search's break at 1,000 msgs/s had the server 10% busy and the load
# generator's own sends late by 101 us at the median, where a client with headroom is late by tens of us):
HOST_LAG_US = 100.0  # send lag p50 at or above this: the client's own timers woke late (the 101 us; quiet: 10-60)
HOST_WAIT_PCT = 5.0  # the client waited for its CPU this share of the window: half the mark that makes a step invalid
IDLE_SERVER_PCT = 50.0  # a server idle half the time builds no queue: a break there is the host's wake-up tail
# A shortfall no stall of the host explains: under 90% of the planned messages echoed while the client kept up is
# 75 ms of a 0.75 s step behind; such a break counts on its own try (the descents from a closed-loop start rate are
# most of a search's breaks, and retrying each would spend the steps the bisection needs).
CLEAR_OVERLOAD = 0.90
BREAK_TRIES = 3  # tries per rate at most: a break is run again before it counts (see _verdict)
CONFIRM_BREAK = "a break to confirm"  # SearchResult.retried's key for a break that showed no sign of the host
UP_PAST_IDLE_BREAKS = 2  # breaks with an idle server before anything held: try above them this often, not below
FLOOR_FRACTION = 0.1  # the floor step's rate, of the start rate (at least MIN_RATE; see search)
PERCENTILE_KEYS = {"p50": "p50", "p90": "p90", "p99": "p99", "p99.9": "p999", "p999": "p999",
                   "p99.99": "p9999", "p9999": "p9999", "max": "max", "mean": "mean"}
_UNITS = {"ns": 1e-3, "us": 1.0, "µs": 1.0, "ms": 1e3, "s": 1e6}


@dataclass(frozen=True)
class Slo:
    """One latency objective: ``percentile`` of the corrected latency at most ``limit_us``."""

    percentile: str  # a key of the result's latency_us: p50, p90, p99, p999, p9999, max, mean
    limit_us: float
    text: str

    def holds(self, latency_us: dict) -> bool:
        value = latency_us.get(self.percentile)
        return value is not None and value <= self.limit_us


def parse_slo(text: str) -> Slo:
    """``p99=1ms``, ``p99.9=500us``, ``p50=0.2ms``, ``max=10ms`` -> Slo. ValueError (one line) otherwise."""
    m = re.fullmatch(r"\s*([a-z0-9.]+)\s*=\s*([0-9]*\.?[0-9]+)\s*(ns|us|µs|ms|s)\s*", text)
    if not m or m.group(1) not in PERCENTILE_KEYS:
        raise ValueError(f"invalid SLO {text!r} (examples: p99=1ms, p99.9=500us, p50=200us)")
    limit = float(m.group(2)) * _UNITS[m.group(3)]
    if not math.isfinite(limit) or limit <= 0:
        raise ValueError(f"invalid SLO {text!r}: the limit must be > 0")
    return Slo(PERCENTILE_KEYS[m.group(1)], limit, text.strip())


class Invalid(str, enum.Enum):
    """Why a step carries no verdict on the server. The search decides on these values; ``Step.reason`` is the
    sentence for people."""

    ERROR = "the run could not be made"
    INCOMPLETE = "the run did not complete"
    FAILURES = "integrity failures or errors"
    CLIENT_LIMIT = "client cannot offer this rate"  # a ceiling for the search, not its end


class HostSign(str, enum.Enum):
    """Why a broken step may say more about the host than about the server (:func:`host_signs`)."""

    FOREIGN = "other processes took the run's CPUs"
    CLIENT_LAG = "the load generator's sends were late"
    CLIENT_WAIT = "the load generator waited for its CPU"
    IDLE_SERVER = "the server was mostly idle"


class Stop(str, enum.Enum):
    """Why a search ended before its bracket was within the precision (None: it was)."""

    CONFIRMATION_INVALID = "the confirmation run was invalid"
    UNCONFIRMED = "max_steps reached before the capacity was confirmed"
    CLIENT_CEILING = "the load generator cannot offer more"  # the result is a lower bound
    NO_RATE_MEETS = "no rate meets the SLO"
    MAX_STEPS = "max_steps reached"
    STEP_INVALID = "a step was invalid"
    MAX_RATE_HOLDS = "the SLO still holds at max_rate"  # complete: the capacity is at least max_rate
    # the floor step (a light load) broke the SLO, confirmed: the host's own latency is above it, no capacity here
    BELOW_FLOOR = "the SLO is below this host's latency at a light load"


@dataclass
class Step:
    """One open-loop run at a planned rate, judged."""

    rate: float  # planned msgs/s
    achieved: float  # measured msgs/s
    latency_us: dict  # corrected percentiles (the result's latency_us)
    latency_uncorrected_us: dict | None = None
    verdict: str | None = None  # the run's CPU verdict (client-bound, both-saturated, ...)
    complete: bool = True
    failures: int = 0  # integrity failures + errors
    loadgen_pct: float | None = None
    server_pct: float | None = None
    valid: bool = True
    reason: str | None = None  # why the step is invalid, for people
    invalid: Invalid | None = None  # why the step is invalid, for the search
    meets: bool | None = None  # every SLO held (None when invalid)
    phase: str = "ramp"  # floor, ramp, past-idle, descend, recheck, bisect, confirm, or retry (a break run again)
    overload: bool = False  # achieved < planned because the server fell behind (a valid, broken step)
    send_lag_p50_us: float | None = None  # the client's own timer lateness (None: not known)
    loadgen_wait_pct: float | None = None  # the client's time waiting for a CPU, % of the window (None: not known)
    note: str | None = None  # why a valid step counts as broken although its percentiles held
    host_share: float | None = None  # other processes' share of the run's CPUs in the window (loadgen/hostload.py)
    host_suspect: list[str] = field(default_factory=list)  # a broken step's signs of the host (HostSign values)


def host_signs(step: Step) -> list[HostSign]:
    """The signs that a broken step was broken by the host: other processes on the run's CPUs beyond the
    threshold make bench uses, the load generator's sends late or its process waiting for a CPU, or a server
    that was mostly idle (a queue cannot build in a server that is idle most of the time; the host's wake-up
    tail can break a p99 there)."""
    out = []
    if step.host_share is not None and step.host_share > DISTURBED_SHARE:
        out.append(HostSign.FOREIGN)
    if step.send_lag_p50_us is not None and step.send_lag_p50_us >= HOST_LAG_US:
        out.append(HostSign.CLIENT_LAG)
    if step.loadgen_wait_pct is not None and step.loadgen_wait_pct >= HOST_WAIT_PCT:
        out.append(HostSign.CLIENT_WAIT)
    if step.server_pct is not None and step.server_pct < IDLE_SERVER_PCT and not step.overload:
        out.append(HostSign.IDLE_SERVER)
    return out


def judge(step: Step, slos: list[Slo]) -> Step:
    """Decide whether ``step`` counts, and whether it met every SLO."""
    why, kind = None, None
    if step.verdict and step.verdict.startswith("error: "):  # Runner errors arrive as "error: <message>"
        why, kind = f"{Invalid.ERROR.value} ({step.verdict[7:]})", Invalid.ERROR
    elif not step.complete:
        why, kind = Invalid.INCOMPLETE.value, Invalid.INCOMPLETE
    elif step.failures:
        why, kind = f"{step.failures} integrity failure(s) or error(s)", Invalid.FAILURES
    elif step.verdict in CLIENT_SATURATED:
        why = (f"{Invalid.CLIENT_LIMIT.value}: the load generator was the bottleneck ({step.verdict}; achieved "
               f"{step.achieved:,.0f} of {step.rate:,.0f} msgs/s)")
        kind = Invalid.CLIENT_LIMIT
    elif step.loadgen_wait_pct is not None and step.loadgen_wait_pct >= CLIENT_WAIT_LIMIT_PCT:
        why = (f"{Invalid.CLIENT_LIMIT.value}: the load generator waited for its CPU {step.loadgen_wait_pct:.0f}% "
               "of the window (another process had it)")
        kind = Invalid.CLIENT_LIMIT
    meets = all(s.holds(step.latency_us) for s in slos)
    if why is None and step.achieved < MIN_ACHIEVED * step.rate:
        short = f"achieved {step.achieved:,.0f} of {step.rate:,.0f} msgs/s (< {MIN_ACHIEVED:.0%})"
        lag = step.send_lag_p50_us
        # evidence that the client had headroom: its CPU measured below saturation (above) and its wait for a CPU
        # too; its timers are no evidence when it never waited on them (always behind: a full window or a late
        # client alike)
        headroom = step.verdict not in (None, "unknown") and step.loadgen_wait_pct is not None
        if lag is not None and lag >= CLIENT_LAG_LIMIT_US:  # the client's own timers ran late: its shortfall
            why, kind = f"{Invalid.CLIENT_LIMIT.value}: {short}, its sends late by {lag:,.0f} us (p50)", Invalid.CLIENT_LIMIT
        elif meets and not headroom:  # nothing shows the server held the messages back: not a capacity (the
            why, kind = f"{Invalid.CLIENT_LIMIT.value}: {short}", Invalid.CLIENT_LIMIT  # conservative answer)
        else:  # the client had CPU to spare and kept its schedule, the server did not: messages waited behind
            step.overload = True  # full windows (timed from when they were due). A valid step that breaks the
            if meets:  # SLO: a rate the server cannot sustain is not within its capacity, whatever its percentiles
                meets = False
                step.note = f"the server fell behind: {short}"
    step.valid = why is None
    step.reason = why
    step.invalid = kind
    step.meets = meets if step.valid else None
    return step


@dataclass
class SearchResult:
    slos: list[str]
    precision: float
    capacity_msgs_per_s: float | None  # the highest valid rate meeting every SLO; None when none did
    bracket: tuple[float | None, float | None]  # (highest rate that held, lowest that broke)
    complete: bool  # the bracket is within precision (or the ramp hit max_rate with the SLO holding)
    stopped: str | None  # why the search ended early (an invalid step, max_steps, max_rate)
    steps: list[Step] = field(default_factory=list)
    confirmed: bool | None = None  # with confirm: the capacity held on a second run (None: not asked or not bisected)
    stop: Stop | None = None  # why the search ended early, for code (``stopped`` is the sentence)
    retried: dict[str, int] = field(default_factory=dict)  # broken steps run again, by the sign that was seen
    floor: dict | None = None  # the host's latency at a light load, apart from the capacity
    host_breaks: list[dict] = field(default_factory=list)  # breaks with an idle server the search went above

    def as_dict(self) -> dict:
        d = asdict(self)
        d["msgs_per_s"] = self.capacity_msgs_per_s
        d["bracket"] = list(self.bracket)
        return d


def _verdict(tries: list[Step], final: bool) -> bool | None:
    """A rate's verdict from its valid tries so far: True held, False broke, None not yet decided (try again).

    Two breaks break the rate, and so does one in which the server fell far behind (``CLEAR_OVERLOAD``). A single
    break with a sign of the host (:func:`host_signs`) is outweighed by one try
    that holds, so a lone stall costs one retry; a break with no such sign against one hold is a disagreement that
    a third try decides (2 of 3). ``final`` (no try left): undecided counts as broken, as a single try did before
    breaks were confirmed, so the search never raises a capacity on a tie."""
    valid = [t for t in tries if t.valid]
    if any(t.overload and t.achieved < CLEAR_OVERLOAD * t.rate for t in valid):
        return False  # the server fell far behind: no stall of the host does that
    held = sum(t.meets is True for t in valid)
    broke = sum(t.meets is False for t in valid)
    plain = sum(t.meets is False and not t.host_suspect for t in valid)
    if held and held > plain:
        return True
    if broke >= 2:
        return False
    return False if final else None


@dataclass
class _Rate:
    """One rate's tries and verdict (:meth:`_Trials.run`)."""

    step: Step  # the last valid try; the first try when it was invalid (the search reads its reason)
    held: bool | None  # the verdict; None when the first try was invalid
    tries: list[Step]
    decided: bool  # the verdict came from the rule, not from running out of tries or steps

    @property
    def valid(self) -> bool:
        return self.held is not None

    @property
    def idle_breaks(self) -> bool:
        """Every break at this rate came with the server mostly idle: the host's wake-up tail, not a queue."""
        broken = [t for t in self.tries if t.valid and t.meets is False]
        return bool(broken) and all(HostSign.IDLE_SERVER.value in t.host_suspect for t in broken)


class _Trials:
    """The search's runs: :meth:`one` try at a rate, judged and logged; :meth:`run` a rate's verdict, a break run
    again (``retry``) until :func:`_verdict` decides (with ``confirm_breaks``). ``steps`` gets every try. Retries
    are bounded per rate (``BREAK_TRIES``), in all (``max_retries``) and by ``max_steps``."""

    def __init__(self, measure, slos, log, confirm_breaks: bool, max_steps: int, max_retries: int,
                 steps: list[Step]) -> None:
        self.measure, self.slos, self.log = measure, slos, log
        self.confirm_breaks, self.max_steps, self.max_retries, self.steps = confirm_breaks, max_steps, max_retries, steps
        self.retried: dict[str, int] = {}  # tries run again, by the break's first host sign (or CONFIRM_BREAK)
        self.verdicts: dict[float, bool] = {}  # rate -> it held: the latest decision per rate

    def one(self, rate: float, phase: str) -> Step:
        step = judge(self.measure(rate), self.slos)
        step.phase = phase
        if step.valid and step.meets is False:
            step.host_suspect = [x.value for x in host_signs(step)]
        self.steps.append(step)
        state = ("invalid: " + step.reason if not step.valid else "meets the SLO" if step.meets
                 else f"breaks the SLO ({step.note})" if step.note else "breaks the SLO")
        self.log(f"capacity: step {len(self.steps)} ({phase}) at {rate:,.0f} msgs/s: {state}"
                 + (f"; host: {', '.join(step.host_suspect)}" if step.host_suspect else ""))
        return step

    def run(self, rate: float, phase: str, first: Step | None = None) -> _Rate:
        """``rate``'s verdict: one try, and with ``confirm_breaks`` more while :func:`_verdict` is undecided (from
        ``first``, a try already made, when given)."""
        tries = [first if first is not None else self.one(rate, phase)]
        if not tries[0].valid:
            return _Rate(tries[0], None, tries, True)
        while (held := _verdict(tries, final=False)) is None:
            if (not self.confirm_breaks or len(tries) >= BREAK_TRIES or len(self.steps) >= self.max_steps
                    or sum(self.retried.values()) >= self.max_retries):
                break
            last_break = next(t for t in reversed(tries) if t.valid and t.meets is False)
            why = last_break.host_suspect[0] if last_break.host_suspect else CONFIRM_BREAK
            self.retried[why] = self.retried.get(why, 0) + 1
            tries.append(self.one(rate, "retry"))
            if not tries[-1].valid:  # no verdict from it: the rate's valid tries decide (a break stays a break)
                break
        decided = held is not None
        if held is None:
            held = _verdict(tries, final=True)
        self.verdicts[rate] = held
        return _Rate(next(t for t in reversed(tries) if t.valid), held, tries, decided)


def _floor(tries: list[Step], held: bool | None, confirmed: bool) -> dict:
    """The floor as the result gives it: the host's latency at a light load (its first try), apart from the
    capacity; ``meets`` is the floor's verdict, ``confirmed`` whether :func:`_verdict` decided it (a break run
    again) rather than its one try."""
    f = tries[0]
    return {"rate": f.rate, "valid": f.valid, "reason": f.reason, "meets": held if f.valid else None,
            "confirmed": confirmed, "tries": len(tries), "broke": sum(t.meets is False for t in tries),
            "latency_us": {k: f.latency_us.get(k) for k in ("p50", "p99", "p999", "max")},
            "server_pct": f.server_pct, "host_share": f.host_share, "send_lag_p50_us": f.send_lag_p50_us,
            "host_suspect": sorted({h for t in tries for h in t.host_suspect})}


class _Floor:
    """The floor step (the host's latency at a light load), and its verdict once the search needs it."""

    def __init__(self, trials: _Trials, rate: float) -> None:
        self.trials, self.rate = trials, rate
        self.first = trials.one(rate, "floor")
        self.result = _floor([self.first], self.first.meets, False)
        self.held: bool | None = None  # the verdict, once decided

    @property
    def broke_once(self) -> bool:
        return self.first.valid and self.first.meets is False

    def decide(self) -> bool | None:
        """True held, False broke (a break confirmed as any other: :func:`_verdict`), None: no step left to
        confirm a break."""
        if self.held is None:
            r = self.trials.run(self.rate, "floor", first=self.first)
            self.result = _floor(r.tries, r.held, r.decided)
            self.held = r.held if r.decided else None
        return self.held


def _a_ceiling(step: Step, lo: float | None, fl: _Floor | None) -> bool:
    """Whether an invalid step bounds the search rather than ending it: the client could not offer its rate, and a
    lower rate was offered, one that held (``lo``) or the floor's (``fl``, with ``confirm_breaks``: make bench starts
    at half the closed-loop rate, which the load generator often cannot offer open loop, its process waiting for
    its CPU; the capacity, if any, lies below, and the search comes down to it instead of ending with nothing)."""
    if step.invalid is not Invalid.CLIENT_LIMIT:
        return False
    if lo is not None:
        return step.rate > lo
    return fl is not None and fl.first.valid and step.rate > fl.rate


def _down(x: float, growth: float, fl: _Floor | None) -> tuple[str, float]:
    """(phase, rate) coming down from a break at ``x`` with nothing held: geometrically, but never past the floor
    (the floor decides there)."""
    rate = x / growth
    if fl is not None and fl.first.valid and rate <= fl.rate:
        return "floor", fl.rate
    return "descend", rate


def _below_floor(floor: dict, slos: list[Slo]) -> str:
    """Stop.BELOW_FLOOR's sentence: the floor's rate, its tries, and the SLO's percentiles on its first try."""
    seen = ", ".join(f"{s.text.split('=')[0]} {floor['latency_us'][s.percentile]:,.0f} us" for s in slos
                     if floor["latency_us"].get(s.percentile) is not None)
    return (f"{Stop.BELOW_FLOOR.value}: {floor['rate']:,.0f} msgs/s broke {' and '.join(s.text for s in slos)} in "
            f"{floor['broke']} of {floor['tries']} tries" + (f" ({seen} on the first)" if seen else "")
            + "; no capacity is measurable here")


def _out_of_steps(phase: str, hi: float | None, host_breaks: list[dict], n: int, max_steps: int) -> tuple[str, Stop]:
    """Why the search ran out of steps (or of rates to come down to), by the phase it was in."""
    if phase == "past-idle":  # nothing held: below these breaks and above them
        where = ", ".join(f"{b['rate']:,.0f}" for b in host_breaks)
        return (f"no rate meets the SLO within {n} steps, above or below the breaks on a mostly idle server at "
                f"{where} msgs/s", Stop.NO_RATE_MEETS)
    if phase in ("descend", "floor"):
        return f"no rate from {hi:,.1f} msgs/s up meets the SLO within {n} steps", Stop.NO_RATE_MEETS
    doing = {"ramp": "ramping", "recheck": "rechecking"}.get(phase, "bisecting")
    return f"max_steps ({max_steps}) reached while {doing}", Stop.MAX_STEPS


def search(measure: Callable[[float], Step], slos: list[Slo], start_rate: float, precision: float = 0.05,
           growth: float = 2.0, max_steps: int = 20, max_rate: float | None = None, log=lambda msg: None,
           confirm: bool = False, confirm_breaks: bool = False, floor: bool = False,
           max_retries: int | None = None) -> SearchResult:
    """Ramp geometrically from ``start_rate`` while every SLO holds (or come down while it breaks, and once a
    rate holds run the lowest broken one again: a break before anything held may be the server starting), then
    bisect to ``precision``. With ``confirm``, the rate found is run once more and must hold again: if it breaks, it
    counts as broken and the search goes on below it (a tail percentile on a shared machine can pass once on
    luck; the capacity is then a rate that held twice).

    With ``confirm_breaks`` (issue 32: on this VM a p99 over a short step rests on ~100 slow samples, and one
    host stall breaks it), a broken step is run again at once (``retry``) before the rate counts as broken
    (:func:`_verdict`: two breaks break it; a break with a sign of the host is outweighed by one try that holds, any
    other by two: 2 of 3), at most ``BREAK_TRIES`` tries per rate and ``max_retries`` retries in all (default: half of
    ``max_steps``; beyond it a break counts on one try). The retries are counted by the sign the break showed.
    And latency is not assumed to rise with the rate below the first rate that holds: a break while the server
    was mostly idle, before anything held, sends the search up past it (``past-idle``, up to
    ``UP_PAST_IDLE_BREAKS`` times), not down; such breaks are kept in ``host_breaks``, never the bracket's top.

    With ``floor``, the first step, at ``FLOOR_FRACTION`` of ``start_rate``, measures the host's latency at a light
    load, reported apart (``floor``). The search never comes down past it: when it would, the floor decides (a
    break there retried as any other): if it held, it is the bracket's bottom; if it broke, the search ends
    (``Stop.BELOW_FLOOR``: the SLO is below what this host gives at a light load) rather than with a tiny rate.

    ``measure(rate)`` runs one open-loop step and returns its Step (unjudged); every step is judged here."""
    if not slos:
        raise ValueError("at least one SLO is needed")
    if start_rate < MIN_RATE or not 0 < precision < 1 or growth <= 1 or max_steps < 1:
        raise ValueError(f"start_rate >= {MIN_RATE:g}, 0 < precision < 1, growth > 1 and max_steps >= 1 are required")
    steps: list[Step] = []
    lo: float | None = None  # highest valid rate that met every SLO
    hi: float | None = None  # lowest valid rate that broke one
    stopped = None
    trials = _Trials(measure, slos, log, confirm_breaks, max_steps, max_steps // 2 if max_retries is None else max_retries,
                     steps)
    run, verdicts = trials.run, trials.verdicts
    host_breaks: list[dict] = []  # breaks on an idle server before anything held, that the search went above

    # the floor: a tenth of the start rate is light (make bench starts at half a model's closed-loop rate, so the
    # server is ~5% busy there and builds no queue) yet, from bench's starts (25k-75k msgs/s), thousands of
    # samples per step, so its p99 is not one timer tick. Its first try is all it costs unless the search comes
    # down to it (then a break there is retried before it ends the search)
    floor_rate = max(MIN_RATE, start_rate * FLOOR_FRACTION)
    floor_rate = floor_rate if floor_rate < start_rate else None  # a start at MIN_RATE has no lighter load
    fl = _Floor(trials, floor_rate) if floor and floor_rate is not None else None

    def down_from(x: float) -> tuple[str, float]:
        return _down(x, growth, fl)

    ceiling: float | None = None  # lowest rate the client could not offer, above lo
    ceiling_reason = ""
    stop: Stop | None = None
    confirmed = False
    failed: set[float] = set()  # rates that held once and broke when confirmed
    rechecked = False  # a break before anything held has been run once more
    rate, phase = start_rate, "ramp"
    while True:
        tops = [x for x in (hi, ceiling) if x is not None]
        top = min(tops) if tops else None
        if phase == "bisect" and top / lo - 1 <= precision:
            if confirm and not confirmed and len(steps) < max_steps:
                r = run(lo, "confirm")
                if r.valid and r.held:
                    confirmed = True
                elif r.valid:  # broke on the second run: not a rate it sustains; go on below it
                    failed.add(lo)
                    hi = lo if hi is None else min(hi, lo)
                    held = [x for x, ok in verdicts.items() if ok and x < hi and x not in failed]
                    lo = max(held) if held else None
                    if lo is None:
                        phase, rate = down_from(hi)
                    else:
                        rate = math.sqrt(lo * hi)
                    continue
                else:
                    stopped = f"the confirmation of {lo:,.0f} msgs/s is invalid: {r.step.reason}"
                    stop = Stop.CONFIRMATION_INVALID
                    break
            elif confirm and not confirmed:
                stopped, stop = f"max_steps ({max_steps}) reached before the capacity was confirmed", Stop.UNCONFIRMED
                break
            if hi is None or (ceiling is not None and ceiling < hi):
                stopped = (f"the load generator cannot offer {ceiling:,.0f} msgs/s ({ceiling_reason}); the SLO held "
                           f"up to {lo:,.0f}: the capacity is at least that")
                stop = Stop.CLIENT_CEILING
            break
        if phase == "floor":  # the search came down to the floor: its verdict, a break there confirmed first
            # (a floor that held, then broke when confirmed as the capacity, leaves nothing below to come down to)
            held = fl.decide() if fl.rate not in failed else None
            if held:  # a rate that held: the bracket's bottom
                lo = fl.rate
                phase, rate = "bisect", math.sqrt(lo * min(x for x in (hi, ceiling) if x is not None))
                continue
            if held is False:
                stopped, stop = _below_floor(fl.result, slos), Stop.BELOW_FLOOR
                break
            # undecided (no step was left to confirm the floor's break) or failed: the search ends as out of steps
        if len(steps) >= max_steps or rate < MIN_RATE or phase == "floor":
            stopped, stop = _out_of_steps(phase, hi, host_breaks, len(steps), max_steps)
            break
        r = run(rate, phase)
        step = r.step
        if not r.valid:
            if _a_ceiling(step, lo, fl if confirm_breaks else None):
                ceiling, ceiling_reason = min((ceiling or math.inf, ceiling_reason), (rate, step.reason))
                phase, rate = (("bisect", math.sqrt(lo * min(x for x in (hi, ceiling) if x is not None)))
                               if lo is not None else down_from(rate))
                continue
            stopped, stop = f"step at {rate:,.0f} msgs/s is invalid: {step.reason}", Stop.STEP_INVALID
            break
        if r.held:
            lo = rate
            if phase == "recheck":  # the break did not repeat: it said nothing about the rate
                hi = None
        else:
            hi = rate if hi is None else min(hi, rate)
        if phase == "descend" and r.held and not rechecked and not confirm_breaks:
            # the rate above broke before any rate had held: a server still starting or a stall of the host breaks
            # a first step as surely as a rate beyond the server. Run it once more before it caps the search (once
            # per search): if it holds now, the search ramps up from it. (With confirm_breaks it was run again.)
            rechecked = True
            phase, rate = "recheck", hi
            continue
        if lo is not None and (hi is not None or ceiling is not None):
            phase, rate = "bisect", math.sqrt(lo * min(x for x in (hi, ceiling) if x is not None))
        elif hi is None:  # still holding: up
            phase = "ramp"
            if max_rate is not None and rate >= max_rate:
                stopped, stop = f"the SLO still holds at max_rate ({max_rate:,.0f} msgs/s)", Stop.MAX_RATE_HOLDS
                break
            rate = rate * growth if max_rate is None else min(rate * growth, max_rate)
        elif (confirm_breaks and r.idle_breaks and len(host_breaks) < UP_PAST_IDLE_BREAKS
              and (max_rate is None or rate < max_rate)):
            # broke (confirmed) with nothing held yet, on a server mostly idle: a busier step may hold (the host's
            # wake-up tail breaks a light load), so try above it; the break is kept apart, never the bracket's top
            host_breaks.append({"rate": rate, "latency_us": {k: step.latency_us.get(k) for k in ("p50", "p99", "max")},
                                "server_pct": step.server_pct,
                                "host_suspect": sorted({h for t in r.tries for h in t.host_suspect})})
            hi = None
            phase, rate = "past-idle", rate * growth if max_rate is None else min(rate * growth, max_rate)
        else:  # broke with nothing held yet: down, from the lowest break
            hi = min([hi] + [b["rate"] for b in host_breaks])
            # above the idle server's breaks nothing held either: if the light load broke too, the floor decides now
            # (the rates below those breaks are lighter still), not after a descent through them
            phase, rate = ("floor", fl.rate) if host_breaks and fl is not None and fl.broke_once else down_from(hi)
    complete = stop in (None, Stop.MAX_RATE_HOLDS)
    if confirm and lo is not None and not confirmed and complete:
        confirmed = None  # max_rate reached: nothing bisected to confirm
    res = SearchResult([s.text for s in slos], precision, lo, (lo, hi), complete, stopped, steps)
    res.confirmed = confirmed if confirm else None
    res.stop = stop
    res.retried, res.floor, res.host_breaks = trials.retried, fl.result if fl is not None else None, host_breaks
    return res


# -- the search on real runs (loadgen/run.py --find-capacity) ---------------------------------------------------

def step_of(rate: float, doc: dict) -> Step:
    """A Step from one load-generator result document."""
    r = doc["result"]
    return Step(rate=rate, achieved=r["msgs_per_s"], latency_us=r["latency_us"],
                latency_uncorrected_us=r["latency_uncorrected_us"], verdict=r["verdict"], complete=r["complete"],
                failures=r["integrity_failures"] + sum(r["errors"].values()), loadgen_pct=r["cpu"]["loadgen_pct"],
                server_pct=r["cpu"]["server_pct"],
                send_lag_p50_us=(r.get("send_lag_us") or {}).get("p50"), loadgen_wait_pct=r["cpu"].get("loadgen_wait_pct"),
                host_share=(r.get("host") or {}).get("worst_share"))


MAX_SWEEP = 50  # rates in one --sweep


def parse_sweep(text: str) -> list[tuple[float, bool]]:
    """``--sweep``: ``1000,5k,2.5M`` (planned msgs/s; k = 1,000, M = 1,000,000) or ``0.5x,0.9x,1x`` (fractions of the
    capacity found by --find-capacity in the same run) -> [(value, is_fraction)]. ValueError (one line) otherwise."""
    out = []
    for item in (x.strip() for x in text.split(",")):
        frac = item.endswith("x")
        scale = {"k": 1e3, "K": 1e3, "M": 1e6}.get(item[-1:], 1.0) if not frac else 1.0
        try:
            v = float(item[:-1]) if frac or scale != 1.0 else float(item)
            v *= scale
        except ValueError:
            v = float("nan")
        if not math.isfinite(v) or v <= 0 or (not frac and v < MIN_RATE):
            raise ValueError(f"invalid --sweep entry {item!r} (examples: 1000,5k,20k or 0.25x,0.5x,0.9x)")
        out.append((v, frac))
    if not out:
        raise ValueError("--sweep needs at least one rate")
    if len(out) > MAX_SWEEP:
        raise ValueError(f"--sweep takes at most {MAX_SWEEP} rates, got {len(out)}")
    return out


class Stepper:
    """Runs open-loop steps (one Runner each: a fresh managed server with --server) and keeps their documents."""

    def __init__(self, cfg, log) -> None:
        self.cfg = cfg
        self.log = log
        self.docs: list[dict] = []
        self.notes: set[str] = set()
        self.worst = 0  # the worst exit code of the steps' runs (1: integrity failures, 3: incomplete)
        self.interrupted = False  # Ctrl-C: no further step

    def once(self, msg: str) -> None:  # a step's one-line notes (e.g. which engine), said once for the whole run
        if msg not in self.notes:
            self.notes.add(msg)
            self.log(msg)

    def measure(self, rate: float) -> Step:
        """One step. A step whose run could not be made at all (the server would not start, nothing listens) is an
        invalid step when an earlier step ran; as the first step it is the run's plain error."""
        from dataclasses import replace

        from ..runner import RunError, Runner
        from ..target import TargetError

        step_cfg = replace(self.cfg, rate=rate, find_capacity=False, sweep=None, json_path=None, hdr_path=None)
        from ..runner import EXIT_INCOMPLETE

        if self.interrupted:
            self.docs.append(None)
            return Step(rate=rate, achieved=0.0, latency_us={}, complete=False, verdict="error: interrupted")
        try:
            doc, code = Runner(step_cfg, self.once).execute()
        except (RunError, TargetError) as exc:
            if not self.docs:
                raise
            self.docs.append(None)
            self.worst = max(self.worst, EXIT_INCOMPLETE)
            return Step(rate=rate, achieved=0.0, latency_us={}, complete=False, failures=0, verdict=f"error: {exc}")
        self.docs.append(doc)
        self.worst = max(self.worst, code)
        if doc["result"]["incomplete_reason"] == "interrupted":
            self.interrupted = True
        return step_of(rate, doc)

    def document(self, at: int) -> dict:
        """Step ``at``'s document (or the nearest earlier one that ran), with the run's own configuration (its
        --slo, --precision, --sweep ...) and the engine the steps really ran on."""
        at = min(at, len(self.docs) - 1)
        while self.docs[at] is None:
            at -= 1
        doc = self.docs[at]
        ran = doc["config"]
        doc["config"] = {**self.cfg.as_dict(), "engine": ran["engine"], "engine_note": ran["engine_note"]}
        return doc


def run_sweep(stepper: Stepper, rates: list[float], slos: list[Slo], log, fractions: list[float] | None = None,
              capacity: float | None = None) -> dict:
    """Every planned rate once, in the order given; each step judged (validity always; meets only with SLOs)."""
    steps = []
    for i, rate in enumerate(rates):
        if stepper.interrupted:
            log("sweep: interrupted; the remaining steps are not run")
            break
        step = judge(stepper.measure(rate), slos)
        step.phase = "sweep"
        if not slos:
            step.meets = None
        steps.append(step)
        state = "invalid: " + step.reason if not step.valid else (
            "" if not slos else "meets the SLO" if step.meets else "breaks the SLO")
        log(f"sweep: step {i + 1}/{len(rates)} at {rate:,.0f} msgs/s: achieved {step.achieved:,.0f}"
            + (f", {state}" if state else ""))
    return {"slos": [s.text for s in slos], "rates": rates, "of_capacity": fractions, "capacity_msgs_per_s": capacity,
            "steps": [asdict(s) for s in steps]}


def find(cfg, log) -> tuple[dict, int]:
    """``--find-capacity`` and/or ``--sweep``: the search (one open-loop run per step), then the sweep's steps.

    Returns the result document of the step at the capacity (or the last step when no rate met every SLO; for a
    sweep alone, its last step), with ``result.capacity`` holding the search and ``result.sweep`` the sweep, and
    the exit code: 0 when the search finished and every sweep step ran, 3 when the search stopped early (an
    invalid step, max_steps, or no rate met the SLO) or a sweep step could not run."""
    from ..runner import EXIT_INCOMPLETE, EXIT_OK

    slos = [parse_slo(t) for t in cfg.slos]
    stepper = Stepper(cfg, log)
    code = EXIT_OK
    cap = None
    at = None
    if cfg.find_capacity:
        res = search(stepper.measure, slos, cfg.start_rate, cfg.precision, max_steps=cfg.max_steps,
                     max_rate=cfg.max_rate, log=log, confirm=cfg.confirm, confirm_breaks=True, floor=True)
        at = next((i for i, s in enumerate(res.steps) if s.valid and s.meets and s.rate == res.capacity_msgs_per_s),
                  len(stepper.docs) - 1)
        cap = res.as_dict()
        cap["document_step"] = at + 1  # the step whose figures the rest of this document gives
        if not res.complete:
            code = EXIT_INCOMPLETE
    sw = None
    if cfg.sweep:
        entries = parse_sweep(cfg.sweep)
        fractions = [v if f else None for v, f in entries] if any(f for _v, f in entries) else None
        found = cap["msgs_per_s"] if cap else None
        if fractions and found is None:
            log("sweep: skipped: its rates are fractions of a capacity, and the search found none")
            sw = {"slos": [s.text for s in slos], "rates": [], "of_capacity": fractions, "capacity_msgs_per_s": None,
                  "steps": [], "skipped": "no capacity was found to take fractions of"}
        else:
            rates = [max(MIN_RATE, v * found) if f else v for v, f in entries]
            sw = run_sweep(stepper, rates, slos, log, fractions, found)
            sw["capacity_is_lower_bound"] = bool(fractions) and not cap["complete"]
            if at is None:
                at = len(stepper.docs) - 1
                sw["document_step"] = len(sw["steps"])
    doc = stepper.document(at)
    doc["result"]["capacity"] = cap
    doc["result"]["sweep"] = sw
    if stepper.interrupted:
        doc["result"]["complete"] = False
        doc["result"]["incomplete_reason"] = "interrupted"
    return doc, max(code, stepper.worst)
