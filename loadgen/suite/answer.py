"""The report of a paired-rounds ``make bench`` run: its answer first, one figure, then the tables.

Every figure here comes with its 95% interval: per model, the median over its slices; between models, the median
of the per-round ratio (both measured in the same round), which is what tiers and orders are judged on. The
server's CPU per message is split into user time (the model's own work, what instruction counts see) and kernel
time (the TCP/IP work every model shares, and what moves most with the host).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..output import human_size
from .rounds import tiers

COST_FILE = "cost.json"


def cost_at_commit(results_root: Path, commit: str | None) -> dict | None:
    """The newest ``make bench-cost`` document under ``results_root`` measured at ``commit`` (the same string,
    ``-dirty`` included), or None."""
    if not commit:
        return None
    best = None
    for p in sorted(Path(results_root).glob(f"*/{COST_FILE}")):
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if d.get("kind") == "echobench-cost" or "models" in d:
            if (d.get("env") or {}).get("git_commit") == commit and (best is None or d["timestamp"] > best["timestamp"]):
                best = {**d, "path": str(p)}
    return best


def instructions(cost: dict | None, model: str) -> float | None:
    e = ((cost or {}).get("models") or {}).get(model) or {}
    return e.get("instructions_per_msg")


def pair_tied(cells_by_model: dict[str, dict], metric: str):
    """``is_tied(a, b)`` for :func:`loadgen.suite.rounds.tiers`, from the cells' stored pair intervals."""
    def is_tied(a: str, b: str):
        p = ((cells_by_model[b].get("pairs") or {}).get(metric) or {}).get(a)
        if p is None:
            return None
        return p[1] <= 1.0 <= p[2]
    return is_tied


def cost_tiers(cells: list[dict]) -> list[list[str]]:
    """Cheapest first by server CPU per message, tied when the interval of their per-round ratio includes 1."""
    ok = [c for c in cells if c["median"]["server_us_per_msg"]]
    order = [c["model"] for c in sorted(ok, key=lambda c: c["median"]["server_us_per_msg"])]
    return tiers(order, pair_tied({c["model"]: c for c in ok}, "server_ns_per_msg"))


def throughput_tiers(cells: list[dict]) -> tuple[list[list[str]], list[str]]:
    """(tiers by msgs/s, most first, of the models whose load generator had headroom in every slice; the models
    left out because it was saturated in some slice: their msgs/s is the client's limit, not the server's)."""
    free = [c for c in cells if c["median"]["msgs_per_s"] and not c["client_bound_trials"]]
    sat = [c["model"] for c in cells if c["client_bound_trials"]]
    order = [c["model"] for c in sorted(free, key=lambda c: -c["median"]["msgs_per_s"])]
    return tiers(order, pair_tied({c["model"]: c for c in free}, "msgs_per_s")), sat


def user_tiers(cells: list[dict]) -> list[list[str]]:
    """Cheapest first by user CPU per message; tied when the intervals overlap the tier leader's (the split is
    summed over slices, so there is no per-round ratio to judge)."""
    items = [(c["model"], c["split"]["user_us_per_msg"], *c["split"]["user_ci"]) for c in cells if c.get("split")]
    out: list[list[tuple]] = []
    for it in sorted(items, key=lambda x: x[1]):
        if out and it[2] <= out[-1][0][3] and out[-1][0][2] <= it[3]:
            out[-1].append(it)
        else:
            out.append([it])
    return [[x[0] for x in g] for g in out]


def _names(group: list[str]) -> str:
    return ", ".join(f"`{m}`" for m in group) + (" (tied)" if len(group) > 1 else "")


def _ratio(iv: dict | None) -> str:
    if not iv:
        return "-"
    return f"{iv['median']:.2f}x [{iv['ci'][0]:.2f}-{iv['ci'][1]:.2f}]"


def _load_label(h: dict) -> str:
    over = "" if h.get("transport", "tcp") == "tcp" else f" over {h['transport']}"
    return f"{h['conns']:,} conns x {human_size(h['size'])}{over}"


