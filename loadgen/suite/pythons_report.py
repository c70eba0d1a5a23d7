"""The report of ``make bench-pythons`` (:mod:`loadgen.suite.pythons`): the answer per model, the tables (models
down, variants across, ratio to the reference variant with its interval) and one figure (per model, a line across
the variants: instructions and server CPU per message)."""

from __future__ import annotations

from pathlib import Path

from .. import output


def build_text(b: dict | None) -> str:
    """An interpreter build in a few words: ``CPython 3.13.0, GCC 11.4.0, PGO+LTO``."""
    if not b:
        return "-"
    flags = [name for name, on in (("PGO", b.get("optimizations")), ("LTO", b.get("lto")), ("debug", b.get("debug")),
                                   ("free-threaded", b.get("free_threading"))) if on]
    linked = {True: ", shared libpython", False: ", static libpython"}.get(b.get("shared"), "")
    return (f"{b.get('implementation')} {b.get('version')}, {b.get('compiler', '').strip() or '?'}, "
            f"{'+'.join(flags) or 'no PGO/LTO'}{linked}")


def _iv(r: dict | None, digits: int = 3) -> str:
    if not r or r.get("median") is None:
        return "-"
    lo, hi = r["ci"]
    return f"{r['median']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def keys(doc: dict) -> list[str]:
    return [v["key"] for v in doc["variants"]]


def wall_order(doc: dict, model: str) -> list[tuple[str, float]]:
    """The variants of a model, cheapest server CPU per message first: (key, median ratio to the reference)."""
    w = ((doc.get("wall") or {}).get("models") or {}).get(model)
    if not w:
        return []
    out = []
    for k, v in w["variants"].items():
        r = 1.0 if k == w["reference"] else ((v.get("vs_reference") or {}).get("server_ns_per_msg") or {}).get("median")
        if r is not None:
            out.append((k, r))
    return sorted(out, key=lambda kv: kv[1])


def answer(doc: dict, model: str) -> str:
    """One sentence per model: which variant is cheapest per message (wall clock, with its interval against the
    reference and against the next cheapest), and the instructions' verdict (exact)."""
    parts = []
    w = ((doc.get("wall") or {}).get("models") or {}).get(model)
    order = wall_order(doc, model)
    if w and len(order) >= 2:
        ref = w["reference"]
        best, second = order[0][0], order[1][0]
        v = w["variants"][best]
        pair = ((v.get("pairs") or {}).get("server_ns_per_msg") or {}).get(second)
        if best == ref:
            against = ((w["variants"][second].get("vs_reference") or {}).get("server_ns_per_msg"))
            if against and against["ci"][0] > 1:
                parts.append(f"server CPU per message is lowest on the reference `{ref}`; the next, `{second}`, "
                             f"costs {_iv(against)} of it")
            else:
                parts.append(f"server CPU per message: `{ref}` (the reference) and `{second}` are not told apart "
                             f"({_iv(against)})")
        else:
            vs = (v.get("vs_reference") or {}).get("server_ns_per_msg")
            if vs and vs["ci"][1] < 1:
                text = f"server CPU per message is lowest on `{best}`: {_iv(vs)} of `{ref}`'s"
            else:
                text = f"server CPU per message: no variant told apart from `{ref}` (the lowest median: `{best}`, {_iv(vs)})"
            if pair is not None and second != ref:
                lo, hi = pair[1], pair[2]
                text += (f"; {pair[0]:.3f} [{lo:.3f}, {hi:.3f}] of the next, `{second}`" +
                         ("" if hi < 1 else " (tied)"))
            parts.append(text)
    c = ((doc.get("cost") or {}).get(model) or {})
    cv = c.get("variants") or {}
    if cv:
        low = min(cv, key=lambda k: cv[k]["instructions_per_msg"])
        high = max(cv, key=lambda k: cv[k]["instructions_per_msg"])
        lo_n, hi_n = cv[low]["instructions_per_msg"], cv[high]["instructions_per_msg"]
        if lo_n == hi_n:
            parts.append(f"instructions per message the same on every variant ({lo_n:,.1f})")
        else:
            parts.append(f"instructions per message fewest on `{low}` ({lo_n:,.0f}), most on `{high}` ({hi_n:,.0f}, "
                         f"{hi_n / lo_n - 1:+.1%})")
    return f"- **{model}**: " + ("; ".join(parts) if parts else "not measured") + "."


