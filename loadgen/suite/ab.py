"""``make bench-ab BASE=<ref>`` / ``python -m loadgen ab --base REF``: a change measured beside its base, in one job.

A regression gate that compares a pull request with a baseline measured on another day judges the day, the
machine and the interpreter build as much as the change. This one measures both sides in the same job:

- The base's servers run from a temporary git worktree of BASE, the head's from a snapshot of the working tree
  (or a worktree of ``--head REF``), both on this interpreter and its installed libraries, both from paths of
  the same length (the path's length moves instruction counts). One load generator, this checkout's, drives
  both. The worktrees are removed afterwards, on errors and Ctrl-C too.
- **Cost**: user-space instructions per message for every Python model, base and head, under callgrind (the
  method of ``make bench-cost``). The counts repeat, so a delta is exact; a model whose own repeats differ by
  more than the threshold is reported as not gateable, never judged on noise.
- **Wall clock**: per model, the base's and the head's servers run at once, pinned to the same server CPUs,
  and the load generator alternates short slices between them (A B, B A, ...). Per round: the ratio head/base
  of server CPU per message (the process's CPU clock, in nanoseconds), of msgs/s and of p99; over rounds, the
  median with its distribution-free 95% interval. ``slower``/``faster`` when the whole interval lies beyond the
  threshold, ``no change`` when within it, ``not told apart`` otherwise.

Output: ``results/<stamp>-ab/ab.json`` (versioned) and ``ab.md`` (posted as it is on a pull request).
Exit status: 0 no regression; 1 a model's cost rose beyond the threshold, or its wall clock is clearly
``slower``; 2 bad usage (no such ref, a base that needs other dependencies); 3 could not measure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from servers import registry

from .. import hostload, output, result
from ..config import LoadConfig, OneLineParser, parse_size
from ..envinfo import ROOT, environment
from ..procs import interrupt
from . import sides, worktree
from .cost import CostError
from .cost import positive_count as _count
from .paired import Change, ab_verdict, summary

AB_SCHEMA_VERSION = result.version(result.AB)
KIND = result.AB
EXIT_OK, EXIT_REGRESSED, EXIT_USAGE, EXIT_MEASURE = 0, 1, 2, 3
NOT_GATEABLE = "not gateable"  # a cost verdict: the model's own repeats differ by more than the threshold
TOP_FUNCTIONS = 5
PROBE_TIMEOUT_S = 60.0
# wall-clock metrics: key in a slice, label, higher is worse
WALL_METRICS = {"server_ns_per_msg": ("server CPU per message", True), "msgs_per_s": ("msgs/s", False),
                "p99_us": ("p99 latency", True)}


class UsageError(Exception):
    """A request that cannot be measured as asked: one line, exit 2."""


class MeasureError(Exception):
    """A measurement that failed (a server that did not start, a slice that did not run clean): one line, exit 3."""


@dataclass(frozen=True)
class AbConfig:
    base: str
    head: str | None = None  # None: the working tree as it is
    models: tuple[str, ...] = ()  # (): every model both sides can run
    cost: bool = True
    wall: bool = True
    threshold: float = 0.01  # cost: a relative change in instructions per message
    wall_threshold: float = 0.03  # wall clock: server CPU per message and msgs/s
    p99_threshold: float = 0.10  # wall clock: p99 (a tail moves more between honest slices)
    rounds: int = 20
    slice_s: float = 0.5
    warmup_s: float = 0.2
    conns: int = 10
    size: int = 1024
    n1: int = 500  # fewer than make bench-cost's 1,000/3,000: both sides run the same N, and the counts are exact
    n2: int = 1500
    repeats: int = 2
    jobs: int = 1  # cost: callgrind runs at once (instruction counts do not depend on the other core's load)
    base_args: tuple[str, ...] = ()
    head_args: tuple[str, ...] = ()
    results: str = str(ROOT / "results")
    repo: str = str(ROOT)  # the git repository whose BASE and working tree are compared
    quiet: bool = False
    quiet_host: bool = False  # refuse to start while other processes use the run's CPUs


# -- the two sides --------------------------------------------------------------------------------------------

def probe(tree: Path) -> dict:
    """What the ``servers`` package of ``tree`` offers on this interpreter: {model: reason it cannot run or None}
    and where it was imported from (which must be ``tree`` itself, not this checkout): :func:`sides.probe`."""
    try:
        return sides.probe(sides.Side(tree.name, root=tree))
    except sides.SideError as exc:
        raise MeasureError(str(exc)) from None


def build_go(tree: Path, log) -> None:
    """Build the tree's Go reference server (``build/echo-go``) before it is timed: its first start would."""
    code = "from servers.gomodel import build; build()"
    env = {**os.environ, "PYTHONPATH": str(tree), "GOCACHE": str(ROOT / "build" / "go-cache"), **sides.NO_BYTECODE}
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise MeasureError(f"{tree.name}: building the Go server failed: "
                           f"{(out.stderr.strip().splitlines() or ['?'])[-1]}")
    log(f"bench-ab: built {tree.name}'s Go server")


