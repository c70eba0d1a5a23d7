"""Capacity at a latency SLO: the open-loop rate search, with no sockets (issue 12's core; the CLI, the bench
plots and the report come on top of it).

A closed loop slows down with the server, so it never shows the knee where queues build. The search drives
an open loop (``--rate``, coordinated omission corrected) at planned rates: it ramps up geometrically from a
start rate while every SLO holds, and once one breaks it bisects (geometrically) between the highest rate
that held and the lowest that broke, until the two are within ``precision`` of each other. The capacity is
the highest *valid* rate that met every SLO.

A step is valid only if the figures can be trusted: the run completed, no integrity failure or error
occurred, and the load generator was not the bottleneck. The achieved rate must be at least
``MIN_ACHIEVED`` of the planned one, unless the corrected latency broke the SLO: then the server fell behind
(with ``--depth`` messages in flight, messages due while the window was full wait, and are timed from when
they were due), which is exactly the overload the search looks for, and the step is a valid break. An invalid step ends the search: the result
says why and where, and reports the highest valid rate that met the SLO as a lower bound, never a guess
beyond it. The search is bounded in steps (``max_steps``) and by ``max_rate``, and stops by itself.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Callable

from .stats import CLIENT_SATURATED

MIN_ACHIEVED = 0.99  # a step counts only if the client offered at least 99% of the planned rate
MIN_RATE = 1.0  # msgs/s: below this the search gives up coming down
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
    reason: str | None = None  # why the step is invalid
    meets: bool | None = None  # every SLO held (None when invalid)
    phase: str = "ramp"  # ramp, descend or bisect
    overload: bool = False  # achieved < planned because the server fell behind (a valid, broken step)


def judge(step: Step, slos: list[Slo]) -> Step:
    """Decide whether ``step`` counts, and whether it met every SLO."""
    why = None
    if step.verdict and step.verdict.startswith("error: "):
        why = f"the run could not be made ({step.verdict[7:]})"
    elif not step.complete:
        why = "the run did not complete"
    elif step.failures:
        why = f"{step.failures} integrity failure(s) or error(s)"
    elif step.verdict in CLIENT_SATURATED:
        why = f"the load generator was the bottleneck ({step.verdict})"
    meets = all(s.holds(step.latency_us) for s in slos)
    if why is None and step.achieved < MIN_ACHIEVED * step.rate:
        if meets:  # fast enough, yet the planned messages did not all go out: the client fell short
            why = (f"client cannot offer this rate: achieved {step.achieved:,.0f} of {step.rate:,.0f} msgs/s "
                   f"(< {MIN_ACHIEVED:.0%})")
        else:  # the server could not keep up: messages waited behind full windows (timed from when they were
            step.overload = True  # due: the corrected latency broke the SLO). A valid step that breaks it.
    step.valid = why is None
    step.reason = why
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

    def as_dict(self) -> dict:
        d = asdict(self)
        d["msgs_per_s"] = self.capacity_msgs_per_s
        d["bracket"] = list(self.bracket)
        return d


def search(measure: Callable[[float], Step], slos: list[Slo], start_rate: float, precision: float = 0.05,
           growth: float = 2.0, max_steps: int = 20, max_rate: float | None = None, log=lambda msg: None) -> SearchResult:
    """Ramp geometrically from ``start_rate`` while every SLO holds (or come down while it breaks), then bisect
    to ``precision``.

    ``measure(rate)`` runs one open-loop step and returns its Step (unjudged); every step is judged here."""
    if not slos:
        raise ValueError("at least one SLO is needed")
    if start_rate < MIN_RATE or not 0 < precision < 1 or growth <= 1 or max_steps < 1:
        raise ValueError(f"start_rate >= {MIN_RATE:g}, 0 < precision < 1, growth > 1 and max_steps >= 1 are required")
    steps: list[Step] = []
    lo: float | None = None  # highest valid rate that met every SLO
    hi: float | None = None  # lowest valid rate that broke one
    stopped = None

    def run(rate: float, phase: str) -> Step:
        step = judge(measure(rate), slos)
        step.phase = phase
        steps.append(step)
        state = "invalid: " + step.reason if not step.valid else ("meets the SLO" if step.meets else "breaks the SLO")
        log(f"capacity: step {len(steps)} ({phase}) at {rate:,.0f} msgs/s: {state}")
        return step

    # ramp up while the SLO holds; if the start rate already breaks it, come down until it holds; once a rate
    # that held and one that broke are known, bisect between them (geometric mean) to the precision
    rate, phase = start_rate, "ramp"
    while not (phase == "bisect" and hi / lo - 1 <= precision):
        if len(steps) >= max_steps or rate < MIN_RATE:
            stopped = (f"no rate from {hi:,.1f} msgs/s up meets the SLO within {len(steps)} steps" if phase == "descend"
                       else f"max_steps ({max_steps}) reached while {'ramping' if phase == 'ramp' else 'bisecting'}")
            break
        step = run(rate, phase)
        if not step.valid:
            stopped = f"step at {rate:,.0f} msgs/s is invalid: {step.reason}"
            break
        if step.meets:
            lo = rate
        else:
            hi = rate
        if lo is not None and hi is not None:
            phase, rate = "bisect", math.sqrt(lo * hi)
        elif hi is None:  # still holding: up
            if max_rate is not None and rate >= max_rate:
                stopped = f"the SLO still holds at max_rate ({max_rate:,.0f} msgs/s)"
                break
            rate = rate * growth if max_rate is None else min(rate * growth, max_rate)
        else:  # broke with nothing held yet: down
            phase, rate = "descend", hi / growth
    complete = stopped is None or stopped.startswith("the SLO still holds")
    return SearchResult([s.text for s in slos], precision, lo, (lo, hi), complete, stopped, steps)


# -- the search on real runs (loadgen/run.py --find-capacity) ---------------------------------------------------

def step_of(rate: float, doc: dict) -> Step:
    """A Step from one load-generator result document."""
    r = doc["result"]
    return Step(rate=rate, achieved=r["msgs_per_s"], latency_us=r["latency_us"],
                latency_uncorrected_us=r["latency_uncorrected_us"], verdict=r["verdict"], complete=r["complete"],
                failures=r["integrity_failures"] + sum(r["errors"].values()), loadgen_pct=r["cpu"]["loadgen_pct"],
                server_pct=r["cpu"]["server_pct"])


def find(cfg, log) -> tuple[dict, int]:
    """Run the search with one open-loop run per step (a fresh managed server each, with --server).

    Returns the result document of the step at the capacity (or the last step when no rate met every SLO),
    with ``result.capacity`` holding the search, and the exit code: 0 for a finished search, 3 when it stopped
    early (an invalid step, max_steps, or no rate met the SLO). A step whose run could not be made at all (the
    server would not start, nothing listens) is an invalid step: the steps before it are kept."""
    from dataclasses import replace

    from .runner import EXIT_INCOMPLETE, EXIT_OK, Runner, RunError
    from .target import TargetError

    slos = [parse_slo(t) for t in cfg.slos]
    docs: list[dict] = []
    notes: set[str] = set()

    def once(msg: str) -> None:  # a step's one-line notes (e.g. which engine), said once for the whole search
        if msg not in notes:
            notes.add(msg)
            log(msg)

    def measure(rate: float) -> Step:
        step_cfg = replace(cfg, rate=rate, find_capacity=False, json_path=None, hdr_path=None)
        try:
            doc, _code = Runner(step_cfg, once).execute()
        except (RunError, TargetError) as exc:
            if not docs:
                raise  # not one step could run: a plain error, as for any run
            return Step(rate=rate, achieved=0.0, latency_us={}, complete=False, failures=0, verdict=f"error: {exc}")
        docs.append(doc)
        return step_of(rate, doc)

    res = search(measure, slos, cfg.start_rate, cfg.precision, max_steps=cfg.max_steps, max_rate=cfg.max_rate, log=log)
    at = next((i for i, s in enumerate(res.steps) if s.valid and s.meets and s.rate == res.capacity_msgs_per_s),
              len(docs) - 1)
    doc = docs[min(at, len(docs) - 1)]
    ran = doc["config"]
    # the search's configuration (its --slo, --precision ...), with what the steps really ran on
    doc["config"] = {**cfg.as_dict(), "engine": ran["engine"], "engine_note": ran["engine_note"]}
    cap = res.as_dict()
    cap["document_step"] = at + 1  # the step whose figures the rest of this document gives
    doc["result"]["capacity"] = cap
    return doc, EXIT_OK if res.complete else EXIT_INCOMPLETE
