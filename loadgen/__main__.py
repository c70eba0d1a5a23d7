"""``python -m loadgen COMMAND [ARGS]``: one entry point for echobench's commands.

    python -m loadgen run --server uvloop-protocol --conns 100     # the load generator (loadgen/run.py)
    python -m loadgen ab --base origin/main                         # the change beside its base (make bench-ab)
    python -m loadgen pythons --variants '3.12 3.13'                # the servers under several Pythons (make bench-pythons)
    python -m loadgen bench | compare | cost | calibrate | report   # the suite

Each command is its module's ``main``; ``python -m loadgen COMMAND --help`` prints its options.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {  # name -> (module, what it does)
    "run": ("loadgen.run", "drive one server: throughput, latency, CPU (loadgen/run.py)"),
    "ab": ("loadgen.suite.ab", "a change measured beside its base in one job: cost and paired wall clock (make bench-ab)"),
    "pythons": ("loadgen.suite.pythons", "the same models under several Pythons / package versions, side by side "
                "(make bench-pythons)"),
    "overload": ("loadgen.suite.overload", "each model offered 2x and 4x its capacity: latency, backlog, memory, "
                 "recovery (make bench-overload)"),
    "bench": ("loadgen.suite.bench", "every model over a matrix (make bench)"),
    "compare": ("loadgen.suite.compare", "judge two runs or two cost documents (make bench-compare)"),
    "cost": ("loadgen.suite.cost", "user-space instructions per message under callgrind (make bench-cost)"),
    "calibrate": ("loadgen.suite.calibrate", "the load generator against a C client (make bench-loadgen)"),
    "report": ("loadgen.suite.report", "plots and report of a run folder (make report)"),
}


def usage(prog: str = "python -m loadgen") -> str:
    width = max(map(len, COMMANDS))
    return (f"usage: {prog} COMMAND [ARGS]\n\ncommands:\n"
            + "".join(f"  {name:<{width}}  {what}\n" for name, (_, what) in COMMANDS.items())
            + f"\n'{prog} COMMAND --help' prints a command's options.\n")


def main(argv=None, prog: str = "python -m loadgen") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(usage(prog))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{prog}: error: unknown command {name!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    if name in ("ab", "pythons", "overload"):
        return module.main(rest, prog=f"{prog} {name}")
    return module.main(rest)


def console() -> None:
    """The ``echobench`` console script (pyproject's [project.scripts]): ``echobench COMMAND [ARGS]``."""
    sys.exit(main(prog="echobench"))


if __name__ == "__main__":
    sys.exit(main())