def plan_models(cfg: AbConfig, base: dict, head: dict) -> tuple[list[str], dict[str, str]]:
    """(models both sides run, {model: why it is left out}). An explicit --models list must be runnable on
    both sides (UsageError otherwise); by default every model that both can run, the others listed."""
    left_out = {}
    names = list(cfg.models) or list(head["models"])
    for m in names:
        if m not in head["models"]:
            raise UsageError(f"{m!r} is not a server model (choose from {', '.join(head['models'])})")
    run = []
    for m in names:
        if m not in base["models"]:
            why = "new in head: no base to compare with"
        else:
            why = head["models"][m] or base["models"][m]
        if why is None:
            run.append(m)
        elif cfg.models:
            raise UsageError(f"{m}: {why}")
        else:
            left_out[m] = why
    return run, left_out


# -- cost ----------------------------------------------------------------------------------------------------

def cost_verdict(base: dict, head: dict, threshold: float) -> dict:
    """Head vs base instructions per message for one model: exact where the repeats agree."""
    bv, hv = base["instructions_per_msg"], head["instructions_per_msg"]
    change = hv / bv - 1
    noise = max(base["spread"] or 0.0, head["spread"] or 0.0)
    if noise > threshold:
        verdict, why = NOT_GATEABLE, f"not gateable at {threshold:.1%} (repeats {noise:.1%} apart)"
    elif abs(change) - noise > threshold:
        verdict = Change.SLOWER.value if change > 0 else Change.FASTER.value
        why = f"{change:+.2%} is beyond {threshold:.1%}" + (f" (repeats {noise:.2%} apart)" if noise else "")
    elif abs(change) + noise <= threshold:
        verdict, why = Change.NO_CHANGE.value, f"within {threshold:.1%}" + (f" (repeats {noise:.2%} apart)" if noise else "")
    else:
        verdict, why = Change.NOT_TOLD_APART.value, f"{change:+.2%} with repeats {noise:.2%} apart"
    return {"base": bv, "head": hv, "change": change, "interval": [change - noise, change + noise], "noise": noise,
            "verdict": verdict, "why": why, "functions": moved_functions(base, head)}


def moved_functions(base: dict, head: dict, top: int = TOP_FUNCTIONS) -> list[dict]:
    """The functions whose own (self) instructions per message changed most, head vs base."""
    fb = {f["function"]: f["self_per_msg"] for f in base.get("functions", [])}
    fh = {f["function"]: f["self_per_msg"] for f in head.get("functions", [])}
    diff = sorted(((k, fh.get(k, 0.0) - fb.get(k, 0.0)) for k in set(fb) | set(fh)), key=lambda kv: -abs(kv[1]))
    return [{"function": k, "base": fb.get(k, 0.0), "head": fh.get(k, 0.0), "delta": round(d, 1)}
            for k, d in diff[:top] if abs(d) >= 0.5]


def measure_cost(cfg: AbConfig, models: list[str], trees: dict[str, Path], log) -> dict:
    """Both sides' instructions per message for each Python model (:func:`sides.measure_cost`); with ``jobs`` > 1,
    runs at once, each server on its own CPU (the counts do not depend on the other CPU's load: an A/A run gives
    exact zeros)."""
    from . import cost

    if (why := cost.tools_missing()) is not None:
        raise UsageError(why)
    both = [_side(cfg, name, trees) for name in ("base", "head")]
    args = sides.cost_args(cfg.repeats, cfg.n1, cfg.n2, cfg.conns, cfg.size)
    got = sides.measure_cost([(m, side) for m in models for side in both], args, cfg.jobs, log)
    out = {}
    for m in models:
        b, h = got[(m, "base")], got[(m, "head")]
        out[m] = {**cost_verdict(b, h, cfg.threshold), "runs": {"base": b["runs"], "head": h["runs"]}}
    return out


