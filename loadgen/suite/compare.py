"""Noise-aware comparison of two bench runs: did this commit make a model slower?

    python -m loadgen.suite.compare BASELINE CURRENT [--reference MODEL] [--min-effect 0.10] [--alpha 0.01]
                              [--md PATH] [--json PATH] [--raw]

BASELINE and CURRENT are run folders (or their ``suite.json``). For each
cell (model, connections, size) and each metric (throughput, p99 latency,
server CPU us/message) it compares the trials of the two runs:

- **normalised** (default): every trial's value is divided by the reference
  model's median in the same cell of the same run, which cancels the
  machine's speed (a slower CI runner slows every model alike); raw ratios are
  shown beside it. The reference model itself is judged against the median
  of the other models in the same run and cell, so no verdict rests on raw,
  machine-dependent values.
  (Dividing by the reference's value in the *same trial* was tried and
  measured worse here: run-to-run noise on this machine is mostly
  independent per run, so pairing adds the reference's noise instead of
  cancelling a shared drift.)
- **decision**: a change counts only if it is both statistically significant
  (two-sided Mann-Whitney U over the trials, ``p < alpha``) and at least
  ``min_effect`` (default 10%) in the bad or good direction, and, when
  normalised, the raw values agree. Measured here: the reference's own median
  moved 13% between two honest runs while every other model stayed within 2%
  raw; normalised-only verdicts called 9 regressions. Normalisation guards
  against a slower machine, raw values against a moving reference; a real
  regression survives both.
  ``regressed`` / ``improved``: both hold. ``unchanged``: the 95% bootstrap
  confidence interval of the change lies within +-min_effect, or the change is
  significant but smaller than min_effect. ``too noisy``: the data cannot tell
  (a large change that is not significant, or an interval wider than the
  threshold), with the reason.

Cost runs (``make bench-cost``: folders holding ``cost.json``) are judged by instruction counts per
message instead: they repeat (the spread of honest re-runs is measured and recorded), so no statistics
are needed. A change beyond ``--threshold`` (default 1%), after allowing for the larger of the two runs'
measured spreads, is ``regressed`` or ``improved``; within it, ``unchanged``; a spread too wide to tell,
``too noisy``.

Capacity at the SLO (a suite's ``capacity`` section: one search per model per run) is judged too. One search
has no trials to test, but it has a bracket: the capacity lies between the highest rate that held and the
lowest that broke. The change between runs therefore lies between lowest/highest and highest/lowest of the two
brackets; ``regressed`` or ``improved`` only when that whole interval is beyond ``min_effect`` (and, with a
reference model in both runs, the change relative to the reference agrees), ``unchanged`` when the whole
interval is within it, ``too noisy`` otherwise. A search says nothing about run-to-run noise: a small
difference in capacity is never a verdict.

Documents from different environments are refused (exit 2, one line naming what differs): for cost, a
different Python version, implementation or build, or different versions of a model's library (uvloop, gevent,
greenlet, trio); for wall clock, a different CPU model or kernel as well. Instruction counts move with the
interpreter build (3.12.1 counts 15-22% more per message than 3.11.7 for the same commit) and wall-clock ratios
with the host, so such a comparison judges the environment, not the change: measure both sides in one job
(``make bench-ab``). ``--allow-env-mismatch`` judges anyway, and the report's first line says so.

Exit status: 1 if anything regressed, 0 otherwise, 2 on bad input.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import OneLineParser
from ..result import SUITE, DocumentError, check

METRICS = {  # name -> (label, higher is better)
    "msgs_per_s": ("throughput (msgs/s)", True),
    "server_us_per_msg": ("server CPU us/msg", False),
    "p99_us": ("p99 latency (us)", False),
}
BOOTSTRAP = 2000


class CompareError(Exception):
    """Bad input: one line, exit 2."""


@dataclass
class Verdict:
    model: str
    conns: int
    size: int
    metric: str
    verdict: str
    reason: str
    change: float | None  # relative change of the median, oriented as measured (+0.25 = 25% higher)
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    raw_ratio: float | None
    normalised: bool
    n_base: int
    n_cur: int


BUILD_KEYS = ("implementation", "build", "compiler", "optimizations", "lto", "debug", "free_threading")


def env_mismatch(base_env: dict | None, cur_env: dict | None, wall_clock: bool) -> list[str]:
    """What differs between two documents' environments that makes their figures incomparable: [] when nothing
    does. A field one of the documents did not record (made by an older echobench) is not held against it."""
    b, c = base_env or {}, cur_env or {}
    out = []

    def differ(label: str, x, y) -> None:
        if x is not None and y is not None and x != y:
            out.append(f"{label} {x} vs {y}")

    differ("Python", b.get("python"), c.get("python"))
    differ("Python implementation", b.get("python_implementation"), c.get("python_implementation"))
    bb, cb = b.get("python_build") or {}, c.get("python_build") or {}
    for k in BUILD_KEYS:
        differ(f"Python build {k}", bb.get(k), cb.get(k))
    bl, cl = dict(b.get("libraries") or {}), dict(c.get("libraries") or {})
    bl.setdefault("uvloop", b.get("uvloop"))
    cl.setdefault("uvloop", c.get("uvloop"))
    for lib in sorted(set(bl) & set(cl)):
        differ(lib, bl[lib], cl[lib])
    if wall_clock:
        differ("CPU", b.get("cpu_model"), c.get("cpu_model"))
        differ("kernel", b.get("kernel"), c.get("kernel"))
    return out


def check_env(base: dict, cur: dict, wall_clock: bool, allow: bool) -> str | None:
    """CompareError (one line) when the two documents' environments differ, unless ``allow``: then the sentence
    the report opens with. None when they agree."""
    diff = env_mismatch(base.get("env"), cur.get("env"), wall_clock)
    if not diff:
        return None
    what = "; ".join(diff)
    if not allow:
        raise CompareError(f"the runs come from different environments ({what}): their difference would judge the "
                           "environment, not the change; measure both in one job (make bench-ab BASE=REF), or "
                           "--allow-env-mismatch to judge anyway")
    return f"**Judged despite different environments** ({what}): a difference below may be the environment's."


def load_suite(path: str) -> dict:
    from ..output import read_json

    try:
        suite, p = read_json(path, "suite.json")
    except ValueError as exc:
        raise CompareError(str(exc)) from None
    try:
        check(suite, SUITE, p)
    except DocumentError as exc:
        raise CompareError(str(exc)) from None
    if suite.get("mode") == "paired":
        raise CompareError(f"{p}: a paired-rounds run (make bench): its ratios are within its own rounds; compare "
                           "judges fresh-trial runs (make bench-ci, or --mode trials), and make bench-ab compares "
                           "two commits in one job")
    for c in suite["cells"]:
        if "per_trial" not in c:
            raise CompareError(f"{p}: cells carry no per-trial values (made by an older echobench); re-run the suite")
    return suite


def _index(suite) -> dict[tuple, dict]:
    # the gate judges the TCP matrix; transport-comparison cells (UDP, Unix) are reported, not gated
    return {(c["model"], c["conns"], c["size"]): c for c in suite["cells"] if c.get("transport", "tcp") == "tcp"}


def _trial_values(cell: dict, metric: str) -> dict[int, float]:
    return {t["trial"]: t[metric] for t in cell["per_trial"] if t.get(metric) is not None}


def _median_of(idx: dict, key: tuple, metric: str) -> float | None:
    vals = list(_trial_values(idx[key], metric).values())
    return float(np.median(vals)) if vals else None


def _scale(idx: dict, key: tuple, metric: str, reference: str) -> float | None:
    """The run's speed for this cell: the reference's median; for the reference itself, the
    median of the other models' medians (so no verdict rests on raw, machine-dependent values)."""
    model, conns, size = key
    if model != reference:
        return _median_of(idx, (reference, conns, size), metric)
    others = [m for k in idx if k[1:] == (conns, size) and k[0] != reference
              and (m := _median_of(idx, k, metric)) is not None]
    return float(np.median(others)) if others else None