def markdown(doc: dict) -> str:
    cfg, env = doc["config"], doc["env"]
    ks = keys(doc)
    ref = doc["reference"]
    models = doc["models"]
    lines = [f"# echobench pythons: {len(models)} models under {len(ks)} variants, side by side", "",
             f"{doc['timestamp']}, {doc['elapsed_s']:.0f} s, commit `{(env.get('git_commit') or '?')[:12]}`, "
             f"{env.get('cpu_model')}, kernel {env.get('kernel')}. Every ratio is to the reference variant "
             f"**`{ref}`**, measured in the same job. The load generator ran on {build_text(env.get('python_build'))} "
             f"for every variant; only the servers changed.", "",
             "## Variants", "",
             "| variant | interpreter | build (from the interpreter) | packages | servers |", "|---|---|---|---|---|"]
    for v in doc["variants"]:
        pk = ", ".join(f"{n} {x}" for n, x in (v.get("packages") or {}).items() if x) or "none"
        servers = "this checkout" if v.get("ref") is None else f"`{v['ref']}` ({(v.get('commit') or '?')[:12]})"
        lines.append(f"| `{v['key']}`{' (reference)' if v['key'] == ref else ''} | `{v['interpreter']}` | "
                     f"{build_text(v.get('build'))} | {pk} | {servers} |")
    if doc.get("left_out"):
        lines += ["", "Left out: " + "; ".join(f"`{s}` ({why})" for s, why in doc["left_out"].items()) + "."]
    not_run = {m: w for m, w in (doc.get("not_run") or {}).items()}
    if not_run:
        lines += ["", "Not run on every variant: " + "; ".join(
            f"{m} on " + ", ".join(f"`{k}` ({why})" for k, why in w.items()) for m, w in not_run.items()) + "."]
    lines += ["", "## The answer", ""] + [answer(doc, m) for m in models]
    w = doc.get("wall")
    if w:
        lines += ["", f"## Server CPU per message: paired rounds ({cfg['rounds']} rounds of {cfg['slice_s']:g} s "
                      f"slices, {cfg['instances']} servers per variant, {cfg['conns']} connections x "
                      f"{output.human_size(cfg['size'])}; servers on CPU {','.join(map(str, w['server_cpus']))}, "
                      f"load generator on {','.join(map(str, w['client_cpus']))})", "",
                  f"Per round, each variant's server CPU per message (its process's CPU clock over the slice) over "
                  f"`{ref}`'s in the same round; the median over rounds [its 95% interval]. The reference's cell is "
                  "its own median in us per message.", "",
                  "| model | " + " | ".join(f"`{k}`" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
        for m in models:
            wm = w["models"].get(m)
            lines.append(f"| {m} | " + " | ".join(_wall_cell(wm, k, "server_ns_per_msg") for k in ks) + " |")
        from .ab import host_line

        lines += ["", host_line(w["models"])]
        lines += ["", "User + kernel microseconds per message (utime/stime summed over the rounds: user is the "
                      "interpreter and the model's own code, kernel the system calls and TCP that every variant "
                      "shares):", "", "| model | " + " | ".join(f"`{k}`" for k in ks) + " |",
                  "|---" * (len(ks) + 1) + "|"]
        for m in models:
            wm = w["models"].get(m) or {}
            cells = []
            for k in ks:
                sp = ((wm.get("variants") or {}).get(k) or {}).get("split")
                cells.append("-" if not sp else f"{sp['user_us_per_msg']:.2f} + {sp['kernel_us_per_msg']:.2f}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines += ["", f"msgs/s and p99, ratio to `{ref}` per round [95% interval] (msgs/s is the server's only "
                      "where the client had headroom: `client-bound` marks a variant with a saturated client in "
                      "any slice):", "", "| model | " + " | ".join(f"`{k}` msgs/s, p99" for k in ks) + " |",
                  "|---" * (len(ks) + 1) + "|"]
        for m in models:
            wm = w["models"].get(m)
            lines.append(f"| {m} | " + " | ".join(_wall_cell(wm, k, "msgs_per_s") + "; " + _wall_cell(wm, k, "p99_us")
                                                  for k in ks) + " |")
        stopped = [(m, k, v["failures"][0]["reason"]) for m, wm in w["models"].items()
                   for k, v in wm["variants"].items() if v.get("failures")]
        if stopped:
            lines += [""] + [f"- {m} on `{k}` stopped: {why}" for m, k, why in stopped]
    c = doc.get("cost")
    if c:
        lines += ["", f"## Instructions per message (callgrind: (I(N2) - I(N1)) / (N2 - N1), N1 = {cfg['n1']:,}, "
                      f"N2 = {cfg['n2']:,}, {cfg['repeats']} repeats; user space only)", "",
                  "The count and its ratio to the reference; the counts repeat, so a ratio is exact within the "
                  "spread of repeats (last column, the largest of the model's variants).", "",
                  "| model | " + " | ".join(f"`{k}`" for k in ks) + " | repeats within |", "|---" * (len(ks) + 2) + "|"]
        for m in models:
            cv = (c.get(m) or {}).get("variants") or {}
            cells = []
            for k in ks:
                e = cv.get(k)
                if e is None:
                    cells.append("-")
                elif k == ref or "ratio" not in e:
                    cells.append(f"{e['instructions_per_msg']:,.0f}")
                else:
                    cells.append(f"{e['instructions_per_msg']:,.0f} ({e['ratio']:.3f}x)")
            spread = max((e["spread"] or 0.0 for e in cv.values()), default=0.0)
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {spread:.3%} |")
        moved = most_changed(doc)
        if moved and moved[1]["functions"]:
            m, mv = moved
            lines += ["", f"## Where the instructions moved: {m}, `{mv['variant']}` vs `{ref}` ({mv['ratio']:.3f}x)", "",
                      f"{m} changed most between two variants. Own (self) instructions per message of the functions "
                      "that changed most (a function missing on one side counts 0 there):", "",
                      f"| function | `{ref}` | `{mv['variant']}` | delta |", "|---|---|---|---|"]
            for f in mv["functions"]:
                lines.append(f"| `{f['function']}` | {f['base']:,.1f} | {f['head']:,.1f} | {f['delta']:+,.1f} |")
    lines += ["", "Figure: `pythons.png` (per model, a line across the variants: instructions and server CPU per "
                  "message)."]
    return "\n".join(lines) + "\n"


def _wall_cell(wm: dict | None, k: str, metric: str) -> str:
    if not wm or k not in wm["variants"]:
        return "-"
    v = wm["variants"][k]
    bound = " client-bound" if metric == "msgs_per_s" and v.get("client_bound_trials") else ""
    if k == wm["reference"]:
        med = v["median"]
        x = {"server_ns_per_msg": (med.get("server_us_per_msg"), "us"), "msgs_per_s": (med.get("msgs_per_s"), "/s"),
             "p99_us": (med.get("p99_us"), "us")}[metric]
        return "-" if x[0] is None else (f"**{x[0]:,.2f} {x[1]}**" if x[0] < 1000 else f"**{x[0]:,.0f}{x[1]}**") + bound
    return _iv((v.get("vs_reference") or {}).get(metric)) + bound


def most_changed(doc: dict) -> tuple[str, dict] | None:
    """(model, its ``moved`` entry) for the model whose instruction count moved furthest from the reference."""
    best = None
    for m, c in (doc.get("cost") or {}).items():
        mv = c.get("moved")
        if mv and (best is None or abs(mv["ratio"] - 1) > abs(best[1]["ratio"] - 1)):
            best = (m, mv)
    return best


def plot(doc: dict, out: Path) -> str | None:
    """``pythons.png``: two panels, the variants across, per model a line through its ratio to the reference
    variant (1 at the reference): instructions per message (left, exact) and server CPU per message (right, the
    paired rounds' median ratio with its 95% interval). Ratios, not absolute figures: the paired ratio is what the
    rounds measure precisely, and one axis then holds models an order of magnitude apart. The legend names each
    model's figures on the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = keys(doc)
    ref = doc["reference"]
    models = doc["models"]
    cost, wall = doc.get("cost") or {}, (doc.get("wall") or {}).get("models") or {}
    if not (cost or wall):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(13, 6))
    markers = "osD^v<>ph*"
    xs = list(range(len(ks)))
    width = 0.25 / max(1, len(models))
    for i, m in enumerate(models):
        dx = (i - (len(models) - 1) / 2) * width  # side by side, so that the whiskers do not hide each other
        cv = (cost.get(m) or {}).get("variants") or {}
        wm = wall.get(m) or {}
        wv = wm.get("variants") or {}
        label = m
        if ref in cv:
            label += f" ({cv[ref]['instructions_per_msg']:,.0f} instr"
            us = ((wv.get(ref) or {}).get("median") or {}).get("server_us_per_msg")
            label += f", {us:.2f} us)" if us else ")"
        style = {"marker": markers[i % len(markers)], "color": f"C{i % 10}", "markersize": 5}
        pts = [(x, cv[k]["ratio"]) for x, k in zip(xs, ks) if k in cv and "ratio" in cv[k]]
        if pts:
            axes[0].plot([p[0] + dx for p in pts], [p[1] for p in pts], label=label, **style)
        pts = []
        for x, k in zip(xs, ks):
            if k == wm.get("reference"):
                pts.append((x, 1.0, 1.0, 1.0))
            elif k in wv and (r := (wv[k].get("vs_reference") or {}).get("server_ns_per_msg")):
                pts.append((x, r["median"], r["ci"][0], r["ci"][1]))
        if pts:
            axes[1].errorbar([p[0] + dx for p in pts], [p[1] for p in pts],
                             yerr=[[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]], capsize=2,
                             label=None if cv else label, **style)
    axes[0].set_ylabel(f"instructions per message, x {ref}'s (callgrind, exact)")
    axes[0].set_title("User-space instructions per message (the interpreter and the model's code)", fontsize=10,
                      loc="left")
    axes[1].set_ylabel(f"server CPU per message, x {ref}'s (user + kernel)")
    axes[1].set_title(f"Server CPU per message: paired ratio, 95% interval "
                      f"({doc['config']['conns']} x {output.human_size(doc['config']['size'])})", fontsize=10, loc="left")
    for ax in axes:
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(xs, [k + ("\n(reference)" if k == ref else "") for k in ks], fontsize=8)
        ax.grid(True, alpha=0.35)
    handles, labels = [], []
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=8, frameon=False)
    fig.suptitle(f"The same server models under each variant, as ratios to {ref} ({doc['timestamp']}; in the "
                 "legend: the reference's figures)", fontsize=10)
    fig.tight_layout(rect=(0, 0.03 + 0.035 * ((len(labels) + 2) // 3), 1, 0.96))
    fig.savefig(out / "pythons.png", dpi=100)
    plt.close(fig)
    return "pythons.png"


def write(doc: dict, out_dir: Path) -> None:
    (Path(out_dir) / "pythons.md").write_text(markdown(doc))
    plot(doc, Path(out_dir))