def _side(cfg: AbConfig, name: str, trees: dict[str, Path]) -> "sides.Side":
    return sides.Side(name, root=trees[name], server_args=tuple(cfg.base_args if name == "base" else cfg.head_args))


# -- wall clock ----------------------------------------------------------------------------------------------

def measure_wall(cfg: AbConfig, models: list[str], trees: dict[str, Path], log) -> dict:
    """Per model: both sides' servers running, paired rounds A B, B A, ... (:func:`sides.measure_rounds`), ratios
    head/base per round. A side whose server does not start or dies is a MeasureError."""
    from ..runner import RunError, plan_cpus
    from .bench import cell_workers

    client_cpus, server_cpus = plan_cpus(LoadConfig(server="placeholder"))
    load = LoadConfig(conns=cfg.conns, size=cfg.size, duration=cfg.slice_s, warmup=cfg.warmup_s,
                      workers=cell_workers(client_cpus, cfg.conns), cpus=client_cpus, server_cpus=server_cpus)
    both = [_side(cfg, name, trees) for name in ("base", "head")]
    out = {}
    for i, m in enumerate(models):
        try:
            runs, idle, _wall = sides.measure_rounds(m, both, load, cfg.rounds, 1, server_cpus, log)
        except RunError as exc:
            raise MeasureError(f"{m}: {exc}") from None
        for name in ("base", "head"):
            if runs[name].stopped is not None:
                raise MeasureError(f"{name}'s {m} server: {runs[name].stopped}")
        out[m] = wall_verdicts(runs["base"].slices, runs["head"].slices, cfg)
        # other processes on the run's CPUs (loadgen/hostload.py): disturbed rounds rerun, or kept and said so
        out[m]["host"] = idle.host_dict()
        r = out[m]["server_ns_per_msg"]
        log(f"bench-ab: [{i + 1}/{len(models)}] {m}: server CPU/msg head/base {r['median']:.3f} "
            f"[{r['ci'][0]:.3f}-{r['ci'][1]:.3f}] {r['verdict']}")
    return {"client_cpus": list(client_cpus), "server_cpus": list(server_cpus), "models": out}


def wall_verdicts(base: list, head: list, cfg: AbConfig) -> dict:
    """Per metric: the per-round ratios head/base, their median with its 95% interval, and the verdict."""
    out = {}
    for key, (_label, worse_up) in WALL_METRICS.items():
        pairs = [(getattr(b, key), getattr(h, key)) for b, h in zip(base, head)]
        ratios = [h / b for b, h in pairs if b and h is not None]
        if not ratios:
            out[key] = {"verdict": Change.TOO_FEW.value, "median": None, "ci": [None, None], "rounds": 0}
            continue
        thr = cfg.p99_threshold if key == "p99_us" else cfg.wall_threshold
        out[key] = {**summary(ratios), "verdict": ab_verdict(ratios, thr, worse_up).value, "threshold": thr,
                    "ratios": [round(x, 5) for x in ratios],
                    "base_median": statistics.median(b for b, _ in pairs if b is not None),
                    "head_median": statistics.median(h for _, h in pairs if h is not None)}
    out["client_pct"] = {side: statistics.median(s.client_pct for s in xs if s.client_pct is not None)
                         for side, xs in (("base", base), ("head", head)) if any(s.client_pct is not None for s in xs)}
    # where each side's server CPU went, summed over its slices (tick-sampled: a split, not a paired ratio)
    out["split_us_per_msg"] = {side: {"user": sum(s.server_user_s for s in xs) / n * 1e6,
                                      "kernel": sum(s.server_kernel_s for s in xs) / n * 1e6}
                               for side, xs in (("base", base), ("head", head)) if (n := sum(s.messages for s in xs))}
    return out


# -- the document and its report -------------------------------------------------------------------------------

