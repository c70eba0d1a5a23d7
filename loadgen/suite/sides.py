"""Several *sides* of the server measured in one job: the machinery ``make bench-ab`` (two sides: base and head)
and ``make bench-pythons`` (one side per variant: an interpreter, its packages, a git ref) share.

A side is a tree whose ``servers`` package runs (this checkout, or a copy of another commit's), the interpreter
that runs it (this one, or a variant's virtual environment) and extra server arguments. The load generator is
always this process's own.

- :func:`probe`: what a side can run (every model's reason to refuse, or None), asked of the side's own
  interpreter with the side's tree on its path, and which interpreter build that is (:func:`loadgen.envinfo.
  python_build`, run *in* that interpreter).
- :func:`measure_cost`: instructions per message under callgrind for each (model, side), ``jobs`` at once, one
  CPU each (counts do not depend on the other CPU's load).
- :func:`measure_rounds`: per model, every side's servers running at once, pinned to the same server CPUs, and
  paired rounds over them (:mod:`loadgen.suite.rounds`): each round visits every side once, in a rotating,
  alternating order; ratios are taken within a round.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..envinfo import ROOT, python_build

PROBE_TIMEOUT_S = 60.0
# Nothing run in a tree writes bytecode there: a .pyc written under a random hash seed marshals its set constants
# in that seed's order, and the callgrind runs (PYTHONHASHSEED=0) that load it then count a few instructions per
# message more or less than from source (measured: selectors 13,499.84 vs 13,491.84, same code)
NO_BYTECODE = {"PYTHONDONTWRITEBYTECODE": "1"}


class SideError(Exception):
    """A side that cannot be used (its servers do not import, a server does not start): one line."""


@dataclass(frozen=True)
class Side:
    key: str  # unique within a job: "base", "head", a variant's label
    root: Path = ROOT  # the tree whose servers package runs
    python: str | None = None  # the interpreter (None: this one)
    server_args: tuple[str, ...] = ()

    @property
    def interpreter(self) -> str:
        return self.python or sys.executable


_PROBE = """
import json, platform, sys
{build}
import servers
from servers import registry
print(json.dumps({{'file': servers.__file__, 'build': python_build(),
    'models': {{n: m.unavailable_reason() for n, m in registry.MODELS.items()}},
    'python': [n for n, m in registry.MODELS.items() if not m.external]}}))
"""


def probe(side: Side) -> dict:
    """What the side's ``servers`` offer on its interpreter: {"models": {model: reason it cannot run, or None},
    "python": [the Python models], "file": where servers was imported from (it must be the side's tree), "build":
    the interpreter build}. SideError (one line) when its servers do not import."""
    code = _PROBE.format(build=inspect.getsource(python_build))
    env = {**os.environ, "PYTHONPATH": str(side.root), **NO_BYTECODE}
    try:
        out = subprocess.run([side.interpreter, "-c", code], cwd=side.root, env=env, capture_output=True, text=True,
                             timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SideError(f"{side.key}: importing its servers took over {PROBE_TIMEOUT_S:g} s") from None
    except OSError as exc:
        raise SideError(f"{side.key}: {side.interpreter} does not run ({exc})") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        raise SideError(f"{side.key}: its servers do not import on {side.interpreter}: {last}")
    info = json.loads(out.stdout.strip().splitlines()[-1])
    where = Path(info["file"]).resolve()
    if Path(side.root).resolve() not in where.parents:
        raise SideError(f"{side.key}: its servers were imported from {where}, not from {side.root}")
    return info


def cost_args(repeats: int, n1: int, n2: int, conns: int, size: int, transport: str = "tcp") -> argparse.Namespace:
    """The workload of one cost measurement (what ``loadgen.suite.cost.measure_model`` reads)."""
    return argparse.Namespace(server_args=[], repeats=repeats, n1=n1, n2=n2, transport=transport, conns=conns, size=size)


def measure_cost(tasks: list[tuple[str, Side]], args: argparse.Namespace, jobs: int, log) -> dict:
    """Instructions per message for each (model, side) in ``tasks``, every function's share kept (a diff needs
    both sides' full tables): {(model, side.key): cost.measure_model's result}. With ``jobs`` > 1, runs at once,
    each server on its own CPU. CostError (one line) when a run fails."""
    from . import cost

    def one(task, cpu, work):
        m, side = task
        a = argparse.Namespace(**{**vars(args), "server_args": list(side.server_args)})
        return cost.measure_model(m, a, cpu, work, log, root=side.root, every_function=True, label=f"{side.key} ",
                                  python=side.python)

    got = cost.measure_at_once(tasks, one, jobs, "echobench-sidecost-")
    return {(m, side.key): r for (m, side), r in zip(tasks, got)}


def measure_rounds(model: str, sides: list[Side], load, rounds: int, instances: int, server_cpus, log,
                   on_slice=None):
    """Paired rounds of one model over ``sides`` (``load``: the LoadConfig of one slice): every side's servers
    (``instances`` each, started apart) run at once, pinned to ``server_cpus``; one discarded slice per instance,
    then ``rounds`` rounds, each visiting every side once (:func:`loadgen.suite.rounds.plan_rounds`). Returns
    (runs: {side key: ModelRun}, idle check, wall seconds); a side whose server dies or does not start stops
    there, with the reason in its ModelRun, and the others go on."""
    from servers import registry

    from ..target import ManagedServer
    from . import rounds as rd

    by_key = {s.key: s for s in sides}
    multi = registry.get(model).multiprocess
    workers = len(server_cpus) if multi else None

    def start(key):
        s = by_key[key]
        return ManagedServer(model, "127.0.0.1", workers, server_cpus, tuple(s.server_args), root=s.root,
                             python=s.python)

    pool = rd.ServerPool(start, list(by_key), instances, log)
    try:
        pool.ensure()
        return rd.measure_cell(load, list(by_key), pool, rounds, {k: True for k in by_key}, on_slice=on_slice,
                               warm=True)
    finally:
        pool.stop()
