"""Turn a run folder's JSON into plots, ``report.md`` and a self-contained ``report.html``.

    python -m loadgen.suite.report results/latest

Reads only the JSON (``suite.json`` and ``cells/*.json``), so a report can be
regenerated, or restyled, long after the run.
"""

from __future__ import annotations

import base64
import html
import json
import sys
from pathlib import Path

from hdrh.histogram import HdrHistogram

from ..modes.capacity import Stop, parse_slo
from ..output import human_size
from ..result import PAIRED_CELL, RUN, SUITE, DocumentError, check
from ..stats import BUSY

GO_REFERENCE = "go"  # the study's own server: each ranking table gives every model's server CPU relative to it
# How far one model's capacity at p99 <= 1 ms moves between default `make bench` runs here, beyond its own
# bracket: three runs on 2026-11-23 put most models within +-30% of their middle value (and two searches far
# below it, on a slower stretch of the shared VM). Capacities closer than this are called tied in the summary.
CAPACITY_NOISE = 0.30
SPECTRUM_PERCENTILES = [50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999]


class ReportError(Exception):
    pass


class HostNotQuiet(ReportError):
    """``--readme`` on a run that cannot show its host was quiet."""


def load_run(run_dir: Path) -> tuple[dict, list[dict]]:
    path = run_dir / "suite.json"
    try:
        suite = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path} not found: is {run_dir} a bench run folder?") from None
    try:
        check(suite, SUITE, path)
    except DocumentError as exc:
        raise ReportError(str(exc)) from None
    docs = []
    for p in sorted((run_dir / "cells").glob("*.json")):
        d = json.loads(p.read_text())
        try:
            check(d, PAIRED_CELL if d.get("kind") == PAIRED_CELL else RUN, p)
        except DocumentError as exc:
            raise ReportError(str(exc)) from None
        docs.append(d)
    return suite, docs


def _cells(suite, transport: str = "tcp", **match):
    """Summary cells of ``transport`` (the sweeps are TCP) matching every ``key=value``."""
    return [c for c in suite["cells"] if c.get("transport", "tcp") == transport and all(c[k] == v for k, v in match.items())]


TRANSPORT_NAMES = {"tcp": "TCP", "unix": "Unix", "udp": "UDP"}


def _transport_load(suite):
    """(transports, conns, size, models) of the transport comparison, or None when the matrix has none."""
    tr = suite["matrix"].get("transports")
    if not tr:
        return None
    others = [t for t in tr["compare"] if t != "tcp"]
    models = [m for m in suite["models"]
              if any(_cells(suite, t, model=m, conns=tr["conns"], size=tr["size"]) for t in others)]
    return tr["compare"], tr["conns"], tr["size"], models


def _sweep(suite, name):
    for s in suite["matrix"]["sweep"]:
        if s["name"] == name:
            return s
    return None


# -- plots ------------------------------------------------------------------------------------

def _style(ax, title, xlabel, ylabel):
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)


def _plain_log_axis(axis) -> None:
    """Log-scale tick labels as plain numbers (120, 1,000, 5,000) instead of 10^n."""
    import matplotlib.ticker as mt

    fmt = mt.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    axis.set_major_formatter(fmt)
    axis.set_minor_locator(mt.LogLocator(subs=(2, 5)))
    axis.set_minor_formatter(fmt)


def _model_styles(models):
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    markers = "osD^vP*Xhp"
    return {m: {"color": cmap(i % 10), "marker": markers[i % len(markers)]} for i, m in enumerate(models)}


def _save(fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=110)
    fig.savefig(out / f"{name}.svg")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f"{name}.png"


def _subtitle(suite) -> str:
    env, pin = suite["env"], suite["pinning"]
    eng = suite.get("engine") or {"streams": "python"}  # suites before the native engine: Python
    load = (f"load from the Dask cluster {suite['cluster']['address']}" if suite.get("cluster")
            else f"load generator CPUs {','.join(map(str, pin['loadgen_cpus']))}")
    return (f"{env['cpu_model']} | server CPUs {','.join(map(str, pin['server_cpus']))}, {load} "
            f"({eng['streams']} engine) | Python {env['python']}, "
            f"uvloop {env['uvloop']} | "
            f"{(env['git_commit'] or '?')[:10]}")


HOLLOW_NOTE = "hollow marker = load generator saturated (client-bound or both-saturated): not the server's limit"


class _Plots:
    """What every plot of a run needs: the suite, its cell documents, where to write, the models' styles."""

    def __init__(self, suite: dict, docs: list[dict], out: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.matplotlib, self.plt = matplotlib, plt
        self.suite, self.docs, self.out = suite, docs, out
        self.models = suite["models"]
        self.sty = _model_styles(self.models)
        self.sub = _subtitle(suite)
        self.conn_sweep = _sweep(suite, "connections")
        self.size_sweep = _sweep(suite, "message size")

    def line(self, ax, model, xs, cells, get, err=None):
        """One model's line over a sweep; a hollow marker where the load generator was saturated."""
        sty = self.sty
        pts = [(x, c) for x, c in zip(xs, cells) if c is not None and get(c) is not None]
        if not pts:
            return
        x = [p[0] for p in pts]
        y = [get(p[1]) for p in pts]
        ax.plot(x, y, color=sty[model]["color"], label=model, linewidth=1.6)
        for xi, c in pts:
            client_bound = c["verdict"] in ("client-bound", "both-saturated")
            ax.plot([xi], [get(c)], marker=sty[model]["marker"], color=sty[model]["color"], markersize=6,
                    markerfacecolor="white" if client_bound else sty[model]["color"], linestyle="none")
            if err:
                lo, hi = err(c)
                if lo is not None:
                    ax.vlines(xi, lo, hi, color=sty[model]["color"], alpha=0.6, linewidth=2.5)


def plot_throughput_vs_conns(cx: _Plots) -> str | None:
    """Closed-loop msgs/s against connections, one line per model."""
    suite, models, sub, out, plt = cx.suite, cx.models, cx.sub, cx.out, cx.plt
    if not cx.conn_sweep:
        return None
    size, xs = cx.conn_sweep["sizes"][0], cx.conn_sweep["conns"]
    matplotlib = cx.matplotlib
    # 1. throughput vs connections
    fig, ax = plt.subplots(figsize=(9, 5.2))
    for m in models:
        cells = [next(iter(_cells(suite, model=m, conns=c, size=size)), None) for c in xs]
        sp = lambda c: ((c["spread"]["msgs_per_s"] or {}).get("min"), (c["spread"]["msgs_per_s"] or {}).get("max"))
        cx.line(ax, m, xs, cells, lambda c: c["median"]["msgs_per_s"], sp)
    ax.set_xscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:,.0f}k"))
    _style(ax, f"Throughput vs connections ({human_size(size)} messages, median of trials, bars = min..max)\n{sub}",
           "concurrent connections (log scale)", "echoed messages per second")
    ax.legend(fontsize=8, ncol=2, title=HOLLOW_NOTE, title_fontsize=7)
    return _save(fig, out, "throughput_vs_conns")

    return None