def regressions(doc: dict) -> list[str]:
    """One line per model and measure that fails the gate."""
    out = []
    for m, c in (doc.get("cost") or {}).items():
        if c["verdict"] == Change.SLOWER.value:
            out.append(f"{m}: cost {c['change']:+.2%} instructions per message ({c['why']})")
    for m, w in ((doc.get("wall") or {}).get("models") or {}).items():
        for key, (label, _) in WALL_METRICS.items():
            if w[key]["verdict"] == Change.SLOWER.value:
                lo, hi = w[key]["ci"]
                out.append(f"{m}: wall clock {label} x{w[key]['median']:.3f} [95% CI {lo:.3f}-{hi:.3f}] head/base")
    return out


def _ratio(r: dict) -> str:
    if r.get("median") is None:
        return "-"
    lo, hi = r["ci"]
    return f"{r['median']:.3f} [{lo:.3f}, {hi:.3f}]"


def _v(verdict: str) -> str:
    return f"**{verdict.upper()}**" if verdict == Change.SLOWER.value else verdict


def markdown(doc: dict) -> str:
    cfg, env, sides = doc["config"], doc["env"], doc["sides"]
    pb = env.get("python_build") or {}
    libs = ", ".join(f"{k} {v}" for k, v in (env.get("libraries") or {}).items() if v)
    bad = regressions(doc)
    head_name = f"`{sides['head']['commit'][:12]}`" + (" (working tree)" if sides["head"]["ref"] is None else
                                                       f" (`{sides['head']['ref']}`)")
    lines = [f"## echobench A/B: head {head_name} vs base `{sides['base']['commit'][:12]}` (`{sides['base']['ref']}`)", "",
             ("**REGRESSED**: " + "; ".join(bad)) if bad else "**No regression found.**", "",
             f"Both sides measured in this job ({doc['timestamp']}, {doc['elapsed_s']:.0f} s) on the same host "
             f"({env.get('cpu_model')}, kernel {env.get('kernel')}), interpreter ({pb.get('implementation')} "
             f"{pb.get('version')}, {pb.get('compiler')}, built {pb.get('build')}) and libraries ({libs}); "
             f"one load generator drives both; {cfg['conns']} connections x {output.human_size(cfg['size'])}."]
    if cfg["base_args"] or cfg["head_args"]:
        lines.append(f"Server arguments: base {cfg['base_args'] or 'none'}, head {cfg['head_args'] or 'none'}.")
    if doc.get("left_out"):
        lines += ["", "Not compared: " + "; ".join(f"{m} ({why})" for m, why in doc["left_out"].items()) + "."]
    if doc.get("cost") is not None:
        lines += ["", f"### Cost: user-space instructions per message (callgrind; the gate fails beyond "
                      f"+{cfg['threshold']:.1%})", "",
                  f"(I(N2) - I(N1)) / (N2 - N1), N1 = {cfg['n1']:,}, N2 = {cfg['n2']:,}, {cfg['repeats']} repeats per "
                  "side; the counts repeat, so the delta is exact where the repeats agree (its interval is +- the "
                  "spread of repeats). Kernel work is not counted: see the wall clock.", "",
                  "| model | base | head | delta [interval] | verdict |", "|---|---|---|---|---|"]
        for m, c in sorted(doc["cost"].items()):
            lo, hi = c["interval"]
            iv = "" if hi - lo < 1e-5 else f" [{lo:+.2%}, {hi:+.2%}]"
            delta = "0 (identical)" if c["change"] == 0 else f"{c['change']:+.3%}"
            lines.append(f"| {m} | {c['base']:,.1f} | {c['head']:,.1f} | {delta}{iv} | "
                         f"{_v(c['verdict'])}{'' if c['verdict'] != NOT_GATEABLE else ': ' + c['why']} |")
    w = doc.get("wall")
    if w is not None:
        lines += ["", f"### Wall clock: paired rounds ({cfg['rounds']} rounds of {cfg['slice_s']:g} s slices, ABBA, "
                      f"both servers on CPU {','.join(map(str, w['server_cpus']))}, load generator on "
                      f"{','.join(map(str, w['client_cpus']))})", "",
                  "Median of the per-round ratios head/base [its 95% interval]; a verdict needs the whole interval "
                  f"beyond +-{cfg['wall_threshold']:.0%} (p99: +-{cfg['p99_threshold']:.0%}). Server CPU per message "
                  "is the server process's CPU clock (ns) over every message of its slice.", "",
                  "| model | server CPU us/msg base | head | ratio | verdict | msgs/s ratio | verdict | p99 ratio | "
                  "verdict | client busy |", "|---|---|---|---|---|---|---|---|---|---|"]
        for m, r in sorted(w["models"].items()):
            s, t, p = r["server_ns_per_msg"], r["msgs_per_s"], r["p99_us"]
            busy = r.get("client_pct") or {}
            note = "/".join(f"{busy[k]:.0f}%" for k in ("base", "head") if k in busy)
            if busy and max(busy.values()) >= 90:
                note += " (client >= 90% busy: msgs/s and p99 are partly the client's)"
            sb = "-" if s.get("base_median") is None else f"{s['base_median'] / 1000:.2f}"
            sh = "-" if s.get("head_median") is None else f"{s['head_median'] / 1000:.2f}"
            lines.append(f"| {m} | {sb} | {sh} | {_ratio(s)} | {_v(s['verdict'])} | {_ratio(t)} | {_v(t['verdict'])} | "
                         f"{_ratio(p)} | {_v(p['verdict'])} | {note} |")
    if w is not None:
        lines += ["", host_line(w["models"])]
    if w is not None and any(r.get("split_us_per_msg") for r in w["models"].values()):
        lines += ["", "Where each side's server CPU went, us per message summed over its slices (user: the model's "
                      "own code, which the cost table counts; kernel: system calls and TCP, most of an echo; "
                      "sampled at the clock tick, so a split, not a paired ratio):", "",
                  "| model | user base | user head | kernel base | kernel head |", "|---|---|---|---|---|"]
        for m, r in sorted(w["models"].items()):
            sp = r.get("split_us_per_msg") or {}
            if "base" in sp and "head" in sp:
                lines.append(f"| {m} | {sp['base']['user']:.2f} | {sp['head']['user']:.2f} | "
                             f"{sp['base']['kernel']:.2f} | {sp['head']['kernel']:.2f} |")
    moved = [(m, c) for m, c in sorted((doc.get("cost") or {}).items())
             if c["verdict"] not in (Change.NO_CHANGE.value,) and c["functions"]]
    if moved:
        lines += ["", "### Where the instructions moved", "",
                  "Own (self) instructions per message of the functions that changed most, head vs base."]
        for m, c in moved:
            lines += ["", f"**{m}** ({c['change']:+.2%}):", "", "| function | base | head | delta |", "|---|---|---|---|"]
            for f in c["functions"]:
                lines.append(f"| `{f['function']}` | {f['base']:,.1f} | {f['head']:,.1f} | {f['delta']:+,.1f} |")
    return "\n".join(lines) + "\n"


