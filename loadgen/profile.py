"""Open-loop load profiles (``--profile``): the offered rate over time, as phases, and the send schedule it makes.

Syntax: phases separated by commas, each ``KIND:RATE:DURATION[@START]``::

    ramp:0-60k:10s,hold:60k:20s,spike:150k:5s,hold:30k:20s
    hold:0.5x:10s,spike:2x:5s,hold:0.5x:15s          (x: a multiple of --rate, e.g. a capacity)

- ``hold:R:D``: R messages/s (over all connections) for D. ``spike:R:D`` is the same, marked as an overload
  phase in reports. ``ramp:R1-R2:D``: from R1 to R2, linearly, over D.
- Rates: ``60000``, ``60k``, ``1.5M``, or ``2x`` (times the base rate, ``--rate``); 0 is allowed (a pause).
- Durations: ``500ms``, ``10s``, ``2m``. ``@START`` (optional) pins where a phase starts; a phase starting
  before the previous one ends overlaps it (an error), one starting later leaves a pause (rate 0) between.

The schedule: ``N(t)``, the messages due by time ``t`` (the integral of the rate), is exact per phase (linear or
quadratic), and message ``n`` (0-based, over all connections) is due at ``T(n)``, the time ``N`` reaches ``n``.
Connection ``c`` of ``C`` sends messages ``c, c + C, c + 2C, ...``, so the connections interleave evenly at every
rate. The number of messages due in a phase is ``ceil(N(end)) - ceil(N(start))``: exact, from the schedule, not
from timing. Latency is timed from each message's due time (the coordinated-omission rule), as for ``--rate``.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass

KINDS = ("hold", "ramp", "spike")
MAX_TOTAL_S = 3600.0  # a profile is a bounded load loop
MAX_RATE = 100e6


class ProfileError(ValueError):
    """A profile that cannot be used: one line for the user."""


@dataclass(frozen=True)
class Phase:
    kind: str  # hold | ramp | spike | pause (a gap left by an @START)
    start_s: float
    duration_s: float
    rate_from: float  # messages/s over all connections at the phase's start
    rate_to: float  # ... and at its end (= rate_from unless a ramp)

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def rate_at(self, t: float) -> float:
        if self.duration_s <= 0:
            return self.rate_to
        return self.rate_from + (self.rate_to - self.rate_from) * (t - self.start_s) / self.duration_s

    def count(self, t: float) -> float:
        """Messages due from the phase's start to ``t`` (within the phase)."""
        dt = min(max(t - self.start_s, 0.0), self.duration_s)
        if self.duration_s <= 0:
            return 0.0
        slope = (self.rate_to - self.rate_from) / self.duration_s
        return self.rate_from * dt + slope * dt * dt / 2

    def time_of(self, n: float) -> float:
        """The time (from the phase's start) at which ``n`` messages of this phase are due: the inverse of
        :meth:`count` (``n`` at most the phase's total)."""
        if n <= 0:
            return 0.0
        a = (self.rate_to - self.rate_from) / self.duration_s / 2  # count(dt) = a dt^2 + b dt
        b = self.rate_from
        if abs(a) < 1e-12:
            return n / b
        disc = max(b * b + 4 * a * n, 0.0)
        return 2 * n / (b + math.sqrt(disc))  # the stable root, for a ramp up or down

    def as_dict(self) -> dict:
        return {"kind": self.kind, "start_s": round(self.start_s, 6), "duration_s": round(self.duration_s, 6),
                "rate_from": self.rate_from, "rate_to": self.rate_to}


