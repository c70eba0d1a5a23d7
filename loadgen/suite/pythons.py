"""``make bench-pythons`` / ``python -m loadgen pythons``: does upgrading Python (or uvloop) help a model?

The same server models under several *variants* of the server side (an interpreter, optional package pins,
optional git ref of echobench's servers: :mod:`loadgen.suite.variants`), measured in one job, side by side:

- **instructions per message** under callgrind, per model per variant (:mod:`loadgen.suite.cost`'s method): the
  counts repeat, so a version's change is exact, and the function tables say where it went;
- **paired wall-clock rounds** per model across the variants (:func:`loadgen.suite.sides.measure_rounds`): every
  variant's servers running at once, pinned to the same server CPUs, the load generator visiting each once per
  round in a rotating order; per round each variant's figure over the reference variant's, over rounds the
  median with its 95% interval: server CPU per message (user and kernel), msgs/s, p99.

Each variant's servers run from its own cached virtual environment (``.variants/``), with the server packages
pinned to the releases this environment has unless the variant pins them itself, so variants differ in what
their spec says and nothing else. The load generator is always this process's own. A variant that cannot be
built or found is listed with its one-line reason and left out; a model a variant cannot run is left out there.

Output: ``results/<stamp>-pythons/pythons.json`` (versioned), ``pythons.md`` and ``pythons.png``;
``results/latest-pythons`` points at it. Exit status: 0; 2 bad usage (a malformed spec, an unknown model, no
variant left); 3 could not measure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import signal
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
from . import variants as vt
from .cost import CostError
from .cost import positive_count as _count

KIND = result.PYTHONS
EXIT_OK, EXIT_USAGE, EXIT_MEASURE = 0, 2, 3
TOP_FUNCTIONS = 10
WALL_KEYS = ("server_ns_per_msg", "msgs_per_s", "p99_us")


class UsageError(Exception):
    """A request that cannot be measured as asked: one line, exit 2."""


class MeasureError(Exception):
    """A measurement that failed: one line, exit 3."""


@dataclass(frozen=True)
class PythonsConfig:
    variants: tuple[str, ...] = ()  # (): every CPython 3.10+ found here
    reference: str | None = None  # a spec or label among the variants (None: the newest interpreter)
    models: tuple[str, ...] = ()  # (): every Python model some variant can run
    cost: bool = True
    wall: bool = True
    rounds: int = 10
    slice_s: float = 0.3
    warmup_s: float = 0.1
    instances: int = 2
    conns: int = 10
    size: int = 1024
    n1: int = 500
    n2: int = 1500
    repeats: int = 2
    jobs: int = 2
    packages: tuple[str, ...] | None = None  # None: vt.default_packages() (this environment's releases)
    cache: str = str(vt.CACHE)
    results: str = str(ROOT / "results")
    repo: str = str(ROOT)  # where a variant's @ref is looked up
    quiet: bool = False
    quiet_host: bool = False  # refuse to start while other processes use the run's CPUs


@dataclass
class Ready:
    """A variant ready to run: its side (tree, interpreter), its environment and what it can run."""

    variant: vt.Variant
    side: sides.Side
    folder: Path
    packages: dict
    build: dict
    models: dict  # model -> why it cannot run here (None: it can)
    python_models: list
    commit: str | None = None


# -- preparing the variants ------------------------------------------------------------------------------------

def parse_all(specs: list[str]) -> list[vt.Variant]:
    """Every spec parsed (UsageError, one line, on the first malformed one)."""
    try:
        return [vt.parse(s) for s in specs]
    except vt.VariantError as exc:
        raise UsageError(str(exc)) from None


def unique_keys(labels: list[str]) -> list[str]:
    """Labels made unique in order: a variant given twice (an A/A run) is ``label`` then ``label#2``."""
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab}#{seen[lab]}")
    return out