def host_line(models: dict) -> str:
    """Whether other processes took the rounds' CPUs (loadgen/hostload.py), per model: quiet, rerun, or kept
    although disturbed (then that model's wall-clock verdicts were measured beside other processes)."""
    hosts = {m: r["host"] for m, r in sorted(models.items()) if r.get("host")}
    if not hosts:
        return "Other processes on the run's CPUs: not measured."
    thr = next(iter(hosts.values()))["threshold"]
    busy = {m: h for m, h in hosts.items() if h["disturbed"]}
    rerun = sum(len(h["rerun"]) for h in hosts.values())
    if busy:
        return ("**Disturbed**: other processes took more than " + f"{thr:.0%} of the run's CPUs in rounds that could "
                "not be rerun clean for " + ", ".join(f"{m} ({len(h['kept_disturbed'])} rounds, up to "
                                                     f"{max(x['share'] for x in h['kept_disturbed']):.0%})"
                                                     for m, h in busy.items())
                + ": their wall-clock verdicts were measured beside other processes (the cost table is not affected).")
    mx = max(h.get("max_round_share") or 0.0 for h in hosts.values())
    return (f"The host was quiet: other processes took at most {mx:.1%} of the run's CPUs in any round kept "
            f"(a round beyond {thr:.0%} is run again; {rerun} {'was' if rerun == 1 else 'were'}).")


def load_ab(path: str) -> dict:
    """An A/B document from a run folder or its ab.json; ValueError (one line) when it is not one."""
    doc, p = output.read_json(path, "ab.json")
    return result.check(doc, KIND, p)


# -- the command -----------------------------------------------------------------------------------------------