def plot_server_cpu_per_msg(cx: _Plots) -> str | None:
    """Server CPU per message per model, one bar per connection count."""
    suite, models, sub, out, plt = cx.suite, cx.models, cx.sub, cx.out, cx.plt
    if not cx.conn_sweep:
        return None
    size, xs = cx.conn_sweep["sizes"][0], cx.conn_sweep["conns"]
    # 2. server CPU us per message by model
    fig, ax = plt.subplots(figsize=(9, 5.2))
    width = 0.8 / len(xs)
    cmap = plt.get_cmap("viridis")
    for j, c in enumerate(xs):
        vals = []
        for m in models:
            cell = next(iter(_cells(suite, model=m, conns=c, size=size)), None)
            vals.append(cell["median"]["server_us_per_msg"] if cell and cell["median"]["server_us_per_msg"] else 0)
        pos = [i + (j - (len(xs) - 1) / 2) * width for i in range(len(models))]
        ax.bar(pos, vals, width=width * 0.95, color=cmap(j / max(1, len(xs) - 1) * 0.85), label=f"{c} conns")
    ax.set_xticks(range(len(models)), models, rotation=20, ha="right")
    ax.text(0.01, 0.97, "at 1 connection the server mostly waits: each message also pays for waking up from idle",
            transform=ax.transAxes, fontsize=7, color="grey", va="top")
    _style(ax, f"Server CPU per message ({human_size(size)}; lower is better; fair even when the client is the limit)\n{sub}",
           "server model", "server CPU microseconds per message")
    ax.legend(fontsize=8, title="load", title_fontsize=8)
    return _save(fig, out, "server_cpu_per_msg")

    return None


def plot_p99_vs_conns(cx: _Plots) -> str | None:
    """p99 against connections, one line per model."""
    suite, models, sub, out, plt = cx.suite, cx.models, cx.sub, cx.out, cx.plt
    if not cx.conn_sweep:
        return None
    size, xs = cx.conn_sweep["sizes"][0], cx.conn_sweep["conns"]
    # 4. p99 latency vs connections
    fig, ax = plt.subplots(figsize=(9, 5.2))
    for m in models:
        cells = [next(iter(_cells(suite, model=m, conns=c, size=size)), None) for c in xs]
        sp = lambda c: ((c["spread"]["p99_us"] or {}).get("min"), (c["spread"]["p99_us"] or {}).get("max"))
        cx.line(ax, m, xs, cells, lambda c: c["median"]["p99_us"], sp)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.minorticks_off()
    _plain_log_axis(ax.yaxis)
    _style(ax, f"p99 latency vs connections ({human_size(size)}, closed loop: latency grows with queueing)\n{sub}",
           "concurrent connections (log scale)", "p99 round-trip latency, microseconds (log scale)")
    ax.legend(fontsize=8, ncol=2, title=HOLLOW_NOTE, title_fontsize=7)
    return _save(fig, out, "p99_vs_conns")

    return None


def plot_latency_spectrum(cx: _Plots) -> str | None:
    """The latency percentile spectrum at the main load, every slice or trial merged."""
    suite, models, sty, sub, out, plt = cx.suite, cx.models, cx.sty, cx.sub, cx.out, cx.plt
    docs = cx.docs
    # 3. latency percentile spectrum at one load
    load = suite["matrix"]["run"].get("spectrum_load") or {"conns": 10, "size": 1024}
    fig, ax = plt.subplots(figsize=(9, 5.2))
    drew = False
    for m in models:
        hs = [d["result"]["histogram"] for d in docs if d.get("bench", {}).get("model") == m
              and d["bench"].get("transport", "tcp") == "tcp" and d["bench"]["conns"] == load["conns"] and d["bench"]["size"] == load["size"]
              and d["result"]["complete"] and d["result"]["histogram"]]
        if not hs:
            continue
        h = HdrHistogram.decode(hs[0])
        for e in hs[1:]:
            h.add(HdrHistogram.decode(e))
        total = h.get_total_count()
        ps = [p for p in SPECTRUM_PERCENTILES if total * (1 - p / 100) >= 1] or [50]
        xs_ = [1 / (1 - p / 100) for p in ps]
        ys = [h.get_value_at_percentile(p) / 1000 for p in ps]
        ax.plot(xs_, ys, color=sty[m]["color"], marker=sty[m]["marker"], markersize=4, label=f"{m} ({total:,} samples)")
        drew = True
    if drew:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [p for p in SPECTRUM_PERCENTILES if p in (50, 90, 99, 99.9, 99.99, 99.999)]
        ax.set_xticks([1 / (1 - p / 100) for p in ticks], [f"{p:g}%" for p in ticks])
        ax.minorticks_off()
        _plain_log_axis(ax.yaxis)
        ax.axhline(5000, color="grey", linestyle=":", linewidth=1)
        ax.text(2.2, 5000 * 1.1, "~5 ms: one timer tick on this VM; tail values below this line are noise",
                fontsize=7, color="grey")
        _style(ax, f"Latency by percentile, {load['conns']} connections x {human_size(load['size'])} (all trials merged)\n{sub}",
               "percentile (log scale of 1/(1-p))", "round-trip latency, microseconds (log scale)")
        ax.legend(fontsize=8)
        return _save(fig, out, "latency_spectrum")
    else:
        plt.close(fig)

    return None


def plot_mbps_vs_size(cx: _Plots) -> str | None:
    """MB/s against message size, one line per model."""
    suite, models, sub, out, plt = cx.suite, cx.models, cx.sub, cx.out, cx.plt
    if not cx.size_sweep:
        return None
    c, xs = cx.size_sweep["conns"][0], cx.size_sweep["sizes"]
    fig, ax = plt.subplots(figsize=(9, 5.2))
    for m in models:
        cells = [next(iter(_cells(suite, model=m, conns=c, size=s)), None) for s in xs]
        cx.line(ax, m, xs, cells, lambda cc: cc["median"]["mb_per_s"])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(xs, [human_size(s) for s in xs])
    ax.minorticks_off()
    _plain_log_axis(ax.yaxis)
    _style(ax, f"Throughput vs message size ({c} connections; MB/s echoed, each direction)\n{sub}",
           "message size (log scale)", "MB/s (10^6 bytes/s, log scale)")
    ax.legend(fontsize=8, ncol=2, title=HOLLOW_NOTE, title_fontsize=7)
    return _save(fig, out, "mbps_vs_size")

    return None


def plot_transports(cx: _Plots) -> str | None:
    """TCP vs Unix socket vs UDP at one load: msgs/s and server CPU per message."""
    suite, sub, out, plt = cx.suite, cx.sub, cx.out, cx.plt
    # 6. transports: TCP vs Unix vs UDP at one load
    tl = _transport_load(suite)
    if tl and tl[3]:
        transports, conns, size, tmodels = tl
        import matplotlib.ticker as mt
        import numpy as np

        fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
        width = 0.8 / len(transports)
        pos = np.arange(len(tmodels))
        shades = {"tcp": "#4c72b0", "unix": "#55a868", "udp": "#dd8452"}
        for ax, metric, label in ((axes[0], "msgs_per_s", "echoes/s (median)"),
                                  (axes[1], "server_us_per_msg", "server CPU us per echo (median)")):
            for j, t in enumerate(transports):
                cells = [next(iter(_cells(suite, t, model=m, conns=conns, size=size)), None) for m in tmodels]
                vals = [c["median"][metric] if c and c["median"][metric] is not None else 0 for c in cells]
                hatch = ["//" if c and c["client_bound_trials"] else "" for c in cells]
                bars = ax.bar(pos + (j - (len(transports) - 1) / 2) * width, vals, width=width * 0.95,
                              color=shades.get(t, "grey"), label=TRANSPORT_NAMES.get(t, t))
                for b, h in zip(bars, hatch):
                    b.set_hatch(h)
                    b.set_edgecolor("white" if h else b.get_facecolor())
            ax.set_xticks(pos, tmodels, rotation=25, ha="right", fontsize=8)
            ax.yaxis.set_major_formatter(mt.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 100 else f"{v:g}"))
            _style(ax, label, "", label)
            ax.legend(fontsize=8, title="hatched = client-bound", title_fontsize=7)
        fig.suptitle(f"Transports at {conns} connections x {human_size(size)}: TCP vs Unix socket vs UDP "
                     f"(models that claim each)\n{sub}", fontsize=10, x=0.01, ha="left")
        return _save(fig, out, "transports")

    return None