class Profile:
    """Phases back to back from t = 0 (gaps filled with pauses), and the schedule they make."""

    def __init__(self, phases: list[Phase], text: str = "") -> None:
        self.phases = phases
        self.text = text
        self._starts = [p.start_s for p in phases]
        self._cum = [0.0]  # messages due by each phase's start
        for p in phases:
            self._cum.append(self._cum[-1] + p.count(p.end_s))

    @property
    def cumulative(self) -> list[float]:
        """Messages due by each phase's start (what the native engine is given with the phases)."""
        return self._cum[:-1]

    @property
    def duration_s(self) -> float:
        return self.phases[-1].end_s if self.phases else 0.0

    @property
    def total(self) -> int:
        """Messages due over the whole profile."""
        return math.ceil(self._cum[-1] - 1e-9)

    @property
    def peak_rate(self) -> float:
        return max(max(p.rate_from, p.rate_to) for p in self.phases)

    def phase_at(self, t: float) -> int:
        return max(0, min(len(self.phases) - 1, bisect.bisect_right(self._starts, t) - 1))

    def rate_at(self, t: float) -> float:
        return self.phases[self.phase_at(t)].rate_at(t)

    def count(self, t: float) -> float:
        """N(t): messages due by ``t`` seconds (a real number)."""
        if t <= 0:
            return 0.0
        i = self.phase_at(t)
        return self._cum[i] + self.phases[i].count(t)

    def time_of(self, n: int) -> float | None:
        """T(n): when message ``n`` (0-based, over all connections) is due, in seconds from the start; None when
        the profile ends before it."""
        if n < 0 or n >= self.total:
            return None
        # the last phase that starts with fewer than n + 1 messages due: the one in which N passes n (phases
        # that make nothing due share their cumulative count with the next one, and bisect_right passes them)
        i = bisect.bisect_right(self._cum, n) - 1
        p = self.phases[i]
        return p.start_s + p.time_of(n - self._cum[i])

    def due_in(self, start: float, end: float) -> int:
        """Messages due in [start, end): exact, from the schedule."""
        return math.ceil(self.count(end) - 1e-9) - math.ceil(self.count(start) - 1e-9)

    def per_phase(self) -> list[int]:
        return [self.due_in(p.start_s, p.end_s) for p in self.phases]

    def canonical(self) -> str:
        """The profile as text with every rate in msgs/s and every pause spelled out (``hold:0``): parses back to
        the same phases, with no base rate."""
        out = []
        for p in self.phases:
            dur = f"{p.duration_s:.6f}".rstrip("0").rstrip(".") + "s"
            if p.kind == "ramp":
                out.append(f"ramp:{_num(p.rate_from)}-{_num(p.rate_to)}:{dur}")
            else:
                out.append(f"{'hold' if p.kind == 'pause' else p.kind}:{_num(p.rate_from)}:{dur}")
        return ",".join(out)

    def as_dict(self) -> dict:
        return {"text": self.text, "duration_s": round(self.duration_s, 6), "total": self.total,
                "peak_rate": self.peak_rate, "phases": [p.as_dict() for p in self.phases],
                "due_per_phase": self.per_phase()}


def _num(x: float) -> str:
    """A rate as the parser reads it back: digits, no exponent."""
    return f"{x:.6f}".rstrip("0").rstrip(".")


_NUM = r"\d+(?:\.\d+)?"
_DURATION = re.compile(rf"^({_NUM})(ms|s|m)$")
_RATE = re.compile(rf"^({_NUM})([kKmM]?|x)$")


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise ProfileError(f"{text!r} is not a duration (e.g. 500ms, 10s, 2m)")
    return float(m.group(1)) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