def prepare(cfg: PythonsConfig, parsed: list[vt.Variant], refs_folder: Path | None, log) -> tuple[list[Ready], dict]:
    """Find, build and probe every variant: (the ready ones, {spec: why it was left out}). A variant with a git
    ref runs a copy of that commit's servers; when any variant has a ref, every variant runs from such a copy
    (the working tree's for the others), all at paths of one length (the path's length moves instruction
    counts)."""
    packages = vt.default_packages() if cfg.packages is None else cfg.packages
    left_out: dict[str, str] = {}
    located = []
    for v in parsed:
        try:
            v = vt.locate(v)
        except vt.VariantError as exc:
            left_out[v.spec] = str(exc)
            continue
        try:
            folder = vt.ensure(v, packages=packages, cache=Path(cfg.cache), log=log)
        except vt.VariantError as exc:
            left_out[v.spec] = str(exc)
            continue
        located.append((v, folder))
    trees: dict[str | None, tuple[Path, str | None]] = {}
    if refs_folder is not None:
        repo = Path(cfg.repo)
        for i, ref in enumerate(dict.fromkeys(v.ref for v, _ in located)):
            try:
                if ref is None:
                    src, commit = repo, worktree.working_tree_commit(repo)
                else:
                    src, commit = worktree.add_worktree(repo, refs_folder, f"src-{i:02d}", ref)
                trees[ref] = (worktree.snapshot(src, refs_folder, f"t{i:02d}"), commit)
            except worktree.WorktreeError as exc:
                trees[ref] = (None, str(exc))
    ready = []
    keys = unique_keys([v.label for v, _ in located])
    for (v, folder), key in zip(located, keys):
        root, commit = trees.get(v.ref, (ROOT, None))
        if root is None:
            left_out[v.spec] = f"variant {v.spec!r}: {commit}"
            continue
        side = sides.Side(key, root=root, python=str(folder / "bin" / "python"))
        try:
            info = sides.probe(side)
        except sides.SideError as exc:
            left_out[v.spec] = str(exc)
            continue
        ready.append(Ready(v, side, folder, vt.installed(folder), info["build"], info["models"], info["python"],
                           commit))
    return ready, left_out


def pick_reference(ready: list[Ready], wanted: str | None) -> Ready:
    """The variant every other is divided by: ``wanted`` (a spec or a label), else the newest interpreter (the
    first given of several with that version)."""
    if wanted is not None:
        for r in ready:
            if wanted in (r.variant.spec, r.side.key, r.variant.label):
                return r
        raise UsageError(f"--reference {wanted!r} is not one of the variants that run here "
                         f"({', '.join(r.side.key for r in ready)})")
    newest = max(_version_key(r.variant.version) for r in ready)
    return next(r for r in ready if _version_key(r.variant.version) == newest)