def plot_latency_vs_load(cx: _Plots) -> str | None:
    """Latency against offered load: every step of the capacity searches (invalid steps apart)."""
    suite, sty, sub, out, plt = cx.suite, cx.sty, cx.sub, cx.out, cx.plt
    # 7. latency against offered load (the capacity searches' steps, and the sweep's)
    cap = suite.get("capacity")
    curves = {m: load_curve(e) for m, e in ((cap or {}).get("models") or {}).items()}
    if any(curves.values()):
        import matplotlib.ticker as mt

        fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), sharex=True, sharey=True)
        slos = {}
        for t in cap["slos"]:
            from ..modes.capacity import parse_slo

            slo = parse_slo(t)
            slos[slo.percentile] = slo.limit_us
        for ax, (key, label) in zip(axes, (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"))):
            for m, pts in curves.items():
                valid = [(r, lat[key]) for r, lat, ok in pts if ok and lat.get(key)]
                invalid = [(r, lat[key]) for r, lat, ok in pts if not ok and lat.get(key)]
                st = sty.get(m) or {"color": "grey", "marker": "o"}
                if valid:
                    ax.plot([p[0] for p in valid], [p[1] for p in valid], color=st["color"], marker=st["marker"],
                            markersize=4, linewidth=1.4, label=m)
                if invalid:
                    ax.plot([p[0] for p in invalid], [p[1] for p in invalid], color=st["color"], marker="x",
                            markersize=6, linestyle="none")
            if key in slos:
                ax.axhline(slos[key], color="red", linestyle="--", linewidth=1)
                ax.text(0.01, slos[key] * 1.08, f"SLO {label} <= {slos[key]:,.0f} us", transform=ax.get_yaxis_transform(),
                        color="red", fontsize=8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            _plain_log_axis(ax.yaxis)
            kfmt = mt.FuncFormatter(lambda v, _: f"{v / 1000:,.0f}k" if v >= 1000 else f"{v:,.0f}")
            ax.xaxis.set_major_formatter(kfmt)
            ax.xaxis.set_minor_locator(mt.LogLocator(subs=(2, 5)))
            ax.xaxis.set_minor_formatter(kfmt)
            _style(ax, f"{label} (corrected)", "offered load, msgs/s (log scale)", "latency, microseconds (log scale)")
        axes[0].legend(fontsize=8, title="x = invalid step (client-bound, short, failed)", title_fontsize=7)
        fig.suptitle(f"Latency against offered load, open loop, {cap['conns']} connections x {human_size(cap['size'])}: "
                     f"every step of the capacity searches" + (" and sweeps" if cap.get("sweep") else "") + f" ({cap['duration']:g} s each after {cap['warmup']:g} s warm-up)\n{sub}",
                     fontsize=10, x=0.01, ha="left")
        return _save(fig, out, "latency_vs_load")
    return None


def plot_rss_vs_conns(cx: _Plots) -> str | None:
    """Server memory against idle connections (the connection-scale section)."""
    return plot_connections(cx.suite, cx.out, cx.sty, cx.sub)


# every plot of a run, in the report's order: (key, function writing it, returning its file name or None)
PLOTS = [("throughput_vs_conns", plot_throughput_vs_conns), ("server_cpu_per_msg", plot_server_cpu_per_msg),
         ("p99_vs_conns", plot_p99_vs_conns), ("latency_spectrum", plot_latency_spectrum),
         ("mbps_vs_size", plot_mbps_vs_size), ("transports", plot_transports), ("latency_vs_load", plot_latency_vs_load),
         ("rss_vs_conns", plot_rss_vs_conns)]


def plot_all(suite: dict, docs: list[dict], out: Path) -> dict[str, str]:
    """Every plot that the run's data allows: {key: file name}."""
    cx = _Plots(suite, docs, out)
    return {key: name for key, draw in PLOTS if (name := draw(cx))}




def plot_connections(suite: dict, out: Path, sty: dict, sub: str) -> str | None:
    """Server RSS against connections held, one line per model (the connection-scale section)."""
    conn = suite.get("connections")
    if not conn or not any(e.get("levels") for e in conn["models"].values()):
        return None
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.2))
    for m, e in conn["models"].items():
        pts = [(lv["established"], lv["server_rss_bytes"] / 2**20) for lv in e.get("levels") or []
               if lv["server_rss_bytes"] is not None]
        if pts:
            st = sty.get(m) or {"color": "grey", "marker": "o"}
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=st["color"], marker=st["marker"], label=m)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_axis(ax.xaxis)
    _plain_log_axis(ax.yaxis)
    _style(ax, f"Server memory against idle connections held (each proven by an echo; RSS of the server and its "
               f"children)\n{sub}", "connections held (log scale)", "server RSS, MiB (log scale)")
    ax.legend(fontsize=8)
    return _save(fig, out, "rss_vs_conns")


def overload_section(suite: dict) -> tuple[str, list[str], list[str], list[list[str]]] | None:
    """(title, lines above the table: the method, the summary and what stopped it; header, rows) of the overload
    section (``[overload]``, loadgen/suite/overload.py), or None."""
    from . import overload

    sec = suite.get("overload")
    if not sec or not sec.get("entries"):
        return None
    cfg = overload.config_of(sec["config"])
    head, rows = overload.table(cfg, sec["entries"])
    above = [overload.method(cfg)] + overload.summary(sec["entries"])
    if not sec.get("complete", True):
        above.append("**Incomplete**: " + (sec.get("error") or "interrupted") + ".")
    above.append(overload.timeline_links(sec["entries"], "overload/timelines"))
    return f"Overload and recovery: spikes of {', '.join(f'{k:g}x' for k in cfg.spikes)} the capacity at {cfg.slo}", above, head, rows


def connections_table(suite: dict) -> tuple[str, list[str], list[list[str]]] | None:
    conn = suite.get("connections")
    if not conn or not conn.get("models"):
        return None
    rows = []
    for m, e in sorted(conn["models"].items(), key=lambda kv: (kv[1].get("per_conn_bytes") is None,
                                                                 kv[1].get("per_conn_bytes") or 0)):
        if "error" in e:
            rows.append([m, "-", "-", "-", "-", "-", e["error"], "-"])
            continue
        per = e.get("per_conn_bytes")
        lat = e.get("connect_latency_us") or {}
        most = e.get("stopped_at")
        if most is None and e.get("levels"):
            most = max(lv["established"] for lv in e["levels"])
        spread = e.get("spread") or {}
        cps = _num(e.get("connects_per_s"))
        if (e.get("connects_client_pct") or 0) >= 100 * BUSY:  # a lower bound: the client was the limit
            cps = f">= {cps} (client {e['connects_client_pct']:.0f}% busy)"
        rows.append([m, "-" if per is None else f"{per / 1024:,.1f} KiB", cps,
                     _num(lat.get("p99"), "{:,.0f}"),
                     "-" if e.get("held_all_at") is None else f"{e['held_all_at']:,}",
                     "-" if most is None else f"{most:,}",
                     e.get("stopped") or "held every level",
                     f"{spread.get('workers', 1)} x {len(spread.get('source_addrs') or [None])}"])
    levels = ", ".join(f"{n:,}" for n in conn["levels"])
    trickle = f", a trickle echo every {conn['trickle']:g} s" if conn.get("trickle") else ""
    return (f"Connections: memory per idle connection and connects/s (levels {levels}; held {conn['hold']:g} s{trickle})",
            ["model", "server memory per connection", "connects/s", "connect p99 us", "highest level all held",
             "most held", "why it stopped", "client processes x source addresses"], rows)


def load_curve(entry: dict) -> list[tuple[float, dict, bool]]:
    """(planned rate, corrected latency_us, valid) of every step a model's search and sweep ran, by rate; steps that
    could not run (no latency) are left out."""
    steps = list(entry.get("steps") or []) + list(entry.get("sweep") or [])
    pts = [(s["rate"], s["latency_us"] or {}, bool(s["valid"])) for s in steps if s.get("latency_us")]
    return sorted(pts, key=lambda p: p[0])


