"""A run as a timeline (issue 26): offered against achieved msgs/s, latency percentiles on a log axis, the
server's CPU and memory, interval by interval, with a ``--profile``'s phases shaded.

    python -m loadgen report results/run.json          # -> results/run.timeline.png
    make report RUN=results/<stamp>                      # every cell that kept its run document: timelines/

Reads only the run document's ``result.timeline`` (loadgen/runner.py ``Runner.timeline``), so any run, old or
new, can be drawn again; a run made before the timeline had per-interval detail draws what it has.
"""

from __future__ import annotations

from pathlib import Path

from ..output import human_size

STEP = {"drawstyle": "steps-pre"}  # each value holds over its interval, which ends at t_s
PHASE_COLOURS = {"spike": "#f4c7c3", "ramp": "#fce8b2", "pause": "#e8eaed"}  # hold: no shade


def phases(timeline: list[dict]) -> list[tuple[str, float, float]]:
    """The profile's phases as (kind, start s, end s) from the intervals' ``phase`` (consecutive equal ones
    merged); [] without a profile."""
    out: list[tuple[str, float, float]] = []
    for e in timeline:
        kind = e.get("phase")
        if kind is None:
            continue
        start = e["t_s"] - (e.get("span_s") or 0.0)
        if out and out[-1][0] == kind and abs(out[-1][2] - start) < 1e-6 + (e.get("span_s") or 0) / 2:
            out[-1] = (kind, out[-1][1], e["t_s"])
        else:
            out.append((kind, start, e["t_s"]))
    return out


def paired_timeline(cell: dict) -> list[dict]:
    """A paired cell's slices (loadgen/suite/paired.py ``Slice``) as timeline entries, one per slice, timed from
    the cell's first slice: msgs/s and p50/p99 of each slice's measured window, the server's CPU over the whole
    slice. [] for a cell written before slices kept their start time."""
    sl = [s for s in cell.get("slices") or [] if s and s.get("started_at") is not None and s.get("wall_s")]
    if not sl:
        return []
    t0 = min(s["started_at"] for s in sl)
    return [{"t_s": s["started_at"] - t0 + s["wall_s"], "span_s": s["wall_s"], "msgs_per_s": s["msgs_per_s"],
             "p50_us": s.get("p50_us"), "p99_us": s.get("p99_us"), "errors": s.get("errors"),
             "server_cpu_pct": 100 * s["server_ns"] / (s["wall_s"] * 1e9) if s.get("server_ns") else None}
            for s in sorted(sl, key=lambda s: s["started_at"])]


def plot_timeline(doc: dict, out: Path, title: str | None = None, points: bool = False) -> Path | None:
    """Draw ``doc``'s timeline into ``out`` (a .png path); None when the run has no timeline. ``points``: one
    marker per entry, no line between them (a paired cell's slices, with idle gaps between them)."""
    tl = (doc.get("result") or {}).get("timeline") or []
    if not tl:
        return None
    step = {"marker": "o", "markersize": 3, "linestyle": "none"} if points else STEP
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [e["t_s"] for e in tl]
    has_server = any(e.get("server_cpu_pct") is not None for e in tl)
    has_rss = any(e.get("server_rss_mb") is not None for e in tl)
    rows = 2 + has_server + has_rss
    fig, axes = plt.subplots(rows, 1, figsize=(11, 2.3 * rows + 1.2), sharex=True)
    ax = axes[0]
    offered = [e.get("offered_per_s") for e in tl]
    if any(x is not None for x in offered):
        ax.plot(t, offered, color="#888888", linestyle="--", linewidth=1.2, label="offered (the schedule)", **STEP)
    ax.plot(t, [e.get("msgs_per_s") for e in tl], color="#1a73e8", linewidth=1.4, label="achieved (echoes back)",
            **step)
    errs = [(e["t_s"], e.get("msgs_per_s") or 0) for e in tl if e.get("errors")]
    if errs:
        ax.scatter([x for x, _ in errs], [y for _, y in errs], color="#d93025", zorder=3, s=14,
                   label="interval with errors")
    ax.set_ylabel("msgs/s")
    ax.legend(fontsize=8, loc="upper right", frameon=False)
    ax = axes[1]
    for key, colour, name in (("p50_us", "#34a853", "p50"), ("p99_us", "#fbbc04", "p99"), ("p999_us", "#d93025", "p99.9")):
        ys = [e.get(key) for e in tl]
        if any(y is not None for y in ys):
            ax.plot(t, ys, color=colour, linewidth=1.2, label=name, **step)
    ax.set_yscale("log")
    ax.set_ylabel("latency (us, from the\nintended send time)")
    ax.legend(fontsize=8, loc="upper right", frameon=False, ncol=3)
    if has_server:
        axes[2].plot(t, [e.get("server_cpu_pct") for e in tl], color="#a142f4", linewidth=1.2, **step)
        axes[2].set_ylabel("server CPU %")
    if has_rss:
        axes[-1].plot(t, [e.get("server_rss_mb") for e in tl], color="#12b5cb", linewidth=1.2)
        axes[-1].set_ylabel("server RSS (MiB)")
    shown = set()
    for kind, a, b in phases(tl):
        colour = PHASE_COLOURS.get(kind)
        if colour is None:
            continue
        for x in axes:
            x.axvspan(a, b, color=colour, alpha=0.6, zorder=0, linewidth=0,
                      label=None if kind in shown or x is not axes[-1] else kind)
        shown.add(kind)
    for x in axes:
        x.grid(True, alpha=0.3)
    axes[-1].set_xlabel("seconds from the cell's first slice (one point per slice; idle between them)" if points
                        else "seconds from the start of measuring")
    if shown:
        axes[-1].legend(fontsize=8, loc="upper right", frameon=False)
    cfg, env = doc.get("config") or {}, doc.get("env") or {}
    what = title or (f"{cfg.get('server') or 'server'}: {cfg.get('conns')} connections x "
                     f"{human_size(cfg.get('size') or 0)}, " + (f"profile {cfg['profile']}" if cfg.get("profile") else
                                                                  f"rate {cfg['rate']:,.0f}/s" if cfg.get("rate") else
                                                                  "closed loop"))
    spans = sorted(e.get("span_s") or 0 for e in tl)
    where = [x for x in (doc.get("timestamp"), env.get("cpu_model")) if x]
    where.append(f"{'slices' if points else 'intervals'} of {round(spans[len(spans) // 2], 2):g} s")
    fig.suptitle(f"{what}\n{', '.join(where)}", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