def host_text(suite: dict) -> str | None:
    """The report's first line: whether the host was quiet while the paired rounds ran (loadgen/hostload.py), and
    where it was not, which loads and how much. None for a run that did not measure it (older runs)."""
    info = suite.get("paired") or {}
    host = info.get("host")
    if not host:
        return None
    thr = info.get("disturbed_share") or 0.0
    reruns = sum(len(h["rerun"]) for h in host.values())
    rerun_at = [f"{len(h['rerun'])} at {_load_label(h)}" for h in host.values() if h["rerun"]]
    names: dict[str, float] = {}
    for h in host.values():
        for n, x in h.get("busiest") or ():
            names[n] = names.get(n, 0.0) + x
    top = ", ".join(f"`{n}`" for n, _x in sorted(names.items(), key=lambda kv: -kv[1])[:3])
    steal = max(((c.get("host") or {}).get("steal_share") or 0.0 for c in suite["cells"]), default=0.0)
    busy = [h for h in host.values() if h["disturbed"]]
    if busy:
        where = "; ".join(f"{_load_label(h)} ({len(h['kept_disturbed'])} of its rounds, up to "
                          f"{max(x['share'] for x in h['kept_disturbed']):.0%})" for h in busy)
        return (f"**The host was busy.** Other processes took more than {thr:.0%} of the run's CPUs in rounds that "
                f"could not be rerun clean at {len(busy)} of {len(host)} loads: {where}. Those loads' figures are "
                f"shown but not tiered or ranked: do not quote them"
                + (f"; the other loads were measured clean ({reruns} disturbed rounds discarded and rerun)" if len(busy) < len(host) else "")
                + f". Busiest other processes: {top or '-'}; the hypervisor's steal up to {steal:.1%} of a load's CPU time.")
    mx = max((h.get("max_round_share") or 0.0 for h in host.values()), default=0.0)
    return (f"**The host was quiet**: in every round kept, other processes took at most {mx:.1%} of the run's CPUs "
            f"(a round beyond {thr:.0%} is discarded and run again"
            + (f"; {reruns} {'was' if reruns == 1 else 'were'}: {', '.join(rerun_at)}, the busiest other processes {top}"
               if reruns else "; none was")
            + f"); the hypervisor's steal at most {steal:.1%} of a load's CPU time.")


def answer(suite: dict, cells: list[dict], conns: int, size: int, cost: dict | None) -> str:
    """The report's one-paragraph answer at its main load: which models are cheapest per message, split into the
    model's own (user) time and the kernel's, what the cheapest one saves against the reference, where each model
    pays, which sustain the most messages, and how sure each statement is."""
    info = suite.get("paired") or {}
    ref = info.get("reference") or suite["matrix"]["run"].get("reference")
    by = {c["model"]: c for c in cells}
    ct = cost_tiers(cells)
    if not ct:
        return "No model finished a slice at the main load: nothing to answer."
    rounds = max(c.get("rounds") or 0 for c in cells)
    if any(c.get("disturbed") for c in cells):
        return (f"At {conns} connections x {human_size(size)} the host was busy (other processes took the run's CPUs "
                f"in rounds that could not be rerun clean): the figures below are shown but not tiered or ranked, "
                f"and this run does not answer which model is cheapest. Run it again on a quiet host.")
    lead = by[ct[0][0]]
    sp = lead.get("split")
    first = (f"At {conns} connections x {human_size(size)}, the cheapest server{'s' if len(ct[0]) > 1 else ''} per "
             f"message {'are' if len(ct[0]) > 1 else 'is'} {_names(ct[0])}: {lead['median']['server_us_per_msg']:.2f} us"
             + (f" ({sp['user_us_per_msg']:.2f} user + {sp['kernel_us_per_msg']:.2f} kernel)" if sp else ""))
    if ref in by and ref not in ct[0]:
        first += f", {_ratio(lead['vs_reference'].get('server_ns_per_msg'))} the CPU of `{ref}`"
    parts = [first + "."]
    if len(ct) > 1:
        rest = "; ".join(_names(g) + (f" {_ratio(by[g[0]]['vs_reference'].get('server_ns_per_msg'))}"
                                      if by[g[0]].get("vs_reference") else " (the reference)") for g in ct[1:])
        parts.append(f"Then, in tiers the intervals tell apart: {rest}.")
    splits = [(c["model"], c["split"]) for c in cells if c.get("split")]
    if splits:
        kern = sorted(s["kernel_us_per_msg"] for _m, s in splits)
        users = sorted(splits, key=lambda x: x[1]["user_us_per_msg"])
        ut = user_tiers(cells)
        parts.append(f"Most of each message's cost is the kernel's TCP work, {kern[0]:.1f}-{kern[-1]:.1f} us for every "
                     f"model; the model's own user time runs from {users[0][1]['user_us_per_msg']:.2f} us "
                     f"(`{users[0][0]}`) to {users[-1][1]['user_us_per_msg']:.2f} us (`{users[-1][0]}`), in "
                     f"{len(ut)} tier{'s' if len(ut) != 1 else ''} whose intervals do not overlap" +
                     ("; where their intervals are apart, in the order of their instruction counts"
                      if cost and _agrees(cells, cost) else "") + ".")
    tt, sat = throughput_tiers(cells)
    if tt:
        parts.append(f"Most messages per second, where the load generator had headroom in every slice: "
                     f"{_names(tt[0])}" + (f" (then {'; '.join(_names(g) for g in tt[1:])})" if len(tt) > 1 else "") + ".")
    if sat:
        parts.append(f"The load generator was saturated in some slice for {', '.join(f'`{m}`' for m in sat)}: their "
                     f"msgs/s is the client's limit, so they are ranked by CPU only.")
    parts.append(f"[Brackets]: 95% intervals of the median over {rounds} rounds in which every model ran, ratios "
                 f"taken within each round.")
    return " ".join(parts)


