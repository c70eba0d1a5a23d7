"""``make bench-loadgen``: how close does the load generator get to a C client, and does it rank servers alike?

In one run it drives the same server model with ``loadgen/run.py`` on each of
its engines (native and python; one worker process) and with the C reference
client (``loadgen/suite/cref``), and prints msgs/s, server CPU us/message and client
CPU us/message for each, and the ratios to the C client. The C client is the
calibration reference, not the load generator: it tells how much of the
machine's capacity each engine reaches.

By default (``--paired ROUNDS``) one server per model stays up and each round
runs every client against it back to back; each ratio is taken within a round
and judged on a distribution-free confidence interval for its median over the
rounds, so a change of the machine's speed between rounds cancels. With
``--trials N`` instead: interleaved trials, a fresh pinned server per run,
medians per client.

Ranking truth: it does the same against a second model (``--versus``,
default asyncio-protocol) and prints, per client, the ratio of the two
models' msgs/s. A load generator that is the bottleneck can invert that
ratio; the native engine's must agree with the C client's.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from ..config import LoadConfig, OneLineParser, parse_size
from ..envinfo import ROOT, environment
from ..runner import plan_cpus
from ..target import CpuSampler, ManagedServer, cpu_delta
from . import cref
from .paired import judge, median_ci


def run_loadgen(model: str, conns: int, size: int, duration: float, warmup: float, engine: str = "auto",
                server=None, client_cpus=None) -> dict:
    """One run.py run: it starts ``model`` itself, or drives the already running ``server`` (a ManagedServer)
    from ``client_cpus``."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "r.json")
        where = (["--server", model] if server is None else
                 ["--host", server.addr[0], "--port", str(server.addr[1]), "--server-pid", str(server.pid),
                  "--cpus", ",".join(map(str, client_cpus))])
        cmd = [sys.executable, str(ROOT / "loadgen" / "run.py"), *where, "--conns", str(conns),
               "--size", str(size), "--duration", str(duration), "--warmup", str(warmup), "--json", path, "--quiet",
               "--engine", engine]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 120)
        if not os.path.exists(path):
            raise RuntimeError(f"loadgen failed ({out.returncode}): {out.stderr.strip()[-300:]}")
        res = json.load(open(path))["result"]
    if out.returncode != 0:
        raise RuntimeError(f"loadgen run not clean ({out.returncode}): {out.stderr.strip()[-300:]}")
    return {"msgs_per_s": res["msgs_per_s"], "server_us_per_msg": res["cpu"]["server_us_per_msg"],
            "client_us_per_msg": res["cpu"]["loadgen_us_per_msg"], "client_pct": res["cpu"]["loadgen_pct"],
            "server_pct": res["cpu"]["server_pct"],
            "events_per_wait": (res.get("engine") or {}).get("events_per_wait")}  # native and C only


def run_cref(binary, model: str, conns: int, size: int, duration: float, warmup: float,
             client_cpus, server_cpus, server=None) -> dict:
    """The C reference client against a fresh ``model`` server, or against the running ``server``."""
    own = server is None
    if own:
        server = ManagedServer(model, "127.0.0.1", None, server_cpus)
    try:
        sampler = CpuSampler([server.pid], children=True)
        proc = subprocess.Popen([str(binary), server.addr[0], str(server.addr[1]), str(conns), str(size), str(duration), str(warmup)],
                                stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.sched_setaffinity(0, set(client_cpus)))
        line = proc.stdout.readline()
        if line.strip() != "measure-start":
            proc.kill()
            raise RuntimeError(f"C client: unexpected output {line!r}")
        s0, t0 = sampler.sample(), time.perf_counter()
        line = proc.stdout.readline()
        s1, t1 = sampler.sample(), time.perf_counter()
        proc.wait(30)
        r = json.loads(line)
        if r["errors"] or r["mismatches"]:
            raise RuntimeError(f"C client saw errors: {r}")
        server_s, _ = cpu_delta(s0, s1)
        n = r["messages"]
        return {"msgs_per_s": n / r["seconds"], "server_us_per_msg": server_s / n * 1e6,
                "client_us_per_msg": r["cpu_s"] / n * 1e6, "client_pct": r["cpu_s"] / r["seconds"] * 100,
                "server_pct": server_s / (t1 - t0) * 100,
                "events_per_wait": r["epoll_events"] / r["epoll_waits"] if r.get("epoll_waits") else None}
    finally:
        if own:
            server.stop()