def _samples(idx: dict, key: tuple, metric: str, reference: str, normalise: bool) -> list[float]:
    own = list(_trial_values(idx[key], metric).values())
    if not normalise:
        return own
    scale = _scale(idx, key, metric, reference)
    return [v / scale for v in own] if scale else own


def _bootstrap_ci(base: np.ndarray, cur: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    b = rng.choice(base, size=(BOOTSTRAP, base.size), replace=True)
    c = rng.choice(cur, size=(BOOTSTRAP, cur.size), replace=True)
    ratios = np.median(c, axis=1) / np.median(b, axis=1) - 1
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def decide(base: list[float], cur: list[float], higher_is_better: bool, min_effect: float, alpha: float,
           rng: np.random.Generator) -> tuple[str, str, float | None, float | None, float | None, float | None]:
    """(verdict, reason, change, ci_low, ci_high, p) for one metric of one cell."""
    from scipy.stats import mannwhitneyu

    if len(base) < 3 or len(cur) < 3:
        return "too noisy", f"too few trials to judge ({len(base)} vs {len(cur)}; need 3 each)", None, None, None, None
    b, c = np.asarray(base, float), np.asarray(cur, float)
    change = float(np.median(c) / np.median(b) - 1)
    lo, hi = _bootstrap_ci(b, c, rng)
    p = float(mannwhitneyu(b, c, alternative="two-sided").pvalue)
    worse = (change < 0) if higher_is_better else (change > 0)
    big = abs(change) >= min_effect
    if p < alpha and big:
        return ("regressed" if worse else "improved"), f"{change:+.1%} (p={p:.3g})", change, lo, hi, p
    if p < alpha:
        return "unchanged", f"significant but small: {change:+.1%} is within +-{min_effect:.0%}", change, lo, hi, p
    if big:
        return "too noisy", (f"{change:+.1%} but not significant (p={p:.2g} >= {alpha:g}, "
                             f"{len(b)} vs {len(c)} trials)"), change, lo, hi, p
    if -min_effect < lo and hi < min_effect:
        return "unchanged", f"{change:+.1%}, 95% CI [{lo:+.1%}, {hi:+.1%}] within +-{min_effect:.0%}", change, lo, hi, p
    return "too noisy", (f"{change:+.1%}, but the 95% CI [{lo:+.1%}, {hi:+.1%}] is wider than +-{min_effect:.0%}: "
                         "more trials or a quieter machine needed"), change, lo, hi, p


def compare(base: dict, cur: dict, reference: str, min_effect: float, alpha: float, normalise: bool,
            seed: int = 0) -> list[Verdict]:
    bi, ci = _index(base), _index(cur)
    only_b = sorted(set(bi) - set(ci))
    if only_b:  # a cell that vanished (a model that no longer runs) is not a pass: refuse
        raise CompareError(f"the two runs' cells do not match: only in baseline {_fmt_keys(only_b)}")
    ci = {k: v for k, v in ci.items() if k in bi}  # cells new since the baseline (new models): listed, not judged
    if normalise and not any(k[0] == reference for k in bi):
        raise CompareError(f"reference model {reference!r} is not in the runs (choose --reference, or --raw)")
    rng = np.random.default_rng(seed)
    out = []
    for key in sorted(bi):
        model, conns, size = key
        norm = normalise and _scale(bi, key, "msgs_per_s", reference) is not None
        for metric, (_label, higher) in METRICS.items():
            bs = _samples(bi, key, metric, reference, norm)
            cs = _samples(ci, key, metric, reference, norm)
            v, reason, change, lo, hi, p = decide(bs, cs, higher, min_effect, alpha, rng)
            rb, rc = _trial_values(bi[key], metric), _trial_values(ci[key], metric)
            if norm and v in ("regressed", "improved"):
                # A change must hold both ways: normalised (guards against a slower or faster
                # machine) and raw (guards against the reference itself moving between runs).
                rv, rreason, *_ = decide(list(rb.values()), list(rc.values()), higher, min_effect, alpha, rng)
                if rv != v:
                    v, reason = "too noisy", (f"{reason} against the reference, but raw values say {rv} ({rreason}): "
                                              "the reference or the machine moved between runs")
            raw = (float(np.median(list(rc.values())) / np.median(list(rb.values())))
                   if rb and rc and np.median(list(rb.values())) else None)
            out.append(Verdict(model, conns, size, metric, v, reason, change, lo, hi, p, raw, norm, len(bs), len(cs)))
    return out


@dataclass
class CapacityVerdict:
    model: str
    verdict: str
    reason: str
    base: float | None  # capacity msgs/s
    current: float | None
    change_low: float | None  # the change lies in [change_low, change_high] (relative, from the two brackets)
    change_high: float | None  # None: no upper bound (the search stopped with the SLO still holding)
    base_text: str = "-"  # as the report shows it: 123,456, >= 123,456 (a lower bound), < 1,000 (no rate met the SLO)
    current_text: str = "-"


INF = float("inf")


def _cap_bounds(c: dict) -> tuple[float, float] | None:
    """(lowest, highest) the true capacity can be, from a model's search bracket (held, broke): a search that
    stopped with the SLO still holding (or the client at its limit) is bounded below only; one where no rate met
    the SLO, above only (below its lowest valid break). None when the search has no valid step at all."""
    lo, hi = (c.get("bracket") or [None, None])
    if lo is None and hi is None:
        return None
    return (float(lo) if lo is not None else 0.0), (float(hi) if hi is not None else INF)


def _div(a: float, b: float) -> float:
    """a / b for non-negative bounds, with x / 0 and inf / x as inf (never a ZeroDivisionError or NaN)."""
    if a == INF or b == 0:
        return INF if a > 0 else 0.0
    return a / b


def _cap_interval(b: dict, c: dict) -> tuple[float, float] | None:
    """The relative change from baseline to current, as an interval: [cur low / base high, cur high / base low] - 1."""
    bb, cb = _cap_bounds(b), _cap_bounds(c)
    if bb is None or cb is None:
        return None
    return _div(cb[0], bb[1]) - 1, _div(cb[1], bb[0]) - 1


def _cap_text(c: dict) -> str:
    lo, hi = (c.get("bracket") or [None, None])
    if lo is None:
        return "not measured" if hi is None else f"< {hi:,.0f}"
    return f"{lo:,.0f}" if hi is not None else f">= {lo:,.0f}"


def _pct(x: float) -> str:
    return "unbounded" if x == INF else f"{x:+.0%}"


def compare_capacity(base: dict, cur: dict, reference: str, min_effect: float) -> tuple[list[CapacityVerdict], str | None]:
    """Per model in both runs' capacity sections: did the capacity at the SLO change beyond min_effect? Returns the
    verdicts and, when the two sections cannot be compared (different SLO or load), why (no verdicts then)."""
    bc, cc = base.get("capacity"), cur.get("capacity")
    if not bc or not cc:
        return [], None
    if (bc.get("slos"), bc.get("conns"), bc.get("size")) != (cc.get("slos"), cc.get("conns"), cc.get("size")):
        return [], (f"capacity not compared: the runs searched under different conditions (SLO {bc.get('slos')} at "
                    f"{bc.get('conns')} x {bc.get('size')} B vs {cc.get('slos')} at {cc.get('conns')} x {cc.get('size')} B)")
    bm, cm = bc.get("models") or {}, cc.get("models") or {}
    ref = reference if reference in bm and reference in cm else None
    out = []
    for m in sorted(set(bm) & set(cm)):
        b, c = bm[m], cm[m]
        bv, cv = b.get("msgs_per_s"), c.get("msgs_per_s")
        iv = _cap_interval(b, c)
        if iv is None:
            which = ("either run" if _cap_bounds(b) is None and _cap_bounds(c) is None
                     else "the baseline" if _cap_bounds(b) is None else "the current run")
            out.append(CapacityVerdict(m, "too noisy", f"not measured in {which} (no valid step)", bv, cv, None, None))
            continue
        lo, hi = iv
        span = f"between {_pct(lo)} and {_pct(hi)}"
        if hi < -min_effect or lo > min_effect:
            verdict = "regressed" if hi < -min_effect else "improved"
            reason = f"{span} (the two searches' brackets), beyond {min_effect:.0%}"
            if ref and m != ref:  # it must hold against the reference too: a slower machine moves every model
                nb = _cap_interval(bm[ref], cm[ref])
                if nb is None:
                    verdict, reason = "too noisy", f"{span}, but the reference {ref} has no capacity to check against"
                else:  # the model's change relative to the reference's, widest interval
                    rl = _div(1 + lo, 1 + nb[1]) - 1
                    rh = _div(1 + hi, 1 + nb[0]) - 1
                    if not ((verdict == "regressed" and rh < -min_effect) or (verdict == "improved" and rl > min_effect)):
                        verdict, reason = "too noisy", (f"{span}, but relative to {ref} (which moved "
                                                        f"{_pct(nb[0])}..{_pct(nb[1])}) it could be within "
                                                        f"{min_effect:.0%}: the machine or the reference moved")
        elif -min_effect <= lo and hi <= min_effect:
            verdict, reason = "unchanged", f"{span}, within +-{min_effect:.0%}"
        else:
            verdict, reason = "too noisy", (f"{span}: the searches cannot tell a {min_effect:.0%} change (one search "
                                            "per run, its bracket; run bench-full or a finer precision)")
        out.append(CapacityVerdict(m, verdict, reason, bv, cv, lo, None if hi == INF else hi,
                                   _cap_text(b), _cap_text(c)))
    return out, None


def capacity_markdown(verdicts: list[CapacityVerdict], cur: dict, skipped: str | None = None) -> str:
    if skipped:
        return f"\n{skipped}\n"
    if not verdicts:
        return ""
    c = cur["capacity"]
    lines = ["", f"### Capacity at {' and '.join(c['slos'])} ({c['conns']} connections x {c['size']} B, open loop)", "",
             "| model | baseline msgs/s | current msgs/s | change lies in | verdict | why |", "|---|---|---|---|---|---|"]
    order = {"regressed": 0, "too noisy": 1, "improved": 2, "unchanged": 3}
    for v in sorted(verdicts, key=lambda v: (order[v.verdict], v.model)):
        rng = "-" if v.change_low is None else (f"[{v.change_low:+.0%}, {v.change_high:+.0%}]"
                                                if v.change_high is not None else f"[{v.change_low:+.0%}, ...)")
        lines.append(f"| {v.model} | {v.base_text} | {v.current_text} | {rng} | "
                     f"{'**REGRESSED**' if v.verdict == 'regressed' else v.verdict} | {v.reason} |")
    return "\n".join(lines) + "\n"


def _fmt_keys(keys) -> str:
    return ", ".join(f"{m}@{c}x{s}" for m, c, s in keys[:6]) + (" ..." if len(keys) > 6 else "")


ICON = {"regressed": "REGRESSED", "improved": "improved", "unchanged": "unchanged", "too noisy": "too noisy"}


def markdown(verdicts: list[Verdict], base: dict, cur: dict, args) -> str:
    counts = {k: sum(v.verdict == k for v in verdicts) for k in ICON}
    lines = [
        "## echobench regression check",
        "",
        f"Baseline `{base['env'].get('git_commit', '?')}` ({base['timestamp']}) vs current "
        f"`{cur['env'].get('git_commit', '?')}` ({cur['timestamp']}).",
        f"Normalised to `{args.reference}`'s median in the same run and cell" if not args.raw else "Raw values (not normalised)",
        f"; a change must be significant (Mann-Whitney U, p < {args.alpha:g}) and at least {args.min_effect:.0%}.",
        "",
        "**" + ", ".join(f"{n} {k}" for k, n in counts.items()) + "**",
        "",
        "| model | conns | size | metric | verdict | change (normalised) | 95% CI | p | raw ratio | why |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    new = sorted(set(_index(cur)) - set(_index(base)))
    if new:
        lines[-3:-3] = [f"Not judged (no baseline yet; refresh the baseline to gate them): {_fmt_keys(new)}", ""]
    order = {"regressed": 0, "too noisy": 1, "improved": 2, "unchanged": 3}
    for v in sorted(verdicts, key=lambda v: (order[v.verdict], v.model, v.conns, v.size, v.metric)):
        lines.append(
            f"| {v.model} | {v.conns} | {v.size} | {METRICS[v.metric][0]} | {'**REGRESSED**' if v.verdict == 'regressed' else v.verdict} | "
            f"{'-' if v.change is None else f'{v.change:+.1%}'}{'' if v.normalised else ' (raw)'} | "
            f"{'-' if v.ci_low is None else f'[{v.ci_low:+.1%}, {v.ci_high:+.1%}]'} | "
            f"{'-' if v.p_value is None else f'{v.p_value:.3g}'} | {'-' if v.raw_ratio is None else f'{v.raw_ratio:.3f}'} | {v.reason} |")
    return "\n".join(lines) + "\n"


@dataclass
class CostVerdict:
    model: str
    verdict: str
    reason: str
    base: float
    current: float
    change: float
    noise: float  # the larger measured spread of the two runs (relative)


def _is_cost(path: str) -> bool:
    """A cost document: a file named cost.json, or a run folder of ``make bench-cost`` (cost.json, no suite.json)."""
    p = Path(path)
    return p.name == "cost.json" or (p.is_dir() and (p / "cost.json").exists() and not (p / "suite.json").exists())


def compare_cost(base: dict, cur: dict, threshold: float) -> list[CostVerdict]:
    """Per model: instructions per message, current vs baseline."""
    for key in ("transport", "conns", "size"):
        if base["config"].get(key) != cur["config"].get(key):
            raise CompareError(f"the runs measured different workloads ({key}: {base['config'].get(key)!r} vs "
                               f"{cur['config'].get(key)!r})")
    bm, cm = set(base["models"]), set(cur["models"])
    if bm - cm:  # a model that vanished is not a pass; one new since the baseline is listed, not judged
        raise CompareError(f"the runs measured different models (only in baseline: {sorted(bm - cm)})")
    out = []
    for m in sorted(bm):
        b, c = base["models"][m], cur["models"][m]
        bv, cv = float(b["instructions_per_msg"]), float(c["instructions_per_msg"])
        if bv <= 0 or cv <= 0:
            raise CompareError(f"{m}: instructions per message must be positive")
        change = cv / bv - 1
        noise = max(b.get("spread") or 0.0, c.get("spread") or 0.0)
        if abs(change) - noise > threshold:
            verdict = "regressed" if change > 0 else "improved"
            reason = f"{change:+.2%} beyond the {threshold:.1%} threshold (spread of repeats {noise:.3%})"
        elif abs(change) + noise <= threshold:
            verdict, reason = "unchanged", f"{change:+.3%}, within {threshold:.1%} (spread of repeats {noise:.3%})"
        else:
            verdict, reason = "too noisy", (f"{change:+.2%} with a spread of {noise:.3%} between repeats: cannot tell "
                                            f"against {threshold:.1%}")
        out.append(CostVerdict(m, verdict, reason, bv, cv, change, noise))
    return out


def cost_markdown(verdicts: list[CostVerdict], base: dict, cur: dict, threshold: float) -> str:
    counts = {k: sum(v.verdict == k for v in verdicts) for k in ICON}
    cfg = cur["config"]
    lines = ["## echobench cost check: user-space instructions per message", "",
             f"Baseline `{((base.get('env') or {}).get('git_commit') or '?')[:12]}` ({base.get('timestamp', '?')}) vs "
             f"current `{((cur.get('env') or {}).get('git_commit') or '?')[:12]}` ({cur.get('timestamp', '?')}); "
             f"{cfg.get('conns')} connections, "
             f"{cfg.get('size')} B over {cfg.get('transport')}; a change counts beyond {threshold:.1%} (after the measured "
             "spread of repeats). Kernel work, cache misses and waiting are not counted: see the wall-clock gate.", "",
             "**" + ", ".join(f"{n} {k}" for k, n in counts.items()) + "**", "",
             "| model | baseline | current | change | verdict | why |", "|---|---|---|---|---|---|"]
    new = sorted(set(cur["models"]) - set(base["models"]))
    if new:
        lines[-2:-2] = [f"Not judged (no baseline yet; refresh the baseline to gate them): {', '.join(new)}", ""]
    order = {"regressed": 0, "too noisy": 1, "improved": 2, "unchanged": 3}
    for v in sorted(verdicts, key=lambda v: (order[v.verdict], v.model)):
        lines.append(f"| {v.model} | {v.base:,.1f} | {v.current:,.1f} | {v.change:+.2%} | "
                     f"{'**REGRESSED**' if v.verdict == 'regressed' else v.verdict} | {v.reason} |")
    return "\n".join(lines) + "\n"


def main_cost(a) -> int:
    from .cost import load_cost

    try:
        if not 0 < a.threshold < 1:
            raise CompareError("--threshold must be between 0 and 1")
        try:
            base, cur = load_cost(a.baseline), load_cost(a.current)
        except ValueError as exc:
            raise CompareError(str(exc)) from None
        warning = check_env(base, cur, False, a.allow_env_mismatch)
        try:
            verdicts = compare_cost(base, cur, a.threshold)
        except (KeyError, TypeError, ValueError) as exc:  # a hand-edited or truncated document
            raise CompareError(f"malformed cost document ({type(exc).__name__}: {exc})") from None
    except CompareError as exc:
        print(f"python -m loadgen.suite.compare: error: {exc}", file=sys.stderr)
        return 2
    md = cost_markdown(verdicts, base, cur, a.threshold)
    if warning:
        md = warning + "\n\n" + md
    if a.md:
        Path(a.md).write_text(md)
    else:
        sys.stdout.write(md)
    if a.json_path:
        Path(a.json_path).write_text(json.dumps({"schema_version": 1, "kind": "cost", "baseline": a.baseline,
                                                 "current": a.current, "threshold": a.threshold,
                                                 "verdicts": [asdict(v) for v in verdicts]}, indent=2))
    regressed = [v for v in verdicts if v.verdict == "regressed"]
    for v in regressed:
        print(f"regressed: {v.model} instructions/msg: {v.reason}", file=sys.stderr)
    return 1 if regressed else 0


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m loadgen.suite.compare", description="Compare two bench runs; exit 1 on a regression.")
    p.add_argument("baseline", help="baseline run folder or suite.json")
    p.add_argument("current", help="current run folder or suite.json")
    p.add_argument("--reference", default="asyncio-protocol", help="model to normalise by (default asyncio-protocol)")
    p.add_argument("--min-effect", type=float, default=0.10, help="smallest change that counts (default 0.10 = 10%%)")
    p.add_argument("--alpha", type=float, default=0.01, help="significance level of the Mann-Whitney U test (default 0.01)")
    p.add_argument("--raw", action="store_true", help="compare raw values, without normalising to the reference")
    p.add_argument("--md", help="write the Markdown report here (default: stdout)")
    p.add_argument("--json", dest="json_path", help="write the verdicts as JSON here")
    p.add_argument("--threshold", type=float, default=0.01,
                   help="cost runs: smallest change in instructions per message that counts (default 0.01 = 1%%)")
    p.add_argument("--allow-env-mismatch", action="store_true",
                   help="judge documents from different environments (Python build, model libraries; for wall clock "
                        "also CPU and kernel) anyway; the report's first line says so")
    p.error = lambda msg: (sys.stderr.write(f"python -m loadgen.suite.compare: error: {msg}\n"), sys.exit(2))  # one line
    a = p.parse_args(argv)
    if _is_cost(a.current) or Path(a.baseline).name == "cost.json":  # the baseline folder may hold both kinds
        return main_cost(a)
    try:
        if not 0 < a.min_effect < 1 or not 0 < a.alpha < 1:
            raise CompareError("--min-effect and --alpha must be between 0 and 1")
        base, cur = load_suite(a.baseline), load_suite(a.current)
        warning = check_env(base, cur, True, a.allow_env_mismatch)
        verdicts = compare(base, cur, a.reference, a.min_effect, a.alpha, not a.raw)
        try:
            cap_verdicts, cap_skipped = compare_capacity(base, cur, a.reference, a.min_effect)
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:  # a hand-edited or truncated document
            raise CompareError(f"malformed capacity section ({type(exc).__name__}: {exc})") from None
    except CompareError as exc:
        print(f"python -m loadgen.suite.compare: error: {exc}", file=sys.stderr)
        return 2
    md = markdown(verdicts, base, cur, a) + capacity_markdown(cap_verdicts, cur, cap_skipped)
    if warning:
        md = warning + "\n\n" + md
    if cap_skipped:
        print(f"python -m loadgen.suite.compare: note: {cap_skipped}", file=sys.stderr)
    if a.md:
        Path(a.md).write_text(md)
    else:
        sys.stdout.write(md)
    if a.json_path:
        Path(a.json_path).write_text(json.dumps({"schema_version": 1, "baseline": a.baseline, "current": a.current,
                                                 "reference": a.reference, "min_effect": a.min_effect, "alpha": a.alpha,
                                                 "normalised": not a.raw, "verdicts": [asdict(v) for v in verdicts],
                                                 "capacity": [asdict(v) for v in cap_verdicts]}, indent=2))
    regressed = [v for v in verdicts if v.verdict == "regressed"]
    for v in regressed:
        print(f"regressed: {v.model} {v.conns} conns {v.size} B {METRICS[v.metric][0]}: {v.reason}", file=sys.stderr)
    cap_regressed = [v for v in cap_verdicts if v.verdict == "regressed"]
    for v in cap_regressed:
        print(f"regressed: {v.model} capacity at the SLO: {v.reason}", file=sys.stderr)
    return 1 if regressed or cap_regressed else 0


if __name__ == "__main__":
    sys.exit(main())