def _user_points(cells: list[dict], cost: dict) -> list[tuple[str, float, float, list[float]]]:
    pts = [(c["model"], instructions(cost, c["model"]), c["split"]["user_us_per_msg"], c["split"]["user_ci"])
           for c in cells if c.get("split")]
    return [p for p in pts if p[1]]


def _against_counts(cells: list[dict], cost: dict, apart: float = 0.20) -> tuple[int, list[tuple[str, bool]]]:
    """The pairs of models whose instruction counts differ by more than ``apart``: (how many, [(a pair whose user
    times are in the other order, whether their user-time intervals overlap)])."""
    pts = _user_points(cells, cost)
    n, out = 0, []
    for i, (ma, ia, ua, ca) in enumerate(pts):
        for mb, ib, ub, cb in pts[i + 1:]:
            if max(ia, ib) / min(ia, ib) <= 1 + apart:
                continue
            n += 1
            if (ia < ib) != (ua < ub):
                overlap = ca[0] <= cb[1] and cb[0] <= ca[1]
                out.append((f"`{ma}` {ia:,.0f} instructions, {ua:.2f} us user vs `{mb}` {ib:,.0f}, {ub:.2f} us", overlap))
    return n, out


def _agrees(cells: list[dict], cost: dict) -> bool:
    """Whether every pair of models whose counts differ by more than 20% and whose user-time intervals are apart
    is in the counts' order."""
    return all(overlap for _text, overlap in _against_counts(cells, cost)[1])


def disagreements(cells: list[dict], cost: dict, apart: float = 0.20) -> list[str]:
    """Pairs whose instruction counts differ by more than ``apart`` and whose user times are in the other order,
    each saying whether the user-time intervals overlap (then the split's sampling cannot order them)."""
    return [text + (" (user-time intervals overlap)" if overlap else " (user-time intervals apart)")
            for text, overlap in _against_counts(cells, cost, apart)[1]]