# -- tables ---------------------------------------------------------------------------------------

def _num(x, fmt="{:,.0f}"):
    return "-" if x is None else fmt.format(x)


FAIRNESS_FROM_CONNS = 1000  # the tables show Jain's index from this many connections on: where starving some shows


def ranking_tables(suite: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """One table per load: (title, header, rows) ranked by throughput, with ratios to the reference."""
    ref = suite["matrix"]["run"].get("reference", "asyncio-protocol")
    loads = []
    for c in _cells(suite):
        if (c["conns"], c["size"]) not in loads:
            loads.append((c["conns"], c["size"]))
    out = []
    cap = suite.get("capacity")
    for conns, size in loads:
        cells = _cells(suite, conns=conns, size=size)
        with_cap = bool(cap) and (cap["conns"], cap["size"]) == (conns, size)
        refc = next((c for c in cells if c["model"] == ref and c["median"]["msgs_per_s"]), None)
        # the study's own server: how far each model is from it, in server CPU per message
        goc = next((c for c in cells if c["model"] == GO_REFERENCE and c["median"]["server_us_per_msg"]), None)
        rows = []
        for c in sorted(cells, key=lambda c: -(c["median"]["msgs_per_s"] or -1)):
            m = c["median"]
            sp = c["spread"]["msgs_per_s"]
            ratio = (f"{m['msgs_per_s'] / refc['median']['msgs_per_s']:.2f}x" if refc and m["msgs_per_s"] else "-")
            cpu_ratio = (f"{m['server_us_per_msg'] / refc['median']['server_us_per_msg']:.2f}x"
                         if refc and m["server_us_per_msg"] and refc["median"]["server_us_per_msg"] else "-")
            go_ratio = (f"{m['server_us_per_msg'] / goc['median']['server_us_per_msg']:.2f}x"
                        if goc and m["server_us_per_msg"] else "-")
            verdict = c["verdict"] or "-"
            if c["client_bound_trials"]:
                verdict = f"**client saturated** ({c['client_bound_trials']}/{c['trials_ok']})"
            status = c["status"] if c["status"] != "ok" else ""
            name = c["model"] + (" (Go reference)" if c["model"].startswith("go") else "")
            rows.append([
                name + (f" ({status})" if status else ""),
                _num(m["msgs_per_s"]),
                f"±{sp['cv'] * 100:.1f}%" if sp and sp["cv"] is not None else "-",
                ratio,
                _num(m["server_us_per_msg"], "{:.2f}"),
                cpu_ratio,
                *([go_ratio] if goc else []),
                _num(m.get("loadgen_us_per_msg"), "{:.2f}"),
                *([capacity_text(cap, c["model"])] if with_cap else []),
                _num(m["p50_us"], "{:,.0f}"),
                _num(m["p99_us"], "{:,.0f}"),
                _num(m["server_pct"], "{:.0f}%"),
                _num(m["loadgen_pct"], "{:.0f}%"),
                *([_num(m.get("jain"), "{:.3f}")] if conns >= FAIRNESS_FROM_CONNS else []),
                verdict,
            ])
        out.append((f"{conns} connections, {human_size(size)} messages",
                    ["model", "msgs/s", "spread (CV)", f"vs {ref}", "server us/msg", f"us/msg vs {ref}",
                     *([f"us/msg vs {GO_REFERENCE}"] if goc else []),
                     "loadgen us/msg", *([f"capacity at {slo_text(cap)}"] if with_cap else []),
                     "p50 us", "p99 us", "server CPU", "loadgen CPU",
                     *(["fairness (Jain)"] if conns >= FAIRNESS_FROM_CONNS else []), "verdict"], rows))
    return out


def slo_text(cap: dict) -> str:
    """``p99 <= 1ms`` from the section's SLOs."""
    return " and ".join(t.replace("=", " <= ", 1) for t in cap["slos"])


def capacity_text(cap: dict | None, model: str) -> str:
    """A model's capacity at the SLO for a table cell: the rate with the bracket it was found in (the highest rate
    that held, the lowest that broke), ``>= rate`` when the search stopped short (a lower bound), ``unstable`` when
    the rate found broke on its confirmation run (``unconfirmed``: no step was left for it), ``none`` when no rate met it, ``none: below the host's floor`` when
    a light load broke it too (confirmed: no capacity is measurable on this host), ``-`` when not searched; then how
    many broken steps were run again before they counted, and how many breaks on an idle server the search went
    above (issue 32: the host's, not the server's)."""
    e = (cap or {}).get("models", {}).get(model)
    if e is None:
        return "-"
    v = e.get("msgs_per_s")
    hi = (e.get("bracket") or [None, None])[1]
    if v is None:  # none: a valid step broke the SLO and none met it; otherwise nothing was measured
        if e.get("stop") == Stop.BELOW_FLOOR:
            text = "none: below the host's floor"
        elif hi is not None:
            text = f"none (< {hi:,.0f})"
        else:
            text = "none" if e.get("host_breaks") else "not measured"
    else:
        text = f"{v:,.0f}" if e.get("complete") else f">= {v:,.0f}"
        if hi is not None:  # the bracket: held at v, broke at hi
            text += f" (< {hi:,.0f})"
        if e.get("confirmed") is False:  # held once, broke when run again: the capacity is not a stable figure
            text += " unconfirmed" if e.get("stop") == Stop.UNCONFIRMED else " unstable"  # (or no step was left)
    n = sum((e.get("retried") or {}).values())
    if n:
        text += f", {n} retried"
    if k := len(e.get("host_breaks") or ()):
        text += f", {k} idle-server break{'s' if k > 1 else ''} set aside"
    return text


def _ms(us: float) -> str:
    return f"{us / 1000:,.2f} ms"


def floor_text(cap: dict | None) -> str | None:
    """The host's latency at a light load, apart from the capacities: each search's first step, at a tenth of its
    start rate, where the server is mostly idle and builds no queue, so the host's wake-up tail is what shows.
    Models whose floor broke the SLO are named, and whether that was confirmed (run again when the search came
    down to it) or one try."""
    models = (cap or {}).get("models") or {}
    rows = [(m, e["floor"]) for m, e in models.items() if (e.get("floor") or {}).get("valid")]
    if not rows:
        return None
    slo = parse_slo(cap["slos"][0])
    label = slo.text.split("=")[0]
    vals = sorted(f["latency_us"][slo.percentile] for _m, f in rows if f["latency_us"].get(slo.percentile) is not None)
    if not vals:
        return None
    rates = sorted(f["rate"] for _m, f in rows)
    lat = _ms(vals[0]) if vals[0] == vals[-1] else f"{vals[0] / 1000:,.2f}-{_ms(vals[-1])}"
    at = f"{rates[0]:,.0f}" if rates[0] == rates[-1] else f"{rates[0]:,.0f}-{rates[-1]:,.0f}"
    over = [f"`{m}`" + ("" if f.get("confirmed") else " (one try)") for m, f in rows if f.get("meets") is False]
    return (f"**The host's latency floor** (apart from the capacities: each search's first step, at a tenth of its "
            f"start rate, the server mostly idle): {label} {lat} at {at} msgs/s"
            + (f"; above {slo_text(cap)} there for " + ", ".join(over) + ": at a light load this host's own "
               "wake-up latency, not the server, decides that percentile" if over else "") + ".")


def transport_table(suite: dict) -> tuple[str, list[str], list[list[str]]] | None:
    """TCP vs Unix vs UDP at one load, one row per model that claims a non-TCP transport."""
    tl = _transport_load(suite)
    if not tl or not tl[3]:
        return None
    transports, conns, size, models = tl
    names = [TRANSPORT_NAMES.get(t, t) for t in transports]
    header = (["model"] + [f"{n} msgs/s" for n in names] + [f"{n} server us/msg" for n in names]
              + [f"{n} vs TCP us/msg" for n, t in zip(names, transports) if t != "tcp"]
              + (["UDP loss"] if "udp" in transports else []) + ["client-bound trials"])
    rows = []
    for m in models:
        cells = {t: next(iter(_cells(suite, t, model=m, conns=conns, size=size)), None) for t in transports}

        def med(t, k):
            c = cells[t]
            return None if c is None else c["median"][k]

        row = [m + (" (Go reference)" if m.startswith("go") else "")]
        row += [_num(med(t, "msgs_per_s")) if cells[t] else "n/a" for t in transports]
        row += [_num(med(t, "server_us_per_msg"), "{:.2f}") if cells[t] else "n/a" for t in transports]
        tcp = med("tcp", "server_us_per_msg") if "tcp" in cells else None
        for t in transports:
            if t != "tcp":
                v = med(t, "server_us_per_msg")
                row.append(f"{v / tcp:.2f}x" if v and tcp else "-")
        if "udp" in transports:
            loss = med("udp", "loss_pct")
            row.append("n/a" if cells["udp"] is None else _num(loss, "{:.3f}%"))
        cb = [f"{TRANSPORT_NAMES.get(t, t)} {cells[t]['client_bound_trials']}/{cells[t]['trials_ok']}"
              for t in transports if cells[t] and cells[t]["client_bound_trials"]]
        row.append(", ".join(cb) or "none")
        rows.append(row)
    return f"Transports: {conns} connections, {human_size(size)} messages", header, rows


def tls_tables(suite: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """Plain TCP against TLS 1.3, per model, at each load of the matrix's ``[tls]`` table: both on the Python
    engine (the native one does not speak TLS), so the difference is the TLS layer's. The server's CPU per message
    is the figure to trust: a Python client pays for TLS too, and is often the one saturated."""
    tl = suite["matrix"].get("tls")
    if not tl:
        return []
    out = []
    for size in tl["sizes"]:
        conns = tl["conns"]
        rows = []
        for c in sorted(_cells(suite, "tls", conns=conns, size=size),
                        key=lambda c: c["median"]["server_us_per_msg"] or float("inf")):
            m = c["model"]
            p = next(iter(_cells(suite, "tcp-py", model=m, conns=conns, size=size)), None)
            pm, tm = (p or {}).get("median", {}), c["median"]
            extra = (tm["server_us_per_msg"] - pm["server_us_per_msg"]
                     if tm.get("server_us_per_msg") and pm.get("server_us_per_msg") else None)
            cb = [f"{name} {x['client_bound_trials']}/{x['trials_ok']}" for name, x in (("plain", p), ("TLS", c))
                  if x and x["client_bound_trials"]]
            rows.append([
                m + (" (Go reference)" if m.startswith("go") else "") + ("" if c["status"] == "ok" else f" ({c['status']})"),
                _num(pm.get("msgs_per_s")), _num(tm["msgs_per_s"]),
                f"{tm['msgs_per_s'] / pm['msgs_per_s']:.2f}x" if tm["msgs_per_s"] and pm.get("msgs_per_s") else "-",
                _num(pm.get("server_us_per_msg"), "{:.2f}"), _num(tm["server_us_per_msg"], "{:.2f}"),
                "-" if extra is None else f"{extra:+.2f}",
                f"{tm['server_us_per_msg'] / pm['server_us_per_msg']:.2f}x"
                if tm.get("server_us_per_msg") and pm.get("server_us_per_msg") else "-",
                _num(tm.get("loadgen_us_per_msg"), "{:.2f}"),
                ", ".join(cb) or "none"])
        out.append((f"TLS 1.3 against plain TCP: {conns} connections, {human_size(size)} messages (both on the Python "
                    f"engine; ranked by server us/msg over TLS)",
                    ["model", "plain msgs/s", "TLS msgs/s", "TLS vs plain", "plain server us/msg",
                     "TLS server us/msg", "TLS cost us/msg", "TLS vs plain us/msg", "TLS loadgen us/msg",
                     "client saturated"], rows))
    return out


def tiers(items: list[tuple[str, float, float, float]], higher_is_better: bool) -> list[list[str]]:
    """Group (name, median, low, high) into tiers, best first: a model joins the tier above when its interval
    (the min..max of its trials, or a capacity's bracket) overlaps that tier's first (best) model's; otherwise
    it starts a tier. Models in one tier are within the leader's measured noise: tied. (Joining on overlap with
    any member would chain: A ties B, B ties C, and A and C, far apart, would be called tied.)"""
    out: list[list[tuple[str, float, float, float]]] = []
    for it in sorted(items, key=lambda x: -x[1] if higher_is_better else x[1]):
        if out and it[2] <= out[-1][0][3] and out[-1][0][2] <= it[3]:
            out[-1].append(it)
        else:
            out.append([it])
    return [[x[0] for x in g] for g in out]


def _tier_text(groups: list[list[str]]) -> str:
    parts = []
    for i, g in enumerate(groups):
        names = ", ".join(f"`{n}`" for n in g)
        tied = " (tied)" if len(g) > 1 else ""
        parts.append(("first: " if i == 0 else "then ") + names + tied)
    return "; ".join(parts)


def main_load(suite: dict) -> tuple[int, int] | None:
    load = suite["matrix"]["run"].get("spectrum_load") or {"conns": 10, "size": 1024}
    if _cells(suite, conns=load["conns"], size=load["size"]):
        return load["conns"], load["size"]
    first = next(iter(_cells(suite)), None)
    return (first["conns"], first["size"]) if first else None


def summary_lines(suite: dict) -> list[str]:
    """The report's opening: what each model costs, what it sustains, where it wins or loses beyond the measured
    spread (models within each other's noise are tied), and where the load generator was the limit."""
    out = []
    load = main_load(suite)
    cap = suite.get("capacity")
    if load and suite.get("mode") == "paired":  # the main load is the report's answer (loadgen/suite/answer.py)
        pass
    elif load:
        conns, size = load
        cells = [c for c in _cells(suite, conns=conns, size=size) if c["median"]["msgs_per_s"]]
        where = f"{conns} connections x {human_size(size)} (closed loop, {suite['matrix']['run']['trials']} trials each)"
        few = [c["model"] for c in cells if (c["spread"]["msgs_per_s"] or {}).get("n", 0) < 2]
        free = [c for c in cells if not c["client_bound_trials"] and c["model"] not in few]
        sat = [c for c in cells if c["client_bound_trials"]]
        if free:
            groups = tiers([(c["model"], c["median"]["msgs_per_s"], c["spread"]["msgs_per_s"]["min"],
                             c["spread"]["msgs_per_s"]["max"]) for c in free], True)
            line = f"**Throughput** at {where}, where the load generator had headroom: {_tier_text(groups)}."
            if sat:
                line += (" Not ranked, because the load generator was saturated in some trial (their msgs/s is a "
                         "lower bound): " + ", ".join(f"`{c['model']}`" for c in sat) + ".")
            out.append(line)
        costed = [c for c in cells if c["median"]["server_us_per_msg"] and (c["spread"]["server_us_per_msg"] or {}).get("n", 0) >= 2]
        if costed:
            groups = tiers([(c["model"], c["median"]["server_us_per_msg"], c["spread"]["server_us_per_msg"]["min"],
                             c["spread"]["server_us_per_msg"]["max"]) for c in costed], False)
            costs = ", ".join(f"`{c['model']}` {c['median']['server_us_per_msg']:.1f}"
                              for c in sorted(costed, key=lambda c: c["median"]["server_us_per_msg"]))
            out.append(f"**Server CPU per message** at {where} (microseconds; lower is cheaper; fair even where the "
                       f"client was the limit): {costs}. Cheapest {_tier_text(groups)}.")
        if few:
            out.append("Too few finished trials to rank: " + ", ".join(f"`{m}`" for m in few) + ".")
    if cap and cap.get("models"):
        ms = cap["models"]
        found = [(m, e) for m, e in ms.items() if e.get("msgs_per_s")]
        lt = slo_text(cap)
        if found:
            items = []
            for m, e in found:  # the bracket widened by the noise between runs: one search cannot show it
                lo, hi = e["bracket"]
                items.append((m, e["msgs_per_s"], lo * (1 - CAPACITY_NOISE),
                              hi * (1 + CAPACITY_NOISE) if hi is not None else float("inf")))
            vals = ", ".join(f"`{m}` {capacity_text(cap, m)}" for m, _v, _l, _h in sorted(items, key=lambda x: -x[1]))
            out.append(f"**Capacity at {lt}** ({cap['conns']} connections x {human_size(cap['size'])}, open loop: the "
                       f"most msgs/s each model takes while {lt}; one search per model, to {cap['precision']:.0%}; "
                       f"`>=` = a lower bound, the search stopped early): {vals}. Largest {_tier_text(tiers(items, True))} "
                       f"(tied = brackets overlap once each is widened by {CAPACITY_NOISE:.0%}, the noise between runs).")
        if ft := floor_text(cap):
            out.append(ft)
        below = [m for m, e in ms.items() if not e.get("msgs_per_s") and e.get("stop") == Stop.BELOW_FLOOR]
        if below:  # its floor step broke the SLO, confirmed: a capacity there would be the host's idle tail, not the server's
            out.append(f"The SLO ({lt}) is below this host's latency at a light load for: " + ", ".join(f"`{m}`" for m in below)
                       + " (each search's floor step broke it, and again when run again): no capacity is measurable here.")
        none = [m for m, e in ms.items() if not e.get("msgs_per_s") and m not in below
                and ((e.get("bracket") or [None, None])[1] is not None or e.get("host_breaks"))]
        if none:
            out.append(f"No rate met {lt} for: " + ", ".join(f"`{m}`" for m in none) + ".")
        unmeasured = [(m, e) for m, e in ms.items() if not e.get("msgs_per_s") and m not in none and m not in below]
        if unmeasured:
            out.append("Capacity not measured (no valid step): " + "; ".join(
                f"`{m}`: {e.get('stopped') or 'interrupted'}" for m, e in unmeasured) + ".")
    sat_cells = [c for c in suite["cells"] if c["client_bound_trials"]]
    if sat_cells:
        by_model: dict[str, list[str]] = {}
        for c in sat_cells:
            by_model.setdefault(c["model"], []).append(f"{c['conns']}x{human_size(c['size'])}{_over(c)}")
        out.append("**Where the load generator was the limit** (these cells measure the client, not the server; "
                   "compare those models by server CPU per message): "
                   + "; ".join(f"`{m}` at {', '.join(v)}" for m, v in by_model.items()) + ".")
    elif suite["cells"]:
        out.append("The load generator had headroom in every cell: every throughput figure is the server's.")
    conn = suite.get("connections")
    if conn and conn.get("models"):
        per = [(m, e["per_conn_bytes"]) for m, e in conn["models"].items() if e.get("per_conn_bytes") is not None]
        if per:
            out.append("**Memory per idle connection** (server RSS growth per connection held; the kernel's socket "
                       "memory is not in RSS): "
                       + ", ".join(f"`{m}` {b / 1024:,.1f} KiB" for m, b in sorted(per, key=lambda x: x[1])) + ".")
        short = [(m, e["stopped"]) for m, e in conn["models"].items() if e.get("stopped") or "error" in e]
        if short:
            out.append("Stopped short of the last connection level: "
                       + "; ".join(f"`{m}`: {why or conn['models'][m].get('error')}" for m, why in short) + ".")
    if out and suite["cells"]:
        out.append("How to use this: for the most messages per second from one core, pick from the first throughput "
                   "tier; where CPU is what you pay for, from the cheapest tier; for a latency target, the capacity "
                   "says how much load a model takes before it is missed. Differences inside a tier are noise.")
    return out


def notes(suite: dict) -> list[str]:
    n = []
    if not suite["complete"]:
        n.append(f"**The run was interrupted**: {suite['runs_done']} of {suite['runs_planned']} measurements finished; "
                 "tables show what finished.")
    for m, why in suite["skipped"].items():
        n.append(f"`{m}` was skipped: {why}.")
    cb = [c for c in suite["cells"] if c["client_bound_trials"]]
    if cb:
        n.append("**Cells where the load generator was saturated** (>= 90% busy: client-bound, or both-saturated when "
                 "the server was busy too; their msgs/s is a lower bound on the server's capacity and does not rank "
                 "servers; compare these models by server CPU us/msg instead): "
                 + ", ".join(f"`{c['model']}` @ {c['conns']}x{human_size(c['size'])}{_over(c)}" for c in cb) + ".")
    for c in suite["cells"]:
        for f in c["failures"]:
            tail = f" Server stderr: `{f['stderr_tail']}`" if f.get("stderr_tail") else ""
            n.append(f"**Failed**: `{c['model']}` @ {c['conns']} conns x {human_size(c['size'])}{_over(c)}, trial {f['trial'] + 1}: "
                     f"{f['reason']}.{tail}")
    if _transport_load(suite):
        n.append("Transports: a Unix socket skips TCP/IP entirely; UDP has no connection, no ordering and no "
                 "retransmission, so its row also gives the loss (datagrams not echoed within 1 s; counted over the "
                 "whole run). UDP echo servers bind loopback by default: an echo reachable from outside can reflect "
                 "spoofed traffic at a victim.")
    cap = suite.get("capacity")
    if cap:
        n.append(f"Capacity at {slo_text(cap)}: per model, one open-loop rate search at {cap['conns']} connections x "
                 f"{human_size(cap['size'])} (loadgen/run.py --find-capacity), starting at {cap['start']:g} x the model's "
                 f"closed-loop msgs/s in this run, each step {cap['warmup']:g} s warm-up + {cap['duration']:g} s on a "
                 f"fresh server, latency corrected for coordinated omission" + (", the rate found run twice (it must hold "
                 "both times)" if cap.get("confirm") else "") + f". Precision: the capacity lies between the "
                 f"highest rate that held and the lowest that broke, {cap['precision']:.0%} apart when the search "
                 "finished; one search does not measure run-to-run noise, and a p99 of 1 ms over a step of a second "
                 "is broken by a single ~10 ms pause (a timer tick, the server's garbage collector), so capacities "
                 f"within {CAPACITY_NOISE:.0%} of each other beyond their brackets are called tied. A step the "
                 "load generator could not offer (saturated, starved of its CPU, or late on its own timers) "
                 "bounds the search from above; one with an error ends it; either way the result is then a lower "
                 "bound, shown `>=`. The latency-versus-load plot shows every step.")
        if not cap.get("complete", True):
            n.append("**The capacity searches were interrupted**: models without a figure were not searched.")
    n.append("Latencies are closed-loop round trips (send to full echo, every byte compared). At 1 connection every "
             "model is latency-bound; differences then show in server CPU us/msg. A p99.99 or max below ~5 ms is one "
             "timer tick on this VM, i.e. noise.")
    return n


def _over(cell) -> str:
    t = cell.get("transport", "tcp")
    return "" if t == "tcp" else f" over {TRANSPORT_NAMES.get(t, t)}"


def _md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def env_rows(suite) -> list[tuple[str, str]]:
    env, pin, run = suite["env"], suite["pinning"], suite["matrix"]["run"]
    return [
        ("CPU", f"{env['cpu_model']} ({env['cpu_count']} CPUs, usable {env.get('usable_cpus')})"),
        ("kernel", f"{env['os']} {env['kernel']}"),
        ("Python", f"{env['python']} ({env['python_implementation']})"),
        ("uvloop", str(env["uvloop"])),
        ("echobench", f"{env['echobench']} @ {env['git_commit']}"),
        ("pinning", f"server CPUs {pin['server_cpus']}, " + (
            f"load from every worker of the Dask cluster {suite['cluster']['address']} (one client host each; "
            "per-host detail in each cell's hosts list)" if suite.get("cluster")
            else f"load generator CPUs {pin['loadgen_cpus']}")),
        ("matrix", f"{Path(suite['matrix']['path']).name}: " + (
            f"paired rounds: {run['rounds']} rounds ({run.get('rounds_main', run['rounds'])} at the main load) x "
            f"({run['slice_warmup']} s warm-up + {run['slice']} s) per cell, "
            f"{run.get('instances', 2)} running servers per model, depth {run.get('depth', 1)}"
            if suite.get("mode") == "paired" else
            f"{run['trials']} trials x ({run['warmup']} s warm-up + {run['duration']} s), depth {run.get('depth', 1)}, "
            "trials interleaved across models, fresh server per run")),
        ("when", f"{suite['timestamp']}, {suite['elapsed_s'] / 60:.1f} min, {suite['runs_done']}/{suite['runs_planned']} runs"),
    ]


def write_report(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    suite, docs = load_run(run_dir)
    plots = plot_all(suite, docs, run_dir)
    paired = suite.get("mode") == "paired"
    answer_text, answer_plot, answer_narrow, cost, paired_notes, host_line = None, None, None, None, [], None
    if paired:
        from . import answer

        host_line = answer.host_text(suite)
        cost = answer.cost_at_commit(run_dir.parent, suite["env"].get("git_commit"))
        load = main_load(suite)
        main_cells = _cells(suite, conns=load[0], size=load[1]) if load else []
        if load:
            answer_text = answer.answer(suite, main_cells, load[0], load[1], cost)
            ref_ = (suite.get("paired") or {}).get("reference")
            answer_plot = answer.plot_cost_split(main_cells, load[0], load[1], ref_, run_dir, _subtitle(suite))
            answer_narrow = answer.plot_cost_split(main_cells, load[0], load[1], ref_, run_dir, "", narrow=True)
        tables = answer.ranking_tables(suite, cost, capacity_text)
        paired_notes = answer.notes(suite, cost, main_cells)
    else:
        tables = ranking_tables(suite)
    ref = suite["matrix"]["run"].get("reference", "asyncio-protocol")
    captions = {
        "throughput_vs_conns": "Throughput vs connections",
        "server_cpu_per_msg": "Server CPU microseconds per message",
        "latency_spectrum": "Latency percentile spectrum",
        "p99_vs_conns": "p99 latency vs connections",
        "mbps_vs_size": "Throughput vs message size",
        "transports": "Transports: TCP vs Unix socket vs UDP",
        "latency_vs_load": "Latency against offered load (open loop)",
        "rss_vs_conns": "Server memory against idle connections",
    }
    ttable = transport_table(suite)
    ctable = connections_table(suite)
    tls_tabs = tls_tables(suite)
    # markdown
    md = [f"# echobench report: {run_dir.name}", ""]
    if host_line:  # the first screen says whether the host was quiet
        md += ["## The host", "", host_line, ""]
    if answer_text:
        md += ["## The answer", "", answer_text, ""]
        if answer_plot:
            md += [f"![Server CPU per message, user and kernel, with 95% intervals]({answer_plot})", ""]
    short = summary_lines(suite)
    if short:
        md += ["## In short", ""] + [f"- {x}" for x in short] + [""]
    md += ["## Environment", "", _md_table(["", ""], [[k, v] for k, v in env_rows(suite)]), ""]
    md += [f"## Ranking by load (ratios to `{ref}`, " + ("taken within each round; [95% intervals])" if paired
                                                           else "measured in the same run)"), ""]
    for title, header, rows in tables:
        md += [f"### {title}", "", _md_table(header, rows), ""]
    if ttable:
        md += [f"## {ttable[0]}", "", _md_table(ttable[1], ttable[2]), ""]
    if ctable:
        md += [f"## {ctable[0]}", "", _md_table(ctable[1], ctable[2]), ""]
    for tab in tls_tabs:
        md += [f"## {tab[0]}", "", _md_table(tab[1], tab[2]), ""]
    over = overload_section(suite)
    if over:
        md += [f"## {over[0]}", "", over[1][0], ""] + [f"- {x}" for x in over[1][1:]] + ["", _md_table(over[2], over[3]), ""]
    md += ["## Notes", ""] + [f"- {x}" for x in paired_notes + notes(suite)] + [""]
    md += ["## Plots", ""]
    for key, fname in plots.items():
        md += [f"### {captions[key]}", "", f"![{captions[key]}]({fname})", ""]
    drawn = draw_timelines(run_dir)
    if drawn:
        md += ["## Timelines", "", "Each cell over time (loadgen/suite/timeline.py): a trials-mode cell's first trial "
               "interval by interval (offered and achieved msgs/s, latency percentiles, server CPU and memory); a "
               "paired cell's slices, one point each where it ran in the run (msgs/s, p50/p99, server CPU):", ""]
        md += [f"- [{name}]({rel})" for name, rel in drawn]
        md += [""]
    (run_dir / "report.md").write_text("\n".join(md))
    # html (self-contained: images embedded)
    h = ["<!doctype html><html><head><meta charset='utf-8'><title>echobench report</title>"
         "<meta name='viewport' content='width=device-width, initial-scale=1'><style>",
         "body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}",
         "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}",
         "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}",
         "th{background:#f0f0f0}img{max-width:100%;border:1px solid #ddd;margin:.5em 0 1.5em}",
         "code{background:#f4f4f4;padding:0 3px}.env td{text-align:left}",
         "@media (max-width:700px){h1{font-size:1.3em;overflow-wrap:anywhere}p,li{font-size:15px}"
         "body{margin:1em auto;padding:0 .5em}table{font-size:11px;display:block;"
         "overflow-x:auto}td,th{padding:2px 4px}}</style></head><body>",
         f"<h1>echobench report: {html.escape(run_dir.name)}</h1>"]
    if host_line:
        h += [f"<h2>The host</h2><p>{_md_inline(host_line)}</p>"]
    if answer_text:
        h += [f"<h2>The answer</h2><p>{_md_inline(answer_text)}</p>"]
        if answer_plot:  # a narrower drawing of the same figure where the page is a phone's width
            data = base64.b64encode((run_dir / answer_plot).read_bytes()).decode()
            small = base64.b64encode((run_dir / answer_narrow).read_bytes()).decode() if answer_narrow else data
            h += [f"<picture><source media='(max-width:700px)' srcset='data:image/png;base64,{small}'>"
                  f"<img alt='Server CPU per message, user and kernel, with 95% intervals' "
                  f"src='data:image/png;base64,{data}'></picture>"]
    if short:
        h += ["<h2>In short</h2><ul>"] + [f"<li>{_md_inline(x)}</li>" for x in short] + ["</ul>"]
    h += ["<h2>Environment</h2><table class='env'>"]
    h += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in env_rows(suite)]
    h += [f"</table><h2>Ranking by load (ratios to <code>{html.escape(ref)}</code>, measured in the same run)</h2>"]
    for title, header, rows in tables:
        h += [f"<h3>{html.escape(title)}</h3><table><tr>" + "".join(f"<th>{html.escape(x)}</th>" for x in header) + "</tr>"]
        for r in rows:
            h += ["<tr>" + "".join(f"<td>{_md_inline(x)}</td>" for x in r) + "</tr>"]
        h += ["</table>"]
    for tab in (ttable, ctable, *tls_tabs):
        if tab:
            h += [f"<h2>{html.escape(tab[0])}</h2><table><tr>" + "".join(f"<th>{html.escape(x)}</th>" for x in tab[1]) + "</tr>"]
            h += ["<tr>" + "".join(f"<td>{_md_inline(x)}</td>" for x in r) + "</tr>" for r in tab[2]]
            h += ["</table>"]
    if over:
        h += [f"<h2>{html.escape(over[0])}</h2><p>{_md_inline(over[1][0])}</p><ul>"]
        h += [f"<li>{_md_inline(x)}</li>" for x in over[1][1:]] + ["</ul><table><tr>"
                                                                   + "".join(f"<th>{html.escape(x)}</th>" for x in over[2]) + "</tr>"]
        h += ["<tr>" + "".join(f"<td>{_md_inline(x)}</td>" for x in r) + "</tr>" for r in over[3]] + ["</table>"]
    h += ["<h2>Notes</h2><ul>"] + [f"<li>{_md_inline(x)}</li>" for x in paired_notes + notes(suite)] + ["</ul><h2>Plots</h2>"]
    for key, fname in plots.items():
        data = base64.b64encode((run_dir / fname).read_bytes()).decode()
        h += [f"<h3>{html.escape(captions[key])}</h3><img alt='{html.escape(captions[key])}' src='data:image/png;base64,{data}'>"]
    h += ["</body></html>"]
    (run_dir / "report.html").write_text("\n".join(h))
    summary = _stdout_summary(tables, answer_text, host_line, ctable, ttable, tls_tabs, over)
    return {"md": run_dir / "report.md", "html": run_dir / "report.html", "plots": plots, "summary": summary}


def draw_timelines(run_dir: Path) -> list[tuple[str, str]]:
    """Every cell's timeline into ``timelines/``: [(cell, relative path)]. A trials-mode cell: its first trial's
    run document, interval by interval. A paired cell: its slices, one point each where they ran in the run."""
    from .timeline import paired_timeline, plot_timeline

    first: dict[str, Path] = {}
    for p in sorted((run_dir / "cells").glob("*.json")):
        key, _, trial = p.stem.rpartition("_t")
        if trial.isdigit() and key:
            if key not in first or int(trial) < int(first[key].stem.rpartition("_t")[2]):
                first[key] = p
        else:  # a paired cell's document is named by its key alone
            first.setdefault(p.stem, p)
    out = []
    suite_file = run_dir / "suite.json"
    suite = json.loads(suite_file.read_text()) if suite_file.exists() else {}
    for key, p in sorted(first.items()):
        doc = json.loads(p.read_text())
        points = doc.get("kind") == PAIRED_CELL
        if points:  # the run's timestamp and host are the suite's
            b = doc.get("bench") or {}
            doc = {"result": {"timeline": paired_timeline(doc)}, "timestamp": suite.get("timestamp", ""),
                   "env": suite.get("env") or {}, "config": {"server": b.get("model"), "conns": b.get("conns"),
                                                             "size": b.get("size")}}
        (run_dir / "timelines").mkdir(exist_ok=True)
        if plot_timeline(doc, run_dir / "timelines" / f"{key}.png", title=key + (" (paired slices)" if points else ""),
                         points=points) is not None:
            out.append((key, f"timelines/{key}.png"))
    return out


def _md_inline(text: str) -> str:
    """The tiny subset of Markdown our notes use (**bold**, `code`) as HTML."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def readme_block(run_dir: Path) -> str:
    """The README's "Current results" from a paired run: where and when it ran, whether the host was quiet, the
    answer and the main load's table. ReportError (one line) for a run whose host was busy at some load or that did
    not measure it: the README quotes quiet runs only."""
    suite, _docs = load_run(run_dir)
    host = (suite.get("paired") or {}).get("host")
    if suite.get("mode") != "paired" or not host:
        raise HostNotQuiet(f"{run_dir}: not a paired run that watched the host (loadgen/hostload.py): the README "
                          "quotes only runs that can show they were quiet")
    busy = [h for h in host.values() if h["disturbed"]]
    if busy:
        raise HostNotQuiet(f"{run_dir}: the host was busy at {len(busy)} of {len(host)} loads (other processes took "
                          "the run's CPUs in rounds that could not be rerun clean): the README quotes quiet runs only")
    paths = write_report(run_dir)
    env = suite["env"]
    when = suite["timestamp"][:10]
    head = (f"`make bench` at commit {(env.get('git_commit') or '?')[:7]}, run `{Path(run_dir).resolve().name}` ({when}), "
            f"on {env.get('cpu_model')}: server on CPU {','.join(map(str, suite['pinning']['server_cpus']))}, load "
            f"generator on CPU {','.join(map(str, suite['pinning']['loadgen_cpus']))}. From the run's `report.md`:")
    body = paths["summary"].split("\n\nTransports")[0].replace("\n| model |", "\n\n| model |", 1)  # a table after a blank line
    return f"{head}\n\n{body}\n"


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    usage = ("usage: python -m loadgen.suite.report RUN_DIR [--readme] | RUN.json  (plots, report.md and report.html "
             "from a run folder's JSON; --readme: print the README's current results from it, a quiet run only; the "
             "timeline of one run document, RUN.timeline.png)")
    if args in (["-h"], ["--help"]):
        print(usage)
        return 0
    readme = "--readme" in args
    args = [a for a in args if a != "--readme"]
    if len(args) != 1 or args[0].startswith("-"):
        why = f"unknown option {args[0]!r}" if args and args[0].startswith("-") else "expected one RUN_DIR or RUN.json"
        print(f"python -m loadgen.suite.report: error: {why} ({usage})", file=sys.stderr)
        return 2
    target = Path(args[0])
    if target.is_file() and not readme:  # one run document: its timeline
        return _timeline_of(target)
    try:
        if readme:
            print(readme_block(target), end="")
            return 0
        paths = write_report(target)
    except ReportError as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return 3 if isinstance(exc, HostNotQuiet) else 2
    print(f"{paths['md']}\n{paths['html']}")
    return 0


def _stdout_summary(tables, answer_text, host_line, ctable, ttable, tls_tabs, over) -> str:
    """What ``make bench`` prints on stdout: whether the host was quiet, the answer, the main load's table and the
    other sections' tables."""
    main_title, main_header, main_rows = next(((t, hd, r) for t, hd, r in tables if t.startswith("10 connections, 1 KiB")),
                                              tables[0] if tables else ("", [], []))
    summary = f"{main_title}\n{_md_table(main_header, main_rows)}" if main_rows else "(no finished measurements)"
    if answer_text:
        summary = f"{answer_text}\n\n{summary}"
    if host_line:
        summary = f"{host_line}\n\n{summary}"
    if not main_rows and ctable:
        summary = f"{ctable[0]}\n{_md_table(ctable[1], ctable[2])}"
    if ttable:
        summary += f"\n\n{ttable[0]}\n{_md_table(ttable[1], ttable[2])}"
    for tab in tls_tabs:
        summary += f"\n\n{tab[0]}\n{_md_table(tab[1], tab[2])}"
    if over:
        summary += f"\n\n{over[0]}\n{_md_table(over[2], over[3])}"
    return summary


def _timeline_of(path: Path) -> int:
    """``RUN.json`` -> ``RUN.timeline.png`` beside it; exit 2 (one line) when it is not a run document with a
    timeline."""
    from .timeline import plot_timeline

    try:
        doc = check(json.loads(path.read_text()), RUN, path)
    except (ValueError, OSError) as exc:
        print(f"report: error: {str(exc).splitlines()[0] if str(exc) else exc}", file=sys.stderr)
        return 2
    out = plot_timeline(doc, path.with_suffix(".timeline.png"))
    if out is None:
        print(f"report: error: {path}: the run has no timeline", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