def run(cfg: AbConfig, log) -> tuple[Path, dict]:
    t0 = time.monotonic()
    repo = Path(cfg.repo)
    with worktree.ab_folder(repo, log) as folder:
        sources, trees = {}, {}
        try:
            sources["base"], base_commit = worktree.add_worktree(repo, folder, "src-base", cfg.base)
            if cfg.head is None:
                sources["head"], head_commit = repo, worktree.working_tree_commit(repo)
            else:
                sources["head"], head_commit = worktree.add_worktree(repo, folder, "src-head", cfg.head)
            for side in ("base", "head"):  # what runs: a copy of each side's servers, the two at paths of one length
                trees[side] = worktree.snapshot(sources[side], folder, side)
        except worktree.WorktreeError as exc:
            raise UsageError(str(exc)) from None
        for side in ("base", "head"):
            missing = worktree.missing_requirements(sources[side])
            if missing:
                raise UsageError(f"the {side} ({cfg.base if side == 'base' else cfg.head}) needs other dependencies "
                                 f"than this environment has: {'; '.join(missing)}")
        sides = {"base": {"ref": cfg.base, "commit": base_commit}, "head": {"ref": cfg.head, "commit": head_commit}}
        info = {side: probe(trees[side]) for side in ("base", "head")}
        models, left_out = plan_models(cfg, info["base"], info["head"])
        if not models:
            raise UsageError("no model can run on both sides here: " + "; ".join(f"{m}: {w}" for m, w in left_out.items()))
        log(f"bench-ab: base {base_commit[:12]} ({cfg.base}) vs head {head_commit[:12]} "
            f"({cfg.head or 'working tree'}); models: {', '.join(models)}")
        cost_doc = wall_doc = None
        phases = {}
        if cfg.cost:
            t = time.monotonic()
            py = [m for m in models if m in info["head"]["python"] and m in info["base"]["python"]]
            cost_doc = measure_cost(cfg, py, trees, log) if py else {}
            phases["cost_s"] = round(time.monotonic() - t, 1)
        if cfg.wall:
            t = time.monotonic()
            if any(registry.get(m).external for m in models):
                for side in ("base", "head"):
                    build_go(trees[side], log)
            wall_doc = measure_wall(cfg, models, trees, log)
            phases["wall_s"] = round(time.monotonic() - t, 1)
    cfg_doc = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}
    doc = {"kind": KIND, "schema_version": AB_SCHEMA_VERSION,
           "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "env": environment(), "config": cfg_doc, "sides": sides, "models": models, "left_out": left_out,
           "cost": cost_doc, "wall": wall_doc, "elapsed_s": round(time.monotonic() - t0, 1), **phases}
    doc["regressions"] = regressions(doc)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(cfg.results) / f"{stamp}-ab"
    out_dir.mkdir(parents=True, exist_ok=False)
    output.write_json(doc, str(out_dir / "ab.json"))
    (out_dir / "ab.md").write_text(markdown(doc))
    output.point_latest(Path(cfg.results), out_dir, "latest-ab")  # what CI posts
    return out_dir, doc


def _fraction(text: str) -> float:
    x = float(text)
    if not 0 < x < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (0.01 = 1%), got {text}")
    return x


def _seconds(text: str) -> float:
    x = float(text)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return x