def plot_cost_split(cells: list[dict], conns: int, size: int, ref: str | None, out: Path, sub: str,
                    narrow: bool = False) -> str | None:
    """Horizontal bars, cheapest on top: each model's server CPU per message, user (dark) and kernel (light),
    the whisker the 95% interval of the total, tiers alternately shaded and numbered. ``narrow``: the same for a
    phone's width (``cost_split_narrow.png``: larger type, shorter labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [c for c in cells if c["median"]["server_us_per_msg"]]
    if not ok:
        return None
    groups = cost_tiers(ok)
    by = {c["model"]: c for c in ok}
    order = [m for g in groups for m in g]
    tier_of = {m: i for i, g in enumerate(groups) for m in g}
    fig, ax = plt.subplots(figsize=(4.6, 0.42 * len(order) + 2.2) if narrow else (10, 0.4 * len(order) + 2.0))
    ys = list(range(len(order)))[::-1]
    top = max(by[m]["ci"]["server_us_per_msg"]["ci"][1] for m in order)
    for y, m in zip(ys, order):
        c = by[m]
        total = c["median"]["server_us_per_msg"]
        sp = c.get("split")
        user = sp["user_us_per_msg"] if sp else None
        if tier_of[m] % 2 == 1:
            ax.axhspan(y - 0.5, y + 0.5, color="#f2f2f2", zorder=0)
        if user is not None:
            ax.barh(y, user, color="#2b5d8a", height=0.62, zorder=2, label="user (the model's own work)" if y == ys[0] else None)
            ax.barh(y, total - user, left=user, color="#9ec3e6", height=0.62, zorder=2,
                    label="kernel (TCP/IP, wake-ups)" if y == ys[0] else None)
        else:
            ax.barh(y, total, color="#9ec3e6", height=0.62, zorder=2)
        lo, hi = c["ci"]["server_us_per_msg"]["ci"]
        ax.errorbar(total, y, xerr=[[total - lo], [hi - total]], color="black", capsize=3, linewidth=1, zorder=3,
                    label="95% interval of the total" if y == ys[0] else None)
        r = (c.get("vs_reference") or {}).get("server_ns_per_msg")
        if narrow:
            text = f"{total:.1f}" + (f" ({r['median']:.2f}x)" if r else "")
        else:
            text = f"{total:.2f} us" + (f" ({user:.2f} user)" if user is not None else "") + (
                f"  {r['median']:.2f}x {ref}" if r else ("  reference" if m == ref else ""))
        ax.text(hi + top * 0.01, y, text, va="center", fontsize=8)
    ax.set_yticks(ys, [f"{m} [{tier_of[m] + 1}]" if narrow else f"{m}  [tier {tier_of[m] + 1}]" for m in order],
                  fontsize=9)
    ax.set_xlim(0, top * (1.35 if narrow else 1.6))
    ax.set_xlabel("server CPU us per message" if narrow else "server CPU microseconds per message (lower is cheaper)")
    ax.grid(True, axis="x", alpha=0.35)
    if narrow:
        ax.set_title(f"Server CPU per message, {conns} x {human_size(size)}\nuser + kernel; [tier]; (x {ref})",
                     fontsize=9, loc="left")
    else:
        ax.set_title(f"Server CPU per message at {conns} connections x {human_size(size)}: user + kernel, 95% "
                     f"intervals; tiers from paired rounds\n{sub}", fontsize=10, loc="left")
    ax.legend(fontsize=7 if narrow else 8, loc="upper center", bbox_to_anchor=(0.5, -0.14 if narrow else -0.1),
              ncol=1 if narrow else 3, frameon=False)
    fig.tight_layout()
    name = "cost_split_narrow" if narrow else "cost_split"
    fig.savefig(out / f"{name}.png", dpi=110)
    if not narrow:
        fig.savefig(out / f"{name}.svg")
    plt.close(fig)
    return f"{name}.png"


def _ci(iv: dict | None, fmt: str) -> str:
    if not iv:
        return "-"
    return f"{fmt.format(iv['median'])} [{fmt.format(iv['ci'][0])}-{fmt.format(iv['ci'][1])}]"


def ranking_tables(suite: dict, cost: dict | None, capacity_text) -> list[tuple[str, list[str], list[list[str]]]]:
    """One table per TCP load, cheapest server CPU per message first: every figure with its 95% interval, the
    ratios to the reference taken within each round, the split, and instructions per message where
    ``make bench-cost`` ran at this commit."""
    info = suite.get("paired") or {}
    ref = info.get("reference") or suite["matrix"]["run"].get("reference")
    cap = suite.get("capacity")
    loads = []
    for c in suite["cells"]:
        if c.get("transport", "tcp") == "tcp" and (c["conns"], c["size"]) not in loads:
            loads.append((c["conns"], c["size"]))
    out = []
    for conns, size in loads:
        cells = [c for c in suite["cells"] if c.get("transport", "tcp") == "tcp" and (c["conns"], c["size"]) == (conns, size)]
        disturbed = any(c.get("disturbed") for c in cells)  # measured beside other processes: not tiered
        tier_of = {} if disturbed else {m: i + 1 for i, g in enumerate(cost_tiers(cells)) for m in g}
        with_cap = bool(cap) and (cap["conns"], cap["size"]) == (conns, size)
        rows = []
        for c in sorted(cells, key=lambda c: c["median"]["server_us_per_msg"] or float("inf")):
            m, sp, vr = c["median"], c.get("split"), c.get("vs_reference") or {}
            v = c["verdicts"]
            verdict = ", ".join(f"{k} {n}/{c['trials_ok']}" for k, n in v.items()) or "-"
            if c["client_bound_trials"]:
                verdict = f"**client saturated** in {c['client_bound_trials']}/{c['trials_ok']} slices; " + verdict
            if c.get("disturbed"):
                h = c.get("host") or {}
                verdict = (f"**disturbed**: other processes took {max(h.get('server_foreign_share', 0), h.get('loadgen_foreign_share', 0)):.0%} "
                           f"of a side's CPU; " + verdict)
            status = "" if c["status"] == "ok" else f" ({c['status']})"
            rows.append([
                c["model"] + status, str(tier_of.get(c["model"], "-")),
                _ci(c["ci"]["server_us_per_msg"], "{:.2f}"),
                "-" if not sp else f"{sp['user_us_per_msg']:.2f} [{sp['user_ci'][0]:.2f}-{sp['user_ci'][1]:.2f}]",
                *([f"{instructions(cost, c['model']):,.0f}" if instructions(cost, c["model"]) else "-"] if cost else []),
                "-" if not sp else f"{sp['kernel_us_per_msg']:.2f}",
                "reference" if c["model"] == ref else _ratio(vr.get("server_ns_per_msg")),
                _ci(c["ci"]["msgs_per_s"], "{:,.0f}"),
                "reference" if c["model"] == ref else _ratio(vr.get("msgs_per_s")),
                *([capacity_text(cap, c["model"])] if with_cap else []),
                _ci(c["ci"]["p50_us"], "{:,.0f}"), _ci(c["ci"]["p99_us"], "{:,.0f}"),
                _ci(c["ci"]["loadgen_us_per_msg"], "{:.2f}"),
                *([f"{m['jain']:.3f}" if m.get("jain") is not None else "-"] if conns >= 1000 else []),
                verdict,
            ])
        out.append((f"{conns} connections, {human_size(size)} messages" + (" (host busy: not tiered)" if disturbed else ""),
                    ["model", "tier", "server us/msg", "user us/msg", *(["instructions/msg"] if cost else []),
                     "kernel us/msg", f"us/msg vs {ref}", "msgs/s", f"msgs/s vs {ref}",
                     *([f"capacity at {' and '.join(t.replace('=', ' <= ', 1) for t in cap['slos'])}"] if with_cap else []),
                     "p50 us", "p99 us", "loadgen us/msg", *(["fairness (Jain)"] if conns >= 1000 else []), "verdict"],
                    rows))
    return out


def notes(suite: dict, cost: dict | None, main_cells: list[dict]) -> list[str]:
    """What the paired design did in this run, and what it found about itself: the idle check, how far a model's
    two server instances were apart, models whose rounds stopped."""
    info = suite.get("paired") or {}
    n = [f"**How this was measured**: per transport, every model's server was started {info.get('instances')} times "
         f"(instances apart in time) and kept running, pinned to the server CPUs; per cell, {info.get('rounds')} rounds "
         f"({info.get('rounds_main', info.get('rounds'))} at the main load), "
         f"each visiting every model once in an order rotated by one per round, for a slice of "
         f"{info.get('slice_warmup_s'):g} s warm-up + {info.get('slice_s'):g} s measured, forwards and backwards in "
         f"turn; round r used instance (r // 2) mod {info.get('instances')}. Server CPU is the process CPU clock over the whole slice divided by every message "
         f"echoed in it; user/kernel from utime/stime summed over the cell's slices (clock ticks: the share's interval "
         f"is a Wilson interval on the tick count). Ratios between models are taken within each round, so a change "
         f"of the host's speed that lasts a round cancels; the interval is the distribution-free 95% interval of the "
         f"median over rounds. Tied = that interval includes 1."]
    idle = info.get("idle") or {}
    if idle:
        worst = max(idle.values(), key=lambda x: x.get("worst_cpu_fraction") or 0)
        total = sum((x.get("cpu_fraction") or 0) for x in idle.values()) / len(idle)
        n.append(f"Idle servers (every other model's, while one was measured; the one measured just before is left "
                 f"out while it closes its connections) used {total:.4%} of a CPU on average; the most, "
                 f"{worst.get('worst_cpu_fraction', 0):.4%}, by `{worst.get('worst_model') or '-'}`.")
    spreads = {c["model"]: c["instance_spread"] for c in main_cells if c.get("instance_spread") is not None}
    if spreads:
        far = max(spreads.items(), key=lambda kv: abs(kv[1]))
        n.append("Instance to instance (a model's second server against its first, server CPU per message relative to "
                 "the reference, at the main load): " + ", ".join(f"`{m}` {v:+.1%}" for m, v in spreads.items())
                 + f"; the widest, `{far[0]}`, {far[1]:+.1%}.")
    for note in info.get("notes") or []:
        n.append(f"Server: {note}.")
    for c in suite["cells"]:
        for f in c.get("failures") or []:
            n.append(f"**Stopped**: `{c['model']}` @ {c['conns']} conns x {human_size(c['size'])}"
                     f"{'' if c.get('transport', 'tcp') == 'tcp' else ' over ' + c['transport']}: {f['reason']} "
                     f"({c['trials_ok']} of {c['rounds']} rounds ran; the other models went on).")
    if cost:
        total, _ = _against_counts(main_cells, cost)
        bad = disagreements(main_cells, cost)
        n.append(f"Instructions per message from `make bench-cost` at the same commit ({Path(cost['path']).parent.name}; "
                 f"one message in flight, so no contention): of the {total} pairs of models whose counts differ by more "
                 f"than 20%, the order by user time at the main load agrees with them for {total - len(bad)}"
                 + ("." if not bad else "; not for " + "; ".join(bad) + "."))
    return n