def parse_rate(text: str, base: float | None) -> float:
    m = _RATE.match(text.strip())
    if not m:
        raise ProfileError(f"{text!r} is not a rate (e.g. 60000, 60k, 1.5M, or 2x of --rate)")
    x, unit = float(m.group(1)), m.group(2)
    if unit == "x":
        if base is None:
            raise ProfileError(f"{text!r} is a multiple of the base rate: give --rate (e.g. a capacity)")
        return x * base
    return x * {"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6}[unit]


def parse(text: str, base: float | None = None) -> Profile:
    """A Profile from its text; ProfileError (one line) when it cannot be used. ``base``: what ``Nx`` multiplies."""
    if not text or not text.strip():
        raise ProfileError("an empty profile: give phases, e.g. hold:10k:10s,spike:40k:5s,hold:10k:10s")
    phases: list[Phase] = []
    t = 0.0
    for i, part in enumerate(x.strip() for x in text.split(",")):
        where = f"phase {i + 1} ({part!r})"
        if not part:
            raise ProfileError(f"phase {i + 1} is empty (two commas in a row?)")
        start = None
        if "@" in part:
            part, at = part.rsplit("@", 1)
            try:
                start = parse_duration(at)
            except ProfileError as exc:
                raise ProfileError(f"{where}: @START: {exc}") from None
        fields = part.split(":")
        if len(fields) != 3 or fields[0] not in KINDS:
            raise ProfileError(f"{where}: expected KIND:RATE:DURATION with KIND one of {', '.join(KINDS)} "
                               "(e.g. ramp:0-60k:10s)")
        kind, rate, dur = fields
        try:
            duration = parse_duration(dur)
            if kind == "ramp":
                if "-" not in rate:
                    raise ProfileError(f"a ramp goes FROM-TO, e.g. 0-60k (got {rate!r})")
                r0, r1 = (parse_rate(x, base) for x in rate.split("-", 1))
            else:
                r0 = r1 = parse_rate(rate, base)
        except ProfileError as exc:
            raise ProfileError(f"{where}: {exc}") from None
        if duration <= 0:
            raise ProfileError(f"{where}: the duration must be positive")
        if max(r0, r1) > MAX_RATE:
            raise ProfileError(f"{where}: {max(r0, r1):,.0f} msgs/s is beyond {MAX_RATE:,.0f}")
        if start is not None:
            if start < t - 1e-9:
                prev = phases[-1]
                raise ProfileError(f"{where} starts at {start:g}s, before phase {i} ({prev.kind}) ends at "
                                   f"{prev.end_s:g}s: phases overlap")
            if start > t + 1e-9:
                phases.append(Phase("pause", t, start - t, 0.0, 0.0))
                t = start
        phases.append(Phase(kind, t, duration, r0, r1))
        t += duration
    if t > MAX_TOTAL_S:
        raise ProfileError(f"the profile lasts {t:g} s; at most {MAX_TOTAL_S:g} s")
    profile = Profile(phases, text.strip())
    if profile.total == 0:
        raise ProfileError("the profile offers no message (every rate is 0)")
    return profile


CALM_INTERVALS = 3  # recovered: p99 back under the limit (and the backlog gone) for this many intervals in a row


def recovery(timeline: list[dict], profile: Profile, slo_p99_us: float | None = None) -> list[dict]:
    """What each spike did, from the run's timeline (exact counts per interval) and its profile: one entry per
    spike phase.

    - **backlog**: messages due (by the schedule) and not yet echoed, at each interval's end: the cumulative
      ``due`` minus the cumulative ``messages``. A server that keeps up holds it near what is in flight; one that
      falls behind lets it grow. ``peak_backlog`` is its largest value from the spike's start until recovery,
      ``fell_behind`` whether it passed the largest backlog before the spike plus 1% of the spike's messages.
    - **caught up**: the first interval end after the spike from which the backlog is back within that bound.
    - **recovered**: the first interval end after the spike that starts ``CALM_INTERVALS`` intervals in a row with
      p99 under the limit (``slo_p99_us``, else twice the median p99 before the spike) and the backlog caught up.
      ``recover_s`` is from the spike's end; None when the run ended first.
    - the latency peak (p99, p99.9), the errors, and the server's memory before and at its peak."""
    out = []
    ends = [e["t_s"] for e in timeline]
    cum_due, cum_msgs, backlog = 0, 0, []
    for e in timeline:
        cum_due += e.get("due") or 0
        cum_msgs += e.get("messages") or 0
        backlog.append(cum_due - cum_msgs)
    for k, ph in enumerate(profile.phases):
        if ph.kind != "spike":
            continue
        # an interval belongs where its middle lies (its end is when the worker woke: a little after the tick)
        mids = [e["t_s"] - (e.get("span_s") or 0.0) / 2 for e in timeline]
        before = [i for i, t in enumerate(mids) if t < ph.start_s]
        during = [i for i, t in enumerate(mids) if ph.start_s <= t < ph.end_s]
        after = [i for i, t in enumerate(mids) if t >= ph.end_s]
        p99_before = sorted(e["p99_us"] for i in before if (e := timeline[i]).get("p99_us") is not None)
        base_p99 = p99_before[len(p99_before) // 2] if p99_before else None
        limit = slo_p99_us if slo_p99_us is not None else (2 * base_p99 if base_p99 is not None else None)
        bound = max((backlog[i] for i in before), default=0) + 0.01 * profile.due_in(ph.start_s, ph.end_s)
        caught = next((i for i in after if backlog[i] <= bound), None)
        calm = None
        for j, i in enumerate(after):
            run = after[j:j + CALM_INTERVALS]
            if len(run) == CALM_INTERVALS and all(
                    limit is not None and (timeline[x].get("p99_us") or 0) <= limit and backlog[x] <= bound for x in run):
                calm = i
                break
        upto = [i for i in during + after if calm is None or i < calm] or during
        rss_before = [timeline[i]["server_rss_mb"] for i in before if timeline[i].get("server_rss_mb") is not None]
        rss_all = [timeline[i]["server_rss_mb"] for i in during + after if timeline[i].get("server_rss_mb") is not None]
        p99s = [timeline[i]["p99_us"] for i in upto if timeline[i].get("p99_us") is not None]
        p999s = [timeline[i]["p999_us"] for i in upto if timeline[i].get("p999_us") is not None]
        out.append({
            "phase": k, "start_s": ph.start_s, "end_s": ph.end_s, "rate": ph.rate_from,
            "due": profile.due_in(ph.start_s, ph.end_s),
            "echoed_during": sum(timeline[i].get("messages") or 0 for i in during),
            "p99_before_us": base_p99, "p99_limit_us": limit,
            "limit_from": "slo" if slo_p99_us is not None else "2 x the median p99 before the spike",
            "peak_p99_us": max(p99s, default=None), "peak_p999_us": max(p999s, default=None),
            "peak_backlog": max((backlog[i] for i in upto), default=0), "backlog_bound": round(bound, 1),
            "fell_behind": max((backlog[i] for i in upto), default=0) > bound,
            "caught_up_at_s": None if caught is None else ends[caught],
            "recovered_at_s": None if calm is None else ends[calm],
            "recover_s": None if calm is None else round(ends[calm] - ph.end_s, 3),
            "errors": sum(timeline[i].get("errors") or 0 for i in during + after),
            "rss_before_mb": max(rss_before) if rss_before else None,
            "peak_rss_mb": max(rss_all) if rss_all else None,
        })
    return out