def parse_config(argv=None, prog: str = "python -m loadgen ab") -> AbConfig:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, metavar="REF", help="the git ref to compare with (a branch, tag, commit, "
                   "HEAD~1; in CI the merge base)")
    p.add_argument("--head", metavar="REF", help="the other side (default: the working tree as it is, uncommitted "
                   "changes included)")
    p.add_argument("--models", type=lambda s: tuple(x for x in s.split(",") if x), default=(),
                   help="comma-separated (default: every model both sides can run)")
    p.add_argument("--only", choices=["cost", "wall"], help="measure only the instruction counts, or only the wall clock")
    p.add_argument("--threshold", type=_fraction, default=0.01,
                   help="cost: the relative rise in instructions per message that fails the gate (default 0.01)")
    p.add_argument("--wall-threshold", type=_fraction, default=0.03,
                   help="wall clock: server CPU per message and msgs/s, the relative change the whole interval must "
                        "pass for a verdict (default 0.03; two instances of one server differ by ~1%%)")
    p.add_argument("--p99-threshold", type=_fraction, default=0.10, help="wall clock: the same for p99 (default 0.10)")
    p.add_argument("--rounds", type=_count, default=20, help="wall clock: paired rounds per model (default 20; 6 at "
                   "least for a 95%% interval)")
    p.add_argument("--slice", dest="slice_s", type=_seconds, default=0.5, help="wall clock: measured seconds per "
                   "slice (default 0.5)")
    p.add_argument("--warmup", dest="warmup_s", type=float, default=0.2, help="wall clock: discarded seconds at the "
                   "start of each slice (default 0.2)")
    p.add_argument("--conns", type=_count, default=10)
    p.add_argument("--size", type=parse_size, default=1024)
    p.add_argument("--n1", type=_count, default=500, help="cost: messages in the short run (default 500)")
    p.add_argument("--n2", type=_count, default=1500, help="cost: messages in the long run (default 1500)")
    p.add_argument("--repeats", type=_count, default=2, help="cost: pairs of runs per side, for the spread (default 2)")
    p.add_argument("--jobs", type=_count, default=min(2, len(os.sched_getaffinity(0))),
                   help="cost: callgrind runs at once, one per CPU (default: 2 where there are 2 CPUs)")
    p.add_argument("--base-arg", dest="base_args", action="append", default=[], metavar="ARG",
                   help="an extra argument for the base's servers (e.g. --base-arg=--burn-ns=50)")
    p.add_argument("--head-arg", dest="head_args", action="append", default=[], metavar="ARG",
                   help="an extra argument for the head's servers: a known cost on one side, to check the gate")
    p.add_argument("--results", default=str(ROOT / "results"), help="where the run folder goes (default results/)")
    p.add_argument("--repo", default=str(ROOT), help="the git repository whose ref and working tree are compared "
                   "(default: this checkout; its load generator drives both sides either way)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--quiet-host", action="store_true", help=hostload.QUIET_HOST_HELP)
    a = p.parse_args(argv)
    if a.n2 <= a.n1:
        p.error("--n2 must be larger than --n1")
    if a.warmup_s < 0:
        p.error("--warmup must not be negative")
    return AbConfig(base=a.base, head=a.head, models=a.models, cost=a.only != "wall", wall=a.only != "cost",
                    threshold=a.threshold, wall_threshold=a.wall_threshold, p99_threshold=a.p99_threshold,
                    rounds=a.rounds, slice_s=a.slice_s, warmup_s=a.warmup_s, conns=a.conns, size=a.size, n1=a.n1,
                    n2=a.n2, repeats=a.repeats, jobs=a.jobs, base_args=tuple(a.base_args),
                    head_args=tuple(a.head_args), results=a.results, repo=a.repo, quiet=a.quiet,
                    quiet_host=a.quiet_host)


def main(argv=None, prog: str = "python -m loadgen ab") -> int:
    cfg = parse_config(argv, prog)
    if cfg.quiet_host:
        from ..runner import suite_cpus

        if hostload.refuse_if_busy(prog, suite_cpus()):
            return 3

    def log(msg: str) -> None:
        if not cfg.quiet:
            print(msg, file=sys.stderr, flush=True)

    old = signal.signal(signal.SIGTERM, interrupt)  # a CI cancel cleans up like Ctrl-C
    try:
        out_dir, doc = run(cfg, log)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MeasureError as exc:
        print(f"{prog}: could not measure: {exc}", file=sys.stderr)
        return EXIT_MEASURE
    except CostError as exc:
        print(f"{prog}: could not measure: {exc}", file=sys.stderr)
        return EXIT_MEASURE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the worktrees were removed, nothing was written", file=sys.stderr)
        return EXIT_MEASURE
    finally:
        signal.signal(signal.SIGTERM, old)
    sys.stdout.write((out_dir / "ab.md").read_text())
    log(f"bench-ab: {doc['elapsed_s']:.0f} s; {out_dir / 'ab.json'}, {out_dir / 'ab.md'}")
    for line in doc["regressions"]:
        print(f"regressed: {line}", file=sys.stderr)
    return EXIT_REGRESSED if doc["regressions"] else EXIT_OK


if __name__ == "__main__":
    sys.exit(main(prog="python -m loadgen.suite.ab"))
