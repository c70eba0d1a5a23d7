"""echobench load generator.

    .venv/bin/python loadgen/run.py --server uvloop-protocol --conns 100 --duration 10
    .venv/bin/python loadgen/run.py --port 25000 --conns 1000 --rate 50000 --json out.json
    .venv/bin/python loadgen/run.py --server go --transport udp --size 512
    .venv/bin/python loadgen/run.py --transport unix --path /tmp/echo.sock

Exit codes: 0 clean run; 1 integrity failures or errors; 2 bad usage;
3 incomplete (no server, server died, interrupted).
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loadgen.cli import build_parser, parse_config  # noqa: E402,F401 (the command line: loadgen/cli.py)


def main(argv=None) -> int:
    cfg = parse_config(argv)
    from loadgen import output
    from loadgen.runner import EXIT_USAGE, RunError, Runner
    from loadgen.target import TargetError

    def log(msg: str) -> None:
        if not cfg.quiet:
            print(f"loadgen: {msg}", file=sys.stderr, flush=True)

    if cfg.idle:
        from loadgen.modes.idle import render, run_idle

        try:
            doc, code = run_idle(cfg, log)
        except (RunError, TargetError) as exc:
            print(f"loadgen/run.py: error: {exc}", file=sys.stderr)
            return EXIT_USAGE if isinstance(exc, RunError) else 3
        render(doc)
        if cfg.json_path:
            output.write_json(doc, cfg.json_path)
        res = doc["result"]
        if not res["complete"]:
            from collections import Counter

            c, t = res["connect"], res["trickle"]
            kinds = Counter(c["failures"]) + Counter(t["failures"])
            bad = c["attempted"] - c["established"] + t["connections_lost"]
            why = f"{res['incomplete_reason']}; " if res["incomplete_reason"] else ""
            st = res.get("stopped")
            if st and not res["incomplete_reason"]:  # the reason names the failures by kind
                print(f"loadgen/run.py: error: stopped at {st['established']:,} of {st['attempted']:,} connections "
                      f"held: {st['reason']}", file=sys.stderr)
            else:
                print(f"loadgen/run.py: error: {why}{bad:,} of {c['attempted']:,} connections failed or were lost"
                      + (f" ({', '.join(f'{k} {v:,}' for k, v in kinds.items())})" if kinds else ""), file=sys.stderr)
        return code
    try:
        if cfg.quiet_host:
            from loadgen.hostload import HostBusy, require_quiet
            from loadgen.runner import plan_cpus

            client_cpus, server_cpus = plan_cpus(cfg)
            try:
                require_quiet((*client_cpus, *(server_cpus or ())))
            except HostBusy as exc:
                print(f"loadgen/run.py: error: {exc}", file=sys.stderr)
                return 3
        if cfg.cluster:
            from loadgen.modes.cluster import run_cluster

            doc, code = run_cluster(cfg, log)
        elif cfg.find_capacity or cfg.sweep:
            from loadgen.modes.capacity import find

            doc, code = find(cfg, log)
        else:
            doc, code = Runner(cfg, log).execute()
    except (RunError, TargetError) as exc:
        print(f"loadgen/run.py: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, RunError) else 3
    except KeyboardInterrupt:  # before a run had anything to report (a run itself turns Ctrl-C into a result)
        print("loadgen/run.py: error: interrupted before any result", file=sys.stderr)
        return 3
    output.render_table(doc)
    if doc.get("hosts"):
        output.render_hosts(doc)
    if doc["result"].get("capacity"):
        output.render_capacity(doc["result"]["capacity"])
    if doc["result"].get("sweep"):
        output.render_sweep(doc["result"]["sweep"])
    if doc["result"].get("recovery"):
        output.render_recovery(doc["result"]["recovery"])
    if cfg.json_path:
        output.write_json(doc, cfg.json_path)
    if cfg.hdr_path:
        output.write_hdr(doc["result"]["histogram"], cfg.hdr_path)
    res = doc["result"]
    if not res["complete"]:
        print(f"loadgen/run.py: error: run incomplete: {res['incomplete_reason']}", file=sys.stderr)
    if res["integrity_failures"]:
        print(f"loadgen/run.py: error: {res['integrity_failures']} integrity failure(s): "
              + "; ".join(res["integrity_samples"][:3]), file=sys.stderr)
    cap = res.get("capacity")
    if cap and not cap["complete"]:
        print(f"loadgen/run.py: error: capacity search incomplete: {cap['stopped']}", file=sys.stderr)
    sw = res.get("sweep")
    if sw and any(not st["complete"] for st in sw["steps"]):
        print("loadgen/run.py: error: sweep incomplete: a step did not complete", file=sys.stderr)
    if res["verdict"] == "client-bound" and not cfg.quiet:
        print(f"loadgen: {res['verdict_detail']}", file=sys.stderr)
    return code


def _ensure_dependencies() -> None:
    """``python loadgen/run.py`` typed with a Python that lacks the project's packages: re-run under the project's
    .venv when there is one, else say in one line how to get it (never a ModuleNotFoundError traceback)."""
    import importlib.util

    missing = [m for m in ("hdrh", "numpy", "psutil", "rich") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    venv_python = os.path.join(root, ".venv", "bin", "python")
    if os.path.exists(venv_python) and os.path.realpath(sys.prefix) != os.path.realpath(os.path.join(root, ".venv")):
        os.execv(venv_python, [venv_python, os.path.abspath(__file__), *sys.argv[1:]])
    print(f"loadgen/run.py: error: {sys.executable} lacks {', '.join(missing)}: run `make venv` in {root} and use "
          ".venv/bin/python (or `pip install -e .`)", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    _ensure_dependencies()
    sys.exit(main())