def _median(rs: list[dict]) -> dict:
    out = {}
    for k in rs[0]:
        vals = [r[k] for r in rs if r[k] is not None]
        out[k] = statistics.median(vals) if vals else None
    return out


def main(argv=None) -> int:
    from ..engine import native

    p = OneLineParser(prog="python -m loadgen.suite.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="uvloop-protocol")
    p.add_argument("--versus", default="asyncio-protocol", help="second model for the ranking check ('' to skip)")
    p.add_argument("--conns", default="10,100", help="comma-separated connection counts (default 10,100)")
    p.add_argument("--size", type=parse_size, default=1024)
    p.add_argument("--duration", type=float, help="seconds measured per run (default 2 paired, 5 with --trials)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per run (default 0.5 paired, 1 with --trials)")
    p.add_argument("--paired", type=int, metavar="ROUNDS", default=10,
                   help="ROUNDS rounds against one running server per model, each round every client back to back "
                        "(order alternating); each ratio is taken within a round, and judged on the confidence "
                        "interval of its median over rounds: a drift or a change of the machine's speed between "
                        "rounds then cancels (default 10)")
    p.add_argument("--trials", type=int,
                   help="instead: TRIALS interleaved trials, a fresh server per run, and the medians of each client")
    p.add_argument("--json", dest="json_path")
    a = p.parse_args(argv)
    if a.trials is not None:
        a.paired = None
    if a.duration is None:
        a.duration = 2.0 if a.paired else 5.0
    if a.warmup is None:
        a.warmup = 0.5 if a.paired else 1.0
    if (a.paired is not None and a.paired < 1) or (a.trials is not None and a.trials < 1) or a.duration <= 0 or a.warmup < 0:
        p.error("--paired and --trials take a positive count, --duration a positive and --warmup a non-negative time")
    binary, reason = cref.build()
    if binary is None:
        print(f"bench-loadgen: C reference client skipped: {reason}", file=sys.stderr)
    if native.UNAVAILABLE:
        print(f"bench-loadgen: native engine skipped: {native.UNAVAILABLE}", file=sys.stderr)
    clients = (["native"] if native.UNAVAILABLE is None else []) + ["python"] + (["C"] if binary else [])
    models = [a.model] + ([a.versus] if a.versus and a.versus != a.model else [])
    client_cpus, server_cpus = plan_cpus(LoadConfig(server=a.model))
    conns_list = [int(c) for c in a.conns.split(",")]
    if a.paired:
        return paired(a, binary, clients, models, conns_list, client_cpus, server_cpus)
    rows: dict[tuple[str, int, str], list[dict]] = {}
    total = len(conns_list) * a.trials * len(clients) * len(models)
    done = 0
    for trial in range(a.trials):  # interleaved: machine drift hits every client alike
        for conns in conns_list:
            for model in models:
                for client in clients:
                    done += 1
                    print(f"bench-loadgen: [{done}/{total}] trial {trial + 1}, {model}, {conns} conns, {client}",
                          file=sys.stderr, flush=True)
                    if client == "C":
                        r = run_cref(binary, model, conns, a.size, a.duration, a.warmup, client_cpus, server_cpus)
                    else:
                        r = run_loadgen(model, conns, a.size, a.duration, a.warmup, engine=client)
                    rows.setdefault((model, conns, client), []).append(r)
    env = environment()
    print(f"\nbench-loadgen: {a.size} B messages, closed loop depth 1, {a.duration:g} s x {a.trials} interleaved trials "
          f"(median), server CPUs {','.join(map(str, server_cpus))}, client CPUs {','.join(map(str, client_cpus))}")
    print(f"{env['cpu_model']}, kernel {env['kernel']}, Python {env['python']}, uvloop {env['uvloop']}, "
          f"commit {(env['git_commit'] or '?')[:12]}\n")
    hdr = (f"{'model':<18} {'conns':>6} {'client':<8} {'msgs/s':>10} {'vs C':>7} {'server us/msg':>14} "
           f"{'client us/msg':>14} {'vs C':>7} {'server %':>9} {'client %':>9} {'events/wait':>12}")
    print(hdr)
    print("-" * len(hdr))
    summary = []
    med = {key: _median(rs) for key, rs in rows.items()}
    for model in models:
        for conns in conns_list:
            ref = med.get((model, conns, "C"))
            for client in clients:
                m = med[(model, conns, client)]
                vs = f"{m['msgs_per_s'] / ref['msgs_per_s']:>6.1%}" if ref else "     -"
                cvs = f"{m['client_us_per_msg'] / ref['client_us_per_msg']:>6.2f}x" if ref else "      -"
                print(f"{model:<18} {conns:>6} {client:<8} {m['msgs_per_s']:>10,.0f} {vs:>7} {m['server_us_per_msg']:>14.2f} "
                      f"{m['client_us_per_msg']:>14.2f} {cvs:>7} {m['server_pct']:>9.1f} {m['client_pct']:>9.1f} "
                      f"{'-' if m['events_per_wait'] is None else format(m['events_per_wait'], '.2f'):>12}")
                summary.append({"model": model, "conns": conns, "client": client, **m,
                                "msgs_vs_c": m["msgs_per_s"] / ref["msgs_per_s"] if ref else None,
                                "client_us_vs_c": m["client_us_per_msg"] / ref["client_us_per_msg"] if ref else None})
            print()
    ranking = []
    if len(models) == 2:
        print(f"ranking: {models[0]} / {models[1]} msgs/s, as each client measured it")
        for conns in conns_list:
            ratios = {c: med[(models[0], conns, c)]["msgs_per_s"] / med[(models[1], conns, c)]["msgs_per_s"] for c in clients}
            text = "  ".join(f"{c} {r:.2f}" for c, r in ratios.items())
            agree = ""
            if "C" in ratios and "native" in ratios:
                off = ratios["native"] / ratios["C"] - 1
                agree = f"   native vs C: {off:+.1%} ({'within' if abs(off) <= 0.05 else 'OUTSIDE'} 5%)"
            print(f"{conns:>6} conns: {text}{agree}")
            ranking.append({"conns": conns, **{f"ratio_{c}": r for c, r in ratios.items()}})
        print()
    if a.json_path:
        with open(a.json_path, "w") as f:
            json.dump({"env": env, "config": vars(a),
                       "rows": {f"{k[0]}/{k[1]}/{k[2]}": v for k, v in rows.items()},
                       "summary": summary, "ranking": ranking}, f, indent=2)
    return 0


def _q(xs: list[float]) -> str:
    """median [confidence interval of the median; the range] of per-round ratios"""
    lo, hi, cover = median_ci(xs)
    s = sorted(xs)
    return f"{statistics.median(s):.3f} [{cover:.0%} CI {lo:.3f}-{hi:.3f}; range {s[0]:.2f}-{s[-1]:.2f}]"


def paired(a, binary, clients, models, conns_list, client_cpus, server_cpus) -> int:
    """--paired: every client back to back against the same running server, round after round; each round's
    ratios (engine vs C; one model vs the other, per client) are taken within the round, then their median."""
    servers = {m: ManagedServer(m, "127.0.0.1", None, server_cpus) for m in models}
    rows: dict[tuple, list[dict]] = {}
    try:
        total = a.paired * len(conns_list) * len(models) * len(clients)
        done = 0
        for rnd in range(a.paired):
            for conns in conns_list:
                for model in models:
                    order = clients if rnd % 2 == 0 else list(reversed(clients))
                    for client in order:
                        done += 1
                        print(f"bench-loadgen: [{done}/{total}] round {rnd + 1}, {model}, {conns} conns, {client}",
                              file=sys.stderr, flush=True)
                        srv = servers[model]
                        if client == "C":
                            r = run_cref(binary, model, conns, a.size, a.duration, a.warmup, client_cpus, server_cpus,
                                         server=srv)
                        else:
                            r = run_loadgen(model, conns, a.size, a.duration, a.warmup, engine=client, server=srv,
                                            client_cpus=client_cpus)
                        rows.setdefault((model, conns, client), []).append(r)
    finally:
        for srv in servers.values():
            srv.stop()
    env = environment()
    print(f"\nbench-loadgen --paired: {a.size} B, closed loop depth 1, {a.paired} rounds of {a.duration:g} s runs "
          f"(one running server per model), server CPUs {','.join(map(str, server_cpus))}, client CPUs "
          f"{','.join(map(str, client_cpus))}; per-round ratios: median [confidence interval of the median; range]")
    print(f"{env['cpu_model']}, kernel {env['kernel']}, Python {env['python']}, commit {(env['git_commit'] or '?')[:12]}\n")
    out = {"env": env, "config": vars(a), "rows": {f"{k[0]}/{k[1]}/{k[2]}": v for k, v in rows.items()}, "pairs": [],
           "targets": []}
    targets = out["targets"]

    def target(what: str, model: str, conns: int, xs: list[float], **bound) -> None:
        verdict = judge(xs, **bound)
        lo, hi, cover = median_ci(xs)
        targets.append({"target": what, "model": model, "conns": conns, "verdict": verdict,
                        "median": statistics.median(xs), "ci": [lo, hi], "coverage": cover, "rounds": len(xs)})

    for model in models:
        for conns in conns_list:
            c = rows.get((model, conns, "C"))
            for client in clients:
                rs = rows[(model, conns, client)]
                line = (f"{model:<18} {conns:>5} {client:<7} msgs/s median {statistics.median(r['msgs_per_s'] for r in rs):>9,.0f}"
                        f"  client us/msg {statistics.median(r['client_us_per_msg'] for r in rs):5.2f}"
                        f"  client CPU {statistics.median(r['client_pct'] for r in rs):3.0f}%"
                        f"  server CPU {statistics.median(r['server_pct'] for r in rs):3.0f}%")
                entry = {"model": model, "conns": conns, "client": client,
                         "client_pct": statistics.median(r["client_pct"] for r in rs)}
                if c and client != "C":
                    msgs = [x["msgs_per_s"] / y["msgs_per_s"] for x, y in zip(rs, c)]
                    cus = [x["client_us_per_msg"] / y["client_us_per_msg"] for x, y in zip(rs, c)]
                    sus = [x["server_us_per_msg"] / y["server_us_per_msg"] for x, y in zip(rs, c)]
                    line += f"\n{'':<33}vs C: msgs/s {_q(msgs)}  client us/msg {_q(cus)}  server us/msg {_q(sus)}"
                    entry.update(msgs_vs_c=statistics.median(msgs), client_us_vs_c=statistics.median(cus),
                                 server_us_vs_c=statistics.median(sus), msgs_vs_c_ci=list(median_ci(msgs)[:2]),
                                 client_us_vs_c_ci=list(median_ci(cus)[:2]))
                    if client == "native" and model == models[0]:
                        target("native msgs/s >= 1.00x C", model, conns, msgs, low=1.0)
                        target("native client us/msg <= C", model, conns, cus, high=1.0)
                print(line)
                out["pairs"].append(entry)
            if c:
                busy = statistics.median(r["client_pct"] for r in c)
                targets.append({"target": "C client < 90% busy (the headroom a server-bound verdict needs)",
                                "model": model, "conns": conns, "verdict": "met" if busy < 90 else "missed",
                                "median": busy, "rounds": len(c)})
        print()
    if len(models) == 2:
        print(f"ranking: {models[0]} / {models[1]} msgs/s within each round, as each client measured it")
        for conns in conns_list:
            ratios = {cl: [x["msgs_per_s"] / y["msgs_per_s"] for x, y in zip(rows[(models[0], conns, cl)],
                                                                                 rows[(models[1], conns, cl)])]
                      for cl in clients}
            print(f"{conns:>6} conns: " + "  ".join(f"{cl} {_q(r)}" for cl, r in ratios.items()))
            if "C" in ratios and "native" in ratios:  # round by round: the native engine's ratio over the C client's
                agree = [x / y for x, y in zip(ratios["native"], ratios["C"])]
                print(f"{'':<14}native's ratio / C's, per round: {_q(agree)}")
                target("ranking: native's ratio within 5% of C's", f"{models[0]} / {models[1]}", conns, agree,
                       low=0.95, high=1.05)
            out.setdefault("ranking", []).append({"conns": conns, **{f"ratio_{cl}": statistics.median(r)
                                                                     for cl, r in ratios.items()}})
        print()
    if targets:
        print("the issue's targets, judged on the 95% confidence interval of the median over rounds "
              "(met / missed / not told apart / too few rounds):")
        for t in targets:
            value = (f"{t['median']:.3f} [{t['ci'][0]:.3f}-{t['ci'][1]:.3f}]" if "ci" in t
                     else f"{t['median']:.0f}% busy")
            print(f"  {t['verdict']:<15} {t['target']}: {t['model']}, {t['conns']} conns: {value}")
        print()
    if a.json_path:
        with open(a.json_path, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
