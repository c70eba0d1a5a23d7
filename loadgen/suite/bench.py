"""``make bench``: every server model, a matrix of loads, pinned and repeated; JSON, plots, report.

    python -m loadgen.suite.bench [--matrix default|full|PATH] [--results DIR] [--models a,b]

The matrix is data (``loadgen/suite/matrices/*.toml``). Each cell (model,
connections, message size) runs ``trials`` times, interleaved across models
(A B C ... A B C ...) so that machine drift hits every model alike, each time
with a fresh server process pinned away from the load generator, a discarded
warm-up, and the load generator's verdict recorded. Results go to
``results/<UTC timestamp>-<git short sha>/``; ``results/latest`` points at the
newest run. Ctrl-C keeps every finished measurement and still writes the report.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from servers import registry

from .. import output, result, stats
from ..config import LoadConfig, OneLineParser
from ..engine import native
from ..envinfo import ROOT, environment
from ..hostload import DISTURBED_SHARE
from ..modes import capacity
from ..runner import RunError, Runner, plan_cpus
from ..target import TargetError
from .matrix import (  # noqa: F401
    CAPACITY_KEYS,
    CONNECTIONS_KEYS,
    MATRICES,
    MODES,
    PAIRED_KEYS,
    TLS_CELLS,
    TLS_KEYS,
    MatrixError,
    cell_models,
    cell_rounds,
    check_paired,
    load_matrix,
    plan,
    section_models,
)

SUITE_SCHEMA_VERSION = result.version(result.SUITE)
RUN_OVERHEAD_S = 1.0  # server start, connects, drain, stop: for the time-left estimate
SLICE_OVERHEAD_S = 0.1  # a paired slice's connects, fork and drain (0.08 s at 10 connections, 0.17 s at 1,000 here)


















def _after_matrix(display: "SuiteDisplay", sections: list) -> None:
    """The tables after the matrix (connection scale, capacity, overload), in order: one that fails is marked
    incomplete in its section with what stopped it, and the next still runs; Ctrl-C stops them all."""
    for what, holder, fn in sections:
        try:
            fn()
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # the matrix's measurements are kept: the section says what stopped it
            display.log(f"bench: {what} stopped: {type(exc).__name__}: {exc}")
            if "section" in holder:
                holder["section"].update(complete=False, error=f"{type(exc).__name__}: {exc}")


def run_overload(matrix: dict, models: list[str], out_dir: Path, display: "SuiteDisplay", holder: dict) -> None:
    """Overload and recovery per model (loadgen/suite/overload.py, as ``make bench-overload``, from the matrix's
    ``[overload]`` table): its capacity at the SLO, then a profile of spikes from it. Each profile run's document
    goes to ``overload/runs/<model>.json``, its timeline to ``overload/timelines/<model>.png``; the section is in
    ``holder["section"]`` from the start."""
    from . import overload

    names = section_models(matrix, "overload", models)
    if not names:
        return
    cfg = overload.config_from_table(matrix["overload"], models=tuple(names), quiet=True)
    folder = out_dir / "overload"
    folder.mkdir(exist_ok=True)
    section = {"config": {k: v for k, v in overload.config_doc(cfg).items() if k != "results"}, "entries": [],
               "complete": True}
    holder["section"] = section
    for model in names:
        display.cell(f"overload {model}: capacity at {cfg.slo}, then {overload.profile_text(cfg)} of it")
        try:
            entry = overload.measure_model(model, cfg, folder, lambda msg: None)
        except KeyboardInterrupt:
            section["complete"] = False
            raise
        section["entries"].append(entry)
        if entry.get("error"):
            display.log(f"bench: overload {model}: {entry['error']}")
        display.advance()


def run_connections(matrix: dict, models: list[str], base: LoadConfig, out_dir: Path, display: "SuiteDisplay",
                    holder: dict) -> None:
    """Connection scale per model (loadgen/modes/idle.py, as ``loadgen/run.py --idle``): memory per idle connection,
    connects/s, and the highest level every connection held at, with why a model stopped short. Each model's
    document goes to ``connections/<model>.json``; the section is in ``holder["section"]`` from the start."""
    from ..modes.idle import run_idle
    from ..runner import RunError
    from ..target import TargetError

    conn = matrix.get("connections")
    names = section_models(matrix, "connections", models)
    if not names:
        return
    (out_dir / "connections").mkdir(exist_ok=True)
    levels = tuple(conn["levels"])
    section = {"levels": list(levels), "hold": conn.get("hold", 1.0), "trickle": conn.get("trickle"), "models": {},
               "complete": True}
    holder["section"] = section
    for model in names:
        display.cell(f"connections {model}: {', '.join(f'{n:,}' for n in levels)}")
        cfg = replace(base, server=model, idle=levels, conns=levels[-1], hold=float(conn.get("hold", 1.0)),
                      trickle=conn.get("trickle"), connect_timeout=float(conn.get("connect_timeout", 10.0)),
                      workers=0,  # as many load-generator processes as the descriptor limit needs
                      server_workers=conn.get("server_workers") if registry.get(model).multiprocess else None,
                      server_args=tuple(matrix["run"].get("server_args", {}).get(model, ())))
        try:
            doc, _code = run_idle(cfg, lambda msg: None)
        except (RunError, TargetError) as exc:
            section["models"][model] = {"error": str(exc)}
            display.log(f"bench: connections {model}: {exc}")
            display.advance()
            continue
        output.write_json(doc, str(out_dir / "connections" / f"{model}.json"))
        r = doc["result"]
        lvls = r["memory"]["levels"]
        held = [lv for lv in lvls if lv["failed"] == 0]
        # the hold (and its trickle) ran at the last level reached: its failures rule out that level only
        if held and r["trickle"]["failures"] and held[-1] is lvls[-1]:
            held = held[:-1]
        all_ok = r["server_alive"] is not False
        kinds = {**r["connect"]["failures"], **{f"while held: {k}": v for k, v in r["trickle"]["failures"].items()}}
        section["models"][model] = {
            "levels": r["memory"]["levels"], "per_conn_bytes": r["memory"]["server_rss_per_conn_bytes"],
            # below the model's limit: a level that failed spent most of its time on timeouts
            "connects_per_s": r["connect"].get("per_s_clean") or r["connect"]["per_s"],
            "connect_latency_us": r["connect"]["latency_us"],
            # the load generator's busiest clean level: >= 90% and connects/s measures the client
            "connects_client_pct": max((lv.get("client_cpu_pct") or 0 for lv in r["memory"]["levels"]
                                        if not lv["failures"]), default=None),
            "held_all_at": held[-1]["attempted"] if held and all_ok else None,
            "stopped": None if r["complete"] else (r["incomplete_reason"] or (r.get("stopped") or {}).get("reason")
                                                   or "connections failed: " + ", ".join(
                f"{k} {v:,}" for k, v in kinds.items())),
            "stopped_at": (r.get("stopped") or {}).get("established"),
            "spread": r.get("spread"),
            "trickle": r["trickle"],
        }
        display.advance()
        if r.get("incomplete_reason") == "interrupted":
            section["complete"] = False
            raise KeyboardInterrupt












def cell_workers(client_cpus: tuple[int, ...], conns: int) -> int:
    """Load-generator processes for a cell: one per CPU the load generator is given (``client_cpus``, as
    run_suite planned them), never more than connections. On a 2-core machine (one CPU each side) that is 1; on
    a larger one the load generator uses the cores it has, so the fastest servers are not measured against a
    single client core. Across a cluster (no local client CPUs): 1 per host."""
    return max(1, min(len(client_cpus), conns))




def git_short() -> str:
    c = environment()["git_commit"] or "nogit"
    return c[:7] + ("-dirty" if c.endswith("-dirty") else "")


def cell_key(model: str, conns: int, size: int, transport: str = "tcp") -> str:
    return f"{model}_c{conns}_s{size}" if transport == "tcp" else f"{model}_{transport}_c{conns}_s{size}"


def summarise(model: str, conns: int, size: int, docs: list[dict], failures: list[dict], transport: str = "tcp") -> dict:
    """Per-cell medians and spread across trials."""
    ok = [d["result"] for d in docs if d["result"]["complete"] and d["result"]["integrity_failures"] == 0]

    def med(get):
        vals = [v for v in (get(r) for r in ok) if v is not None]
        return statistics.median(vals) if vals else None

    def spread(get):
        vals = [v for v in (get(r) for r in ok) if v is not None]
        if not vals:
            return None
        m = statistics.mean(vals)
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return {"min": min(vals), "max": max(vals), "stdev": round(sd, 3), "cv": round(sd / m, 4) if m else None,
                "n": len(vals), "values": vals}

    verdicts = [r["verdict"] for r in ok]
    verdict = max(set(verdicts), key=verdicts.count) if verdicts else None
    status = "ok" if ok and not failures else ("failed" if not ok else "partial")
    return {
        "model": model, "transport": transport, "conns": conns, "size": size, "status": status,
        "trials_ok": len(ok), "trials": len(docs) + len([f for f in failures if f.get("doc") is None]),
        "failures": [{k: v for k, v in f.items() if k != "doc"} for f in failures],
        "median": {
            "msgs_per_s": med(lambda r: r["msgs_per_s"]),
            "mb_per_s": med(lambda r: r["mb_per_s"]),
            "p50_us": med(lambda r: r["latency_us"]["p50"]),
            "p99_us": med(lambda r: r["latency_us"]["p99"]),
            "p999_us": med(lambda r: r["latency_us"]["p999"]),
            "server_us_per_msg": med(lambda r: r["cpu"]["server_us_per_msg"]),
            "loadgen_us_per_msg": med(lambda r: r["cpu"]["loadgen_us_per_msg"]),
            "server_pct": med(lambda r: r["cpu"]["server_pct"]),
            "loadgen_pct": med(lambda r: r["cpu"]["loadgen_pct"]),
            "loss_pct": med(lambda r: (r.get("udp") or {}).get("loss_pct")),
            "jain": med(lambda r: (r.get("fairness") or {}).get("jain")),  # how evenly the connections were served
        },
        "spread": {
            "msgs_per_s": spread(lambda r: r["msgs_per_s"]),
            "p99_us": spread(lambda r: r["latency_us"]["p99"]),
            "server_us_per_msg": spread(lambda r: r["cpu"]["server_us_per_msg"]),
        },
        "per_trial": [{"trial": d["bench"]["trial"], "msgs_per_s": d["result"]["msgs_per_s"],
                       "p99_us": d["result"]["latency_us"]["p99"],
                       "server_us_per_msg": d["result"]["cpu"]["server_us_per_msg"]}
                      for d in docs if d["result"]["complete"] and d["result"]["integrity_failures"] == 0],
        "verdicts": verdicts,
        "verdict": verdict,
        # trials in which the load generator was saturated (client-bound or both-saturated): their throughput
        # does not rank the server
        "client_bound_trials": sum(v in stats.CLIENT_SATURATED for v in verdicts),
    }


CAPACITY_STEPS_GUESS = 9  # steps per model, for the time estimate only (a search stops when its bracket is tight)




def run_capacity(matrix: dict, models: list[str], base: LoadConfig, cells: list[dict], out_dir: Path,
                 display: "SuiteDisplay", holder: dict, client_cpus: tuple[int, ...] = ()) -> None:
    """The capacity at the matrix's SLO for every model: one open-loop search each (loadgen/modes/capacity.py), started
    at ``start`` times the model's closed-loop msgs/s at this load in the same run, then the optional sweep at
    fractions of the capacity found. Each step's document goes to ``capacity/``. The section is put in
    ``holder["section"]`` before the first step, so Ctrl-C (KeyboardInterrupt, re-raised) keeps finished models."""
    cap = matrix.get("capacity")
    names = section_models(matrix, "capacity", models)
    if not cap or not names:
        return
    slos = [capacity.parse_slo(t) for t in cap["slo"]]
    conns, size = cap["conns"], cap["size"]
    (out_dir / "capacity").mkdir(exist_ok=True)
    section = {"slos": list(cap["slo"]), "conns": conns, "size": size, "precision": cap["precision"],
               "duration": cap["duration"], "warmup": cap["warmup"], "max_steps": cap["max_steps"],
               "start": cap["start"], "sweep": list(cap.get("sweep", [])), "confirm": cap.get("confirm", True),
               "models": {}, "complete": True}
    holder["section"] = section
    for model in names:
        closed = next((c["median"]["msgs_per_s"] for c in cells if c["model"] == model and c.get("transport", "tcp") == "tcp"
                       and c["conns"] == conns and c["size"] == size and c["median"]["msgs_per_s"]), None)
        start = max(capacity.MIN_RATE, closed * cap["start"]) if closed else 1000.0
        extra = tuple(matrix["run"].get("server_args", {}).get(model, ()))
        cfg = replace(base, server=model, conns=conns, size=size, server_args=extra, duration=float(cap["duration"]),
                      warmup=float(cap["warmup"]), workers=cell_workers(client_cpus, conns))
        n = [0]

        def measure(rate: float, model=model, cfg=cfg, n=n) -> capacity.Step:
            n[0] += 1
            display.cell(f"capacity {model}: step {n[0]} at {rate:,.0f} msgs/s")
            runner = Runner(replace(cfg, rate=rate), log=lambda msg: None, progress_sink=display.live)
            try:
                doc, _code = runner.execute()
            except (RunError, TargetError) as exc:
                display.advance()
                return capacity.Step(rate=rate, achieved=0.0, latency_us={}, complete=False, verdict=f"error: {exc}")
            doc["bench"] = {"model": model, "capacity_step": n[0], "rate": rate}
            output.write_json(doc, str(out_dir / "capacity" / f"{model}_step{n[0]:02d}.json"))
            display.advance()
            if doc["result"]["incomplete_reason"] == "interrupted":
                raise KeyboardInterrupt
            return capacity.step_of(rate, doc)

        entry = {"closed_loop_msgs_per_s": closed, "start_rate": start}
        section["models"][model] = entry
        try:
            res = capacity.search(measure, slos, start, cap["precision"], max_steps=cap["max_steps"], log=lambda m: None,
                                  confirm=cap.get("confirm", True), confirm_breaks=True, floor=True)
            entry.update(res.as_dict())
            retried = sum(res.retried.values())
            display.log(f"bench: capacity {model}: " + (f"{res.capacity_msgs_per_s:,.0f} msgs/s" if res.capacity_msgs_per_s
                        else "none") + (f" ({res.stopped})" if res.stopped else "") + f", {len(res.steps)} steps"
                        + (f" ({retried} retried)" if retried else ""))
            sweep = []
            if cap.get("sweep") and res.capacity_msgs_per_s:
                for f in cap["sweep"]:
                    step = capacity.judge(measure(f * res.capacity_msgs_per_s), slos)
                    step.phase = "sweep"
                    sweep.append({**asdict(step), "of_capacity": f})
            entry["sweep"] = sweep
        except KeyboardInterrupt:
            entry["interrupted"] = True
            section["complete"] = False
            raise
        finally:
            entry.setdefault("msgs_per_s", None)


class SuiteDisplay:
    """One progress bar for the suite (runs done, time left) and the current run's live line, on stderr."""

    def __init__(self, total: int, per_run_s: float, quiet: bool) -> None:
        self.total = total
        self.done = 0
        self.per_run_s = per_run_s
        self.quiet = quiet
        self.progress = None
        if quiet:
            return
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     TextColumn("left"), TimeRemainingColumn(), TextColumn("{task.description}"),
                                     console=Console(stderr=True), transient=False)
            self.task = self.progress.add_task("", total=total)
            self.progress.start()

    def cell(self, label: str) -> None:
        self.label = label
        if self.progress is not None:
            self.progress.update(self.task, description=label)
        elif not self.quiet:
            left = (self.total - self.done) * self.per_run_s
            print(f"bench: [{self.done + 1}/{self.total}] {label}  (~{left / 60:.1f} min left)", file=sys.stderr, flush=True)

    def live(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=f"{self.label}  {text.strip()}")

    def advance(self) -> None:
        self.done += 1
        if self.done > self.total:  # the capacity searches' steps were estimated
            self.total = self.done
            if self.progress is not None:
                self.progress.update(self.task, total=self.total)
        if self.progress is not None:
            self.progress.advance(self.task)

    def log(self, msg: str) -> None:
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.console.print(msg)
        else:
            print(msg, file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


SERVER_POOLS = {"tcp": "tcp", "tcp-py": "tcp", "unix": "unix", "udp": "udp", "tls": "tls"}  # cell transport -> pool


def paired_plan(matrix: dict, models: list[str], cells: list[tuple[str, int, int]]) -> list[tuple[str, list]]:
    """The matrix's cells grouped by the servers they need (one pool of running servers per group, in the order
    TCP, Unix, UDP, TLS), each cell with its models: [(pool, [(transport, conns, size, models), ...]), ...]."""
    out: dict[str, list] = {}
    for t, c, s in cells:
        ms = cell_models(matrix, models, t)
        if ms:
            out.setdefault(SERVER_POOLS[t], []).append((t, c, s, ms))
    return [(k, out[k]) for k in ("tcp", "unix", "udp", "tls") if k in out]


def run_paired(matrix: dict, models: list[str], cells: list[tuple[str, int, int]], base: LoadConfig,
               client_cpus: tuple[int, ...], server_cpus: tuple[int, ...], out_dir: Path, display: "SuiteDisplay",
               summary: list[dict], info: dict) -> None:
    """The matrix's closed-loop cells in paired rounds (loadgen/suite/rounds.py): per pool, every model's servers
    started once (``instances`` each, apart), one discarded slice per instance, then each cell's rounds. Each
    finished cell's per-model summaries are appended to ``summary`` as they come (Ctrl-C keeps them); each
    model's slices and merged latency histogram go to ``cells/<key>.json``; the idle check and the notes go to
    ``info``."""
    from servers.tls import unavailable_reason as tls_unavailable

    from ..runner import session_certs
    from ..target import ManagedServer
    from . import rounds as rd

    run = matrix["run"]
    reference = run.get("reference", "asyncio-protocol")
    instances = run.get("instances", 2)
    threshold = float(run.get("disturbed_share", DISTURBED_SHARE))
    info.update(rounds=run["rounds"], rounds_main=run.get("rounds_main", run["rounds"]), instances=instances, slice_s=run["slice"], slice_warmup_s=run["slice_warmup"],
                reference=reference, idle={}, host={}, disturbed_share=threshold, notes=[], instance_spread={})
    children = {m: registry.get(m).multiprocess for m in models}
    for pool_name, pool_cells in paired_plan(matrix, models, cells):
        tls_dir, extra_tls, ca = None, (), None
        pool_models = list(dict.fromkeys(m for *_x, ms in pool_cells for m in ms))
        if pool_name == "tls":
            if why := tls_unavailable():
                info["notes"].append(f"TLS cells not run: {why}")
                continue
            tls_dir, certs = session_certs()
            extra_tls, ca = ("--tls-cert", certs.cert, "--tls-key", certs.key), certs.ca

        def start(m, pool_name=pool_name, extra_tls=extra_tls):
            extra = tuple(run.get("server_args", {}).get(m, ())) + extra_tls
            transport = "tcp" if pool_name == "tls" else pool_name
            return ManagedServer(m, "127.0.0.1", None, server_cpus, extra, transport=transport)

        pool = rd.ServerPool(start, pool_models, instances, display.log)
        try:
            display.cell(f"starting {instances} x {len(pool_models)} {pool_name} servers")
            first = True
            for transport, conns, size, ms in pool_cells:
                for m, note in pool.ensure().items():
                    info["notes"].append(f"{cell_key(m, conns, size, transport)}: {note}")
                    display.log(f"bench: {m} ({pool_name}): {note}")
                cfg = rd.slice_config(replace(base, cpus=client_cpus, server_cpus=server_cpus), transport, conns, size,
                                      cell_workers(client_cpus, conns), float(run["slice"]), float(run["slice_warmup"]),
                                      tls_ca=ca)
                over = {"tcp": "", "tls": " over TLS", "tcp-py": " plain (Python engine)"}.get(transport, f" over {transport}")
                label = f"{conns} conns {output.human_size(size)}{over}"
                n_rounds = cell_rounds(run, transport, conns, size)
                display.cell(label)

                def tick(m, r, n_rounds=n_rounds):
                    display.live(f"round {r + 1}/{n_rounds}, {m}")
                    display.advance()

                runs, idle, wall = rd.measure_cell(cfg, ms, pool, n_rounds, children, on_slice=tick, warm=first,
                                                   threshold=threshold, max_reruns=run.get("max_reruns"))
                first = False
                cell_key_ = cell_key("paired", conns, size, transport)
                info["idle"][cell_key_] = {**idle.as_dict(), "wall_s": round(wall, 2)}
                info["host"][cell_key_] = {"transport": transport, "conns": conns, "size": size, **idle.host_dict()}
                if idle.reruns or idle.kept_disturbed:
                    display.log(f"bench: {label}: other processes on the run's CPUs: {len(idle.reruns)} round(s) rerun"
                                + (f", {len(idle.kept_disturbed)} kept disturbed (no reruns left)" if idle.kept_disturbed else ""))
                ref = reference if reference in ms else ms[0]
                for c in rd.summarise(runs, ref, instances, transport, conns, size, bool(idle.kept_disturbed)):
                    hist = c.pop("histogram")
                    key = cell_key(c["model"], conns, size, transport)
                    slices = [None if x is None else {k: v for k, v in asdict(x).items() if k != "histogram"}
                              for x in runs[c["model"]].slices]
                    output.write_json({"schema_version": result.version(result.PAIRED_CELL), "kind": result.PAIRED_CELL,
                                       "bench": {"model": c["model"], "transport": transport, "conns": conns,
                                                 "size": size, "mode": "paired", "rounds": n_rounds},
                                       "result": {"complete": c["status"] == "ok", "histogram_unit": "ns",
                                                  "histogram": hist, "note": "latency of every slice's measured "
                                                  "window, merged"},
                                       "slices": slices,
                                       # rounds rerun because other processes took the run's CPUs: (round, slice)
                                       "discarded": [{"round": r + 1, **{k: v for k, v in asdict(x).items()
                                                                          if k != "histogram"}}
                                                     for r, x in runs[c["model"]].discarded]},
                                      str(out_dir / "cells" / f"{key}.json"))
                    if c["failures"]:
                        display.log(f"bench: {key}: {c['failures'][0]['reason']}")
                    summary.append(c)
        finally:
            pool.stop()
            if tls_dir is not None:
                import shutil

                shutil.rmtree(tls_dir, ignore_errors=True)


class _MatrixDone(Exception):
    """A --cluster suite ends after the matrix (the sections that follow run on one host only)."""


def _summary(cells, matrix, models, docs, fails) -> list[dict]:
    summary = []
    for transport, conns, size in cells:
        for model in cell_models(matrix, models, transport):
            key = cell_key(model, conns, size, transport)
            if key in docs or key in fails:
                summary.append(summarise(model, conns, size, docs.get(key, []), fails.get(key, []), transport))
    return summary


def run_suite(matrix: dict, results_root: Path, only: list[str] | None, quiet: bool,
              engine: str | None = None, cluster: dict | None = None) -> tuple[Path, dict]:
    models, skipped, cells = plan(matrix, only)
    if cluster and any(t == "unix" for t, _c, _s in cells):
        cells = [c for c in cells if c[0] != "unix"]  # noted in the log below
    if not models:
        raise MatrixError("no model can run here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    run = matrix["run"]
    trials = run["trials"]
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = results_root / f"{stamp}-{git_short()}"
    (out_dir / "cells").mkdir(parents=True)
    env = environment()
    base = LoadConfig(duration=float(run["duration"]), warmup=float(run["warmup"]), depth=int(run.get("depth", 1)), quiet=True)
    # the load generator's engine for stream cells (UDP cells always run on the Python engine)
    try:
        stream_engine, engine_note = native.resolve(engine or run.get("engine", "auto"), "tcp", base.depth)
    except ValueError as exc:
        raise MatrixError(f"--engine native: {exc}") from None
    base = replace(base, engine=stream_engine)
    client_cpus, server_cpus = plan_cpus(replace(base, server=models[0]))
    if cluster:  # the load comes from the cluster's hosts; the server has this host to itself
        base = replace(base, cluster=cluster["address"], host=cluster["server_host"],
                       cluster_workers=tuple(cluster["workers"]), max_clock_offset=cluster["max_clock_offset"])
        client_cpus = ()
        server_cpus = tuple(sorted(os.sched_getaffinity(0)))
    paired = run.get("mode", "trials") == "paired" and not cluster
    if paired:
        total = sum(cell_rounds(run, t, c, s) * len(cell_models(matrix, models, t)) for t, c, s in cells)
        per_run = run["slice"] + run["slice_warmup"] + SLICE_OVERHEAD_S
    else:
        total = trials * sum(len(cell_models(matrix, models, t)) for t, _c, _s in cells)
        per_run = base.duration + base.warmup + RUN_OVERHEAD_S
    cap = matrix.get("capacity")
    cap_runs = len(section_models(matrix, "capacity", models)) * (CAPACITY_STEPS_GUESS + len(cap.get("sweep", []))) if cap else 0
    cap_s = cap_runs * (cap["duration"] + cap["warmup"] + RUN_OVERHEAD_S) if cap else 0.0
    conn_models = len(section_models(matrix, "connections", models))
    over_models = len(section_models(matrix, "overload", models))
    if over_models:  # each: a capacity search (~10 steps guessed) and the profile
        from ..profile import parse as parse_profile
        from .overload import config_from_table, profile_text

        ocfg = config_from_table(matrix["overload"])
        cap_s += over_models * (10 * (ocfg.step_s + ocfg.step_warmup_s + RUN_OVERHEAD_S)
                                + parse_profile(profile_text(ocfg), base=1000.0).duration_s)
    display = SuiteDisplay(total + cap_runs + conn_models + over_models, per_run, quiet)
    for m, why in skipped.items():
        display.log(f"bench: skipping {m}: {why}")
    if cluster:
        display.log(f"bench: load from the Dask cluster at {cluster['address']}, servers on {cluster['server_host']}; "
                    "Unix-socket cells, connection scale, capacity searches and overload runs do not run across hosts and are left out")
    if engine_note:
        display.log(f"bench: the load generator uses its Python engine: {engine_note}")
    how = (f"paired rounds: {run['rounds']} rounds ({run.get('rounds_main', run['rounds'])} at the main load) x {run.get('instances', 2)} servers per model, slices of "
           f"{run['slice_warmup']:g} + {run['slice']:g} s: {total} slices" if paired else f"{trials} trials: {total} runs")
    display.log(f"bench: {len(models)} models, {len(cells)} loads, {how}, "
                f"~{(total * per_run + cap_s) / 60:.1f} min"
                + (f" with ~{cap_runs} capacity steps" if cap_runs else "") + f"; server CPUs {','.join(map(str, server_cpus))}, "
                f"load generator CPUs {','.join(map(str, client_cpus))}; writing {out_dir}")
    docs: dict[str, list[dict]] = {}
    fails: dict[str, list[dict]] = {}
    interrupted = False
    cap_holder: dict = {}
    conn_holder: dict = {}
    over_holder: dict = {}
    t_start = time.monotonic()
    paired_cells: list[dict] = []
    paired_info: dict = {}
    try:
        if paired:
            run_paired(matrix, models, cells, base, client_cpus, server_cpus, out_dir, display, paired_cells, paired_info)
        for trial in range(0 if paired else trials):  # interleaved: trial 1 of every cell and model, then trial 2, ...
            for transport, conns, size in cells:
                for model in cell_models(matrix, models, transport):
                    key = cell_key(model, conns, size, transport)
                    over = {"tcp": "", "tls": " over TLS", "tcp-py": " plain (Python engine)"}.get(transport,
                                                                                             f" over {transport}")
                    display.cell(f"{model} {conns} conns {output.human_size(size)}{over} (trial {trial + 1}/{trials})")
                    extra = tuple(run.get("server_args", {}).get(model, ()))
                    cfg = replace(base, server=model, conns=conns, size=size, server_args=extra,
                                  workers=cell_workers(client_cpus, conns),
                                  transport="tcp" if transport in TLS_CELLS else transport,
                                  tls=transport == "tls",
                                  timeout=1.0 if transport == "udp" else base.timeout,
                                  engine="python" if transport in ("udp", *TLS_CELLS) else base.engine)
                    runner = Runner(cfg, log=lambda msg: None, progress_sink=display.live)
                    try:
                        if cluster:
                            from ..modes.cluster import run_cluster

                            runner.server = None
                            doc, _code = run_cluster(cfg, lambda msg: None)
                        else:
                            doc, _code = runner.execute()
                    except (RunError, TargetError) as exc:
                        fails.setdefault(key, []).append({"trial": trial, "reason": str(exc), "doc": None})
                        display.log(f"bench: {key} trial {trial + 1} failed: {exc}")
                        display.advance()
                        continue
                    doc["bench"] = {"model": model, "transport": transport, "conns": conns, "size": size, "trial": trial,
                                    "seq": display.done}
                    output.write_json(doc, str(out_dir / "cells" / f"{key}_t{trial}.json"))
                    res = doc["result"]
                    if res["incomplete_reason"] == "interrupted":
                        raise KeyboardInterrupt
                    if not res["complete"] or res["integrity_failures"]:
                        reason = res["incomplete_reason"] or f"{res['integrity_failures']} integrity failures"
                        tail = runner.server.stderr_tail() if runner.server else ""
                        fails.setdefault(key, []).append({"trial": trial, "reason": reason, "stderr_tail": tail, "doc": doc})
                        display.log(f"bench: {key} trial {trial + 1} failed: {reason}")
                    docs.setdefault(key, []).append(doc)
                    display.advance()
        if cluster:
            raise _MatrixDone
        _after_matrix(display, [
            ("connection scale", conn_holder, lambda: run_connections(matrix, models, base, out_dir, display, conn_holder)),
            ("capacity searches", cap_holder, lambda: run_capacity(
                matrix, models, base, paired_cells if paired else _summary(cells, matrix, models, docs, fails), out_dir,
                display, cap_holder, client_cpus)),
            ("overload runs", over_holder, lambda: run_overload(matrix, models, out_dir, display, over_holder)),
        ])
    except _MatrixDone:
        pass
    except KeyboardInterrupt:
        interrupted = True
        display.log("bench: interrupted; writing the report for the finished measurements")
    finally:
        display.stop()
    summary = paired_cells if paired else _summary(cells, matrix, models, docs, fails)
    suite = {
        "schema_version": SUITE_SCHEMA_VERSION,
        "kind": result.SUITE,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "env": env,
        "matrix": {k: v for k, v in matrix.items()},
        "pinning": {"loadgen_cpus": list(client_cpus), "server_cpus": list(server_cpus)},
        "engine": {"streams": stream_engine, "udp": "python", "note": engine_note},
        "cluster": cluster,
        "models": models,
        "skipped": skipped,
        "mode": "paired" if paired else "trials",
        "paired": paired_info or None,
        "cells": summary,
        "capacity": cap_holder.get("section"),
        "connections": conn_holder.get("section"),
        "overload": over_holder.get("section"),
        "runs_planned": total,
        "runs_done": (sum(c["trials_ok"] + len(c["failures"]) for c in paired_cells) if paired else
                      sum(len(v) for v in docs.values()) + sum(1 for v in fails.values() for f in v if f["doc"] is None)),
        "complete": not interrupted,
        "elapsed_s": round(time.monotonic() - t_start, 1),
    }
    output.write_json(suite, str(out_dir / "suite.json"))
    output.point_latest(results_root, out_dir)
    return out_dir, suite


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m loadgen.suite.bench", description="Run the benchmark matrix and write the report.")
    p.add_argument("--matrix", default="default", help="default, full, or a path to a TOML matrix")
    p.add_argument("--results", default=str(ROOT / "results"), help="where run folders go (default results/)")
    p.add_argument("--models", help="comma-separated subset of the matrix's models")
    p.add_argument("--mode", choices=MODES, help="closed-loop cells in paired rounds (every model's servers running, "
                   "short slices in rotated order, ratios within each round) or in fresh trials (a new server per "
                   "trial, trials interleaved); default: the matrix's [run] mode")
    p.add_argument("--rounds", type=int, metavar="N", help="paired mode: rounds per cell (default: the matrix's)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--quiet-host", action="store_true", help="refuse to start (exit 3) while other processes use "
                   "more than the matrix's disturbed_share (default 5%%) of the CPUs the run pins, naming the busiest")
    p.add_argument("--engine", choices=["auto", "native", "python"],
                   help="the load generator's engine for stream cells (default: the matrix's, else auto)")
    p.add_argument("--cluster", metavar="ADDRESS", help="drive the matrix from the workers of this Dask scheduler "
                   "(tcp://HOST:8786), one client host per worker (loadgen/run.py --cluster)")
    p.add_argument("--cluster-workers", metavar="NAME[,NAME...]", help="--cluster: only these Dask workers")
    p.add_argument("--max-clock-offset", type=float, default=0.010, metavar="SECONDS",
                   help="--cluster: refuse a host whose clock is further off than this (default 0.01)")
    p.add_argument("--server-host", metavar="ADDR", help="--cluster: the address the servers listen on, which every "
                   "client host can reach (this host's address on their network)")
    a = p.parse_args(argv)
    cluster = None
    if (a.cluster_workers or a.server_host) and not a.cluster:
        print("bench: error: --cluster-workers and --server-host apply to --cluster", file=sys.stderr)
        return 2
    if a.cluster:
        from ..modes.cluster import unavailable_reason

        if why := unavailable_reason():
            print(f"bench: error: {why}", file=sys.stderr)
            return 2
        if not a.server_host:
            print("bench: error: --cluster needs --server-host: an address of this host the client hosts can reach",
                  file=sys.stderr)
            return 2
        cluster = {"address": a.cluster, "server_host": a.server_host, "max_clock_offset": a.max_clock_offset,
                   "workers": [x for x in (a.cluster_workers or "").split(",") if x]}
    try:
        matrix = load_matrix(a.matrix)
        if a.mode:
            matrix["run"]["mode"] = a.mode
        if a.rounds is not None:
            matrix["run"]["rounds"] = a.rounds
        check_paired(matrix["run"], matrix["path"])
        if a.quiet_host:
            from ..hostload import HostBusy, require_quiet

            client_cpus, server_cpus = plan_cpus(LoadConfig(server="placeholder"))
            try:
                require_quiet((*client_cpus, *server_cpus), float(matrix["run"].get("disturbed_share", DISTURBED_SHARE)))
            except HostBusy as exc:
                print(f"bench: error: {exc}", file=sys.stderr)
                return 3
        out_dir, suite = run_suite(matrix, Path(a.results), a.models.split(",") if a.models else None, a.quiet, a.engine,
                                   cluster)
    except MatrixError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    from .report import write_report

    paths = write_report(out_dir)
    print(f"bench: {suite['runs_done']}/{suite['runs_planned']} runs in {suite['elapsed_s'] / 60:.1f} min; "
          f"report: {paths['md']} and {paths['html']}", file=sys.stderr)
    print(paths["summary"])
    if not suite["complete"]:
        return 3
    return 0 if all(c["status"] == "ok" for c in suite["cells"]) else 1


if __name__ == "__main__":
    sys.exit(main())