def _version_key(version: str | None) -> tuple:
    parts = []
    for x in (version or "0").split("."):
        digits = "".join(c for c in x if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def plan_models(cfg: PythonsConfig, ready: list[Ready]) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(the Python models to measure, {model: {variant: why it does not run there}}). An explicit model must be
    a Python model (UsageError); a model no variant can run is left out with the reasons."""
    names = list(cfg.models) or [n for n, m in registry.MODELS.items() if not m.external]
    known = [n for n, m in registry.MODELS.items() if not m.external]
    for m in names:
        if m not in known:
            raise UsageError(f"{m!r} is not a Python server model (choose from {', '.join(known)})")
    missing: dict[str, dict[str, str]] = {}
    run = []
    for m in names:
        why = {r.side.key: (r.models.get(m, "not a model of this tree") if m in r.python_models else
                            "not a Python model of this tree") for r in ready}
        why = {k: w for k, w in why.items() if w}
        if why:
            missing[m] = why
        if len(why) < len(ready):
            run.append(m)
    return run, missing


# -- measuring ---------------------------------------------------------------------------------------------------

def measure_cost(cfg: PythonsConfig, models: list[str], ready: list[Ready], ref: Ready, log) -> dict:
    """{model: {variant: its instructions per message, runs, spread, functions, and its change against the
    reference}}; the model's ``moved``: the functions whose own instructions changed most, for the variant
    furthest from the reference."""
    from . import ab, cost

    if (why := cost.tools_missing()) is not None:
        raise UsageError(why)
    tasks = [(m, r.side) for m in models for r in ready if r.models.get(m) is None and m in r.python_models]
    args = sides.cost_args(cfg.repeats, cfg.n1, cfg.n2, cfg.conns, cfg.size)
    got = sides.measure_cost(tasks, args, cfg.jobs, log)
    out = {}
    for m in models:
        per = {key: r for (mm, key), r in got.items() if mm == m}
        base = per.get(ref.side.key)
        entry = {}
        for key, r in per.items():
            e = {k: r[k] for k in ("instructions_per_msg", "runs", "spread")}
            if base is not None:
                e["ratio"] = r["instructions_per_msg"] / base["instructions_per_msg"]
                e["noise"] = max(r["spread"] or 0.0, base["spread"] or 0.0)
            entry[key] = e
        furthest = max((k for k in per if k != ref.side.key and base is not None),
                       key=lambda k: abs(entry[k]["ratio"] - 1), default=None)
        out[m] = {"variants": entry, "reference": ref.side.key if base is not None else None,
                  # every variant against the reference: the functions whose own instructions moved most
                  "moved_by_variant": {k: ab.moved_functions(base, per[k], top=TOP_FUNCTIONS)
                                       for k in per if k != ref.side.key and base is not None},
                  "moved": None if furthest is None else {
                      "variant": furthest, "ratio": entry[furthest]["ratio"],
                      "functions": ab.moved_functions(base, per[furthest], top=TOP_FUNCTIONS)},
                  "functions": {k: sorted(r["functions"], key=lambda f: -f["self_per_msg"])[:TOP_FUNCTIONS]
                                for k, r in per.items()}}
    return out


def measure_wall(cfg: PythonsConfig, models: list[str], ready: list[Ready], ref: Ready, log) -> dict:
    """Per model, paired rounds across the variants that run it: each variant's summary (medians with their 95%
    intervals, user/kernel split) and its ratios to the reference variant, round by round."""
    from ..runner import RunError, plan_cpus
    from . import rounds as rd
    from .bench import cell_workers

    client_cpus, server_cpus = plan_cpus(LoadConfig(server="placeholder"))
    load = rd.slice_config(LoadConfig(cpus=client_cpus, server_cpus=server_cpus), "tcp", cfg.conns, cfg.size,
                           cell_workers(client_cpus, cfg.conns), cfg.slice_s, cfg.warmup_s)
    out = {}
    for i, m in enumerate(models):
        those = [r.side for r in ready if r.models.get(m) is None and m in r.python_models]
        reference = ref.side.key if any(s.key == ref.side.key for s in those) else those[0].key
        try:
            runs, idle, wall = sides.measure_rounds(m, those, load, cfg.rounds, cfg.instances, server_cpus, log)
        except RunError as exc:
            raise MeasureError(f"{m}: {exc}") from None
        cells = rd.summarise(runs, reference, cfg.instances, "tcp", cfg.conns, cfg.size)
        per = {}
        for c in cells:
            per[c["model"]] = {k: c[k] for k in ("status", "failures", "median", "ci", "split", "vs_reference", "pairs",
                                                 "instance_spread", "verdicts", "client_bound_trials", "rounds",
                                                 "messages")}
        out[m] = {"reference": reference, "variants": per, "idle": idle.as_dict(), "host": idle.host_dict(),
                  "wall_s": round(wall, 1)}
        r = [(k, v["vs_reference"].get("server_ns_per_msg")) for k, v in per.items() if k != reference]
        log(f"bench-pythons: [{i + 1}/{len(models)}] {m}: server CPU/msg vs {reference}: "
            + ", ".join(f"{k} {x['median']:.3f} [{x['ci'][0]:.3f}-{x['ci'][1]:.3f}]" for k, x in r if x))
    return {"client_cpus": list(client_cpus), "server_cpus": list(server_cpus), "models": out}


# -- the command ---------------------------------------------------------------------------------------------------

def run(cfg: PythonsConfig, log) -> tuple[Path, dict]:
    t0 = time.monotonic()
    specs = list(cfg.variants) or vt.available()
    if not specs:
        raise UsageError("no CPython 3.10 or newer found here (PATH or pyenv): name the variants (--variants)")
    parsed = parse_all(specs)
    with contextlib.ExitStack() as stack:
        folder = None
        if any(v.ref for v in parsed):
            folder = stack.enter_context(worktree.ab_folder(Path(cfg.repo), log))
        ready, left_out = prepare(cfg, parsed, folder, log)
        for spec, why in left_out.items():
            log(f"bench-pythons: left out {spec}: {why}")
        if not ready:
            raise UsageError("no variant can run here: " + "; ".join(left_out.values()))
        ref = pick_reference(ready, cfg.reference)
        models, missing = plan_models(cfg, ready)
        if not models:
            raise UsageError("no model runs on any variant: " + "; ".join(
                f"{m}: {next(iter(w.values()))}" for m, w in missing.items()))
        log(f"bench-pythons: variants {', '.join(r.side.key for r in ready)} (reference {ref.side.key}); "
            f"models {', '.join(models)}")
        phases, cost_doc, wall_doc = {}, None, None
        if cfg.cost:
            t = time.monotonic()
            cost_doc = measure_cost(cfg, models, ready, ref, log)
            phases["cost_s"] = round(time.monotonic() - t, 1)
        if cfg.wall:
            t = time.monotonic()
            wall_doc = measure_wall(cfg, models, ready, ref, log)
            phases["wall_s"] = round(time.monotonic() - t, 1)
    cfg_doc = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}
    doc = {"kind": KIND, "schema_version": result.version(KIND),
           "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "env": environment(), "config": cfg_doc, "reference": ref.side.key,
           "variants": [{"key": r.side.key, "spec": r.variant.spec, "interpreter": r.variant.python,
                         "venv": str(r.folder), "version": r.variant.version, "pins": list(r.variant.pins),
                         "ref": r.variant.ref, "commit": r.commit, "build": r.build, "packages": r.packages}
                        for r in ready],
           "left_out": left_out, "models": models, "not_run": missing, "cost": cost_doc, "wall": wall_doc,
           "elapsed_s": round(time.monotonic() - t0, 1), **phases}
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(cfg.results) / f"{stamp}-pythons"
    out_dir.mkdir(parents=True, exist_ok=False)
    output.write_json(doc, str(out_dir / "pythons.json"))
    from . import pythons_report

    pythons_report.write(doc, out_dir)
    output.point_latest(Path(cfg.results), out_dir, "latest-pythons")
    return out_dir, doc


def load_pythons(path: str) -> dict:
    """A pythons document from a run folder or its pythons.json; ValueError (one line) when it is not one."""
    doc, p = output.read_json(path, "pythons.json")
    return result.check(doc, KIND, p)


def _seconds(text: str) -> float:
    x = float(text)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return x


def parse_config(argv=None, prog: str = "python -m loadgen pythons") -> PythonsConfig:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0],
                      epilog="A variant is INTERPRETER[+PIN...][@REF]: 3.13, python3.12, current or a path; pins "
                             "like uvloop==0.19.0; a git ref of echobench's servers. Example: --variants "
                             "'3.13 3.13+uvloop==0.19.0 3.13+uvloop==0.21.0'.")
    p.add_argument("--variants", type=lambda s: tuple(x for x in s.replace(",", " ").split() if x), default=(),
                   metavar="'SPEC SPEC ...'", help="the variants, separated by spaces or commas (default: every "
                   "CPython 3.10 or newer found on PATH or under pyenv)")
    p.add_argument("--reference", metavar="SPEC", help="the variant the others are divided by (default: the newest "
                   "interpreter)")
    p.add_argument("--models", type=lambda s: tuple(x for x in s.split(",") if x), default=(),
                   help="comma-separated Python models (default: every one some variant can run)")
    p.add_argument("--only", choices=["cost", "wall"], help="only the instruction counts, or only the wall clock")
    p.add_argument("--rounds", type=_count, default=10, help="wall clock: paired rounds per model (default 10; 6 "
                   "at least for a 95%% interval)")
    p.add_argument("--slice", dest="slice_s", type=_seconds, default=0.3, help="wall clock: measured seconds per "
                   "slice (default 0.3)")
    p.add_argument("--warmup", dest="warmup_s", type=float, default=0.1, help="wall clock: discarded seconds at the "
                   "start of each slice (default 0.1)")
    p.add_argument("--instances", type=_count, default=2, help="wall clock: servers per variant, started apart "
                   "(default 2)")
    p.add_argument("--conns", type=_count, default=10)
    p.add_argument("--size", type=parse_size, default=1024)
    p.add_argument("--n1", type=_count, default=500, help="cost: messages in the short run (default 500)")
    p.add_argument("--n2", type=_count, default=1500, help="cost: messages in the long run (default 1500)")
    p.add_argument("--repeats", type=_count, default=2, help="cost: pairs of runs per variant (default 2)")
    p.add_argument("--jobs", type=_count, default=min(2, len(os.sched_getaffinity(0))),
                   help="cost: callgrind runs at once, one per CPU (default: 2 where there are 2 CPUs)")
    p.add_argument("--cache", default=str(vt.CACHE), help="where the variants' environments are kept "
                   "(default .variants/)")
    p.add_argument("--results", default=str(ROOT / "results"), help="where the run folder goes (default results/)")
    p.add_argument("--repo", default=str(ROOT), help="the git repository a variant's @ref names (default: this "
                   "checkout)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--quiet-host", action="store_true", help=hostload.QUIET_HOST_HELP)
    a = p.parse_args(argv)
    if a.n2 <= a.n1:
        p.error("--n2 must be larger than --n1")
    if a.warmup_s < 0:
        p.error("--warmup must not be negative")
    try:
        parse_all(list(a.variants))
    except UsageError as exc:
        p.error(str(exc))
    return PythonsConfig(variants=a.variants, reference=a.reference, models=a.models, cost=a.only != "wall",
                         wall=a.only != "cost", rounds=a.rounds, slice_s=a.slice_s, warmup_s=a.warmup_s,
                         instances=a.instances, conns=a.conns, size=a.size, n1=a.n1, n2=a.n2, repeats=a.repeats,
                         jobs=a.jobs, cache=a.cache, results=a.results, repo=a.repo, quiet=a.quiet,
                    quiet_host=a.quiet_host)


def main(argv=None, prog: str = "python -m loadgen pythons") -> int:
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
    except (MeasureError, CostError) as exc:
        print(f"{prog}: could not measure: {exc}", file=sys.stderr)
        return EXIT_MEASURE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was written", file=sys.stderr)
        return EXIT_MEASURE
    finally:
        signal.signal(signal.SIGTERM, old)
    sys.stdout.write((out_dir / "pythons.md").read_text())
    log(f"bench-pythons: {doc['elapsed_s']:.0f} s; {out_dir / 'pythons.md'}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(prog="python -m loadgen.suite.pythons"))

