"""Results out: a table on stdout, versioned JSON, HdrHistogram percentile text."""

from __future__ import annotations

import json
import os
import sys

from hdrh.histogram import HdrHistogram

from .result import RUN, RUN_VERSION, check

SCHEMA_VERSION = RUN_VERSION  # of the load generator's result document (loadgen/result.py owns it)
# 2: result.capacity (the --find-capacity search; null otherwise), result.engine, config.engine


def human_size(n: int) -> str:
    for unit, div in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def where(transport: str, host, port, path) -> str:
    """A target as people write it: ``host:port`` (TCP), ``udp:host:port``, ``unix:PATH``."""
    if transport == "unix":
        return f"unix:{path}"
    h = f"[{host}]" if ":" in str(host) else host
    return f"{transport}:{h}:{port}" if transport == "udp" else f"{h}:{port}"


def _fmt(x, unit: str = "", digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}{unit}"
    return f"{x:,}{unit}"


def render_table(doc: dict, file=None) -> None:
    """A readable summary of one run (rich table; plain text when stdout is not a terminal)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    file = file or sys.stdout
    res, cfg, tgt = doc["result"], doc["config"], doc["target"]
    console = Console(file=file, width=110, highlight=False, soft_wrap=False)
    transport = tgt.get("transport", "tcp")
    title = (f"echobench loadgen: {tgt['server_model'] or 'external server'} at "
             f"{where(transport, tgt['host'], tgt['port'], tgt.get('path'))}, "
             f"{cfg['conns']} conns x depth {cfg['depth']}, {cfg['size']} B, {tgt['mode']}"
             + (f" at {cfg['rate']:g} msgs/s" if cfg["rate"] else "")
             + ("" if res["complete"] else "  [INCOMPLETE]"))
    t = Table(title=title, box=box.SIMPLE_HEAD, show_header=True, title_justify="left")
    t.add_column("metric", style="bold")
    t.add_column("value", justify="right")
    t.add_column("", justify="left")
    t.add_row("throughput", _fmt(res["msgs_per_s"], " msgs/s"), f"{_fmt(res['mb_per_s'], ' MB/s', 2)} over {res['duration_s']:.2f} s")
    t.add_row("messages", _fmt(res["messages"]), f"{res['messages_total']:,} incl. warm-up and drain")
    lat = res["latency_us"]
    label = "latency (corrected)" if res["latency_uncorrected_us"] else "latency"
    t.add_row(label, "p50 " + _fmt(lat["p50"], " us"),
              f"p90 {_fmt(lat['p90'])}  p99 {_fmt(lat['p99'])}  p99.9 {_fmt(lat['p999'])}  p99.99 {_fmt(lat['p9999'])}  "
              f"max {_fmt(lat['max'])}  mean {_fmt(lat['mean'])} us")
    if res["latency_uncorrected_us"]:
        u = res["latency_uncorrected_us"]
        t.add_row("latency (uncorrected)", "p50 " + _fmt(u["p50"], " us"),
                  f"p90 {_fmt(u['p90'])}  p99 {_fmt(u['p99'])}  p99.9 {_fmt(u['p999'])}  max {_fmt(u['max'])} us")
        lag = res["send_lag_us"]
        t.add_row("client timer lag", "p50 " + _fmt(lag["p50"], " us"), f"p99 {_fmt(lag['p99'])}  max {_fmt(lag['max'])} us (not charged to the server)")
    if res.get("udp"):
        u = res["udp"]
        extra = "".join(f"  {k.replace('_', ' ')} {u[k]:,}" for k in ("too_old", "unresolved") if u.get(k))
        t.add_row("datagrams", f"loss {_fmt(u['loss_pct'], ' %', 3)}",
                  f"sent {u['sent']:,}  delivered {u['delivered']:,}  lost {u['lost']:,}  duplicated {u['duplicated']:,}  "
                  f"reordered {u['reordered']:,}  late {u['late']:,}{extra} (whole run); lost in the measured window "
                  f"{u['lost_in_window']:,}: latency is of delivered datagrams only")
    c = res["connect_us"]
    t.add_row("connect time" if transport != "udp" else "probe round trip", "p50 " + _fmt(c["p50"], " us"), f"p90 {_fmt(c['p90'])}  p99 {_fmt(c['p99'])}  max {_fmt(c['max'])} us")
    errs = ", ".join(f"{k} {v}" for k, v in sorted(res["errors"].items())) or "none"
    t.add_row("errors", _fmt(sum(res["errors"].values())), errs)
    integ = ", ".join(f"{k} {v}" for k, v in sorted(res["integrity"].items())) or "every echoed byte matched"
    t.add_row("integrity failures", _fmt(res["integrity_failures"]), integ)
    cpu = res["cpu"]
    t.add_row("server CPU", _fmt(cpu["server_pct"], " %"), f"{_fmt(cpu['server_us_per_msg'], ' us/msg', 2)}  CPUs {_cpus(doc['pinning']['server_cpus'])}")
    t.add_row("loadgen CPU", _fmt(cpu["loadgen_pct"], " %"), f"{_fmt(cpu['loadgen_us_per_msg'], ' us/msg', 2)}  CPUs {_cpus(doc['pinning']['loadgen_cpus'])}")
    f = res["fairness"]
    t.add_row("fairness (msgs/conn)", f"Jain {_fmt(f['jain'], '', 3)}", f"min {_fmt(f['min'])}  median {_fmt(f['median'])}  max {_fmt(f['max'])}")
    t.add_row("verdict", res["verdict"], res["verdict_detail"])
    if not res["complete"]:
        t.add_row("INCOMPLETE", "", res["incomplete_reason"] or "")
    console.print(t)
    for s in res["integrity_samples"]:
        console.print(f"  integrity: {s}")
    env = doc["env"]
    console.print(f"  {env['cpu_model']}, kernel {env['kernel']}, Python {env['python']}, uvloop {env['uvloop']}, "
                  f"echobench {env['echobench']} @ {(env['git_commit'] or 'unknown')[:12]}")


def render_hosts(doc: dict, file=None) -> None:
    """A --cluster run: one row per client host (Dask worker)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout, width=130, highlight=False, soft_wrap=False)
    t = Table(title=f"client hosts ({doc['cluster']['scheduler']})", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("host", "address", "conns", "msgs/s", "loadgen CPU", "us/msg", "clock offset", "verdict"):
        t.add_column(col, justify="left" if col in ("host", "address", "verdict") else "right")
    for h in doc["hosts"]:
        c = h["cpu"] or {}
        conns = h["connections"]
        t.add_row(h["name"], h["address"], f"{_fmt(conns['established'])}/{conns['requested']:,}", _fmt(h["msgs_per_s"]),
                  _fmt(c.get("loadgen_pct"), " %"), _fmt(c.get("loadgen_us_per_msg"), "", 2),
                  f"{h['clock_offset_us']:+,.0f} us (+-{h['clock_uncertainty_us']:,.0f})",
                  h["verdict"] if h["complete"] else f"INCOMPLETE: {h['incomplete_reason']}")
    console.print(t)


def _cpus(cpus) -> str:
    return ",".join(map(str, cpus)) if cpus else "unpinned"


def write_json(doc: dict, path: str) -> None:
    """Write atomically (temp file + rename) so an interrupted write leaves no half document."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=False, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def write_hdr(encoded: str, path: str) -> None:
    """HdrHistogram percentile distribution, values in microseconds (recorded in ns)."""
    with open(path, "wb") as f:  # the hdrhistogram package writes bytes
        if encoded:
            HdrHistogram.decode(encoded).output_percentile_distribution(f, 1000.0)
        else:
            f.write(b"# no samples\n")


def load(path: str) -> dict:
    """Read a result document; refuse an unknown schema version."""
    with open(path) as f:
        doc = json.load(f)
    return check(doc, RUN, path)


def point_latest(results_root, out_dir, name: str = "latest") -> None:
    """``results/latest`` (or ``name``) -> the newest run folder (best effort: a filesystem without links keeps
    the folder)."""
    from pathlib import Path

    latest = Path(results_root) / name
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(Path(out_dir).name)
    except OSError:
        pass


def render_recovery(spikes: list[dict], file=None) -> None:
    """What each spike of a --profile did (plain text, stdout)."""
    def us(x):
        return "-" if x is None else f"{x:,.0f} us"

    for r in spikes:
        print(f"\nrecovery from the spike at {r['start_s']:g}-{r['end_s']:g} s ({r['rate']:,.0f} msgs/s offered, "
              f"{r['due']:,} due, {r['echoed_during']:,} echoed in it):", file=file)
        behind = (f"fell behind by {r['peak_backlog']:,} messages at most" if r["fell_behind"] else
                  f"kept up (backlog at most {r['peak_backlog']:,})")
        caught = ("" if not r["fell_behind"] else
                  f", caught up at {r['caught_up_at_s']:g} s" if r["caught_up_at_s"] is not None else ", never caught up")
        print(f"  {behind}{caught}", file=file)
        rec = (f"recovered {r['recover_s']:g} s after the spike" if r["recover_s"] is not None else
               "not recovered before the run ended")
        print(f"  p99 peak {us(r['peak_p99_us'])}, p99.9 peak {us(r['peak_p999_us'])}; {rec} (p99 under "
              f"{us(r['p99_limit_us'])}, {r['limit_from']})", file=file)
        mem = "-" if r["peak_rss_mb"] is None else f"{r['rss_before_mb']:,.1f} -> {r['peak_rss_mb']:,.1f} MiB"
        print(f"  server memory {mem}; errors {r['errors']}", file=file)


def render_capacity(cap: dict, file=None) -> None:
    """The capacity search: every step, then the capacity with its bracket (plain text, stdout)."""
    file = file or sys.stdout
    print(f"\ncapacity search: SLO {' and '.join(cap['slos'])}, precision {cap['precision']:.0%}", file=file)
    render_steps(cap["steps"], file)
    lo, hi = cap["bracket"]
    fmt = lambda x: "-" if x is None else f"{x:,.0f}"  # noqa: E731
    if cap["msgs_per_s"] is None:
        # a break the search went above (an idle server's, issue 32) is a break too, if not the bracket's top
        line = "no rate met the SLO" if hi is not None or cap.get("host_breaks") else "capacity not measured: no valid step"
    else:
        line = f"capacity {cap['msgs_per_s']:,.0f} msgs/s (held at {fmt(lo)}, broke at {fmt(hi)})"
    if not cap["complete"]:
        line += f"; search incomplete: {cap['stopped']}" + (" (a lower bound)" if cap["msgs_per_s"] else "")
    elif cap["stopped"]:
        line += f"; {cap['stopped']}"
    print(line, file=file)


def render_steps(steps: list[dict], file) -> None:
    """One line per open-loop step: planned and achieved rate, corrected and uncorrected percentiles, CPU, judgement."""

    def us(d, k):
        v = (d or {}).get(k)
        return "-" if v is None else f"{v:,.0f}"

    print(f"{'step':>4} {'phase':<8} {'planned/s':>11} {'achieved/s':>11} {'p50 us':>8} {'p99 us':>9} {'p99.9 us':>9} "
          f"{'p99 unc':>8} {'client%':>7} {'server%':>7}  judgement", file=file)
    for i, s in enumerate(steps, 1):
        if not s["valid"]:
            judgement = "INVALID: " + s["reason"]
        else:
            judgement = {True: "meets", False: "breaks", None: "valid"}[s["meets"]]
            if s.get("note"):
                judgement += f" ({s['note']})"
            elif s.get("overload"):
                judgement += " (overloaded: the server fell behind the planned rate)"
        cl = "-" if s["loadgen_pct"] is None else f"{s['loadgen_pct']:.0f}"
        sv = "-" if s["server_pct"] is None else f"{s['server_pct']:.0f}"
        print(f"{i:>4} {s['phase']:<8} {s['rate']:>11,.0f} {s['achieved']:>11,.0f} {us(s['latency_us'], 'p50'):>8} "
              f"{us(s['latency_us'], 'p99'):>9} {us(s['latency_us'], 'p999'):>9} {us(s['latency_uncorrected_us'], 'p99'):>8} "
              f"{cl:>7} {sv:>7}  {judgement}", file=file)


def render_sweep(sw: dict, file=None) -> None:
    """The --sweep steps (plain text, stdout)."""
    file = file or sys.stdout
    slo = f", SLO {' and '.join(sw['slos'])}" if sw["slos"] else ""
    of = ""
    if sw.get("of_capacity") and sw.get("capacity_msgs_per_s"):
        what = "the lower bound on the capacity" if sw.get("capacity_is_lower_bound") else "the capacity"
        of = f" (fractions of {what}, {sw['capacity_msgs_per_s']:,.0f} msgs/s)"
    print(f"\nsweep: {len(sw['steps'])} open-loop steps{of}{slo}", file=file)
    if sw.get("skipped"):
        print(f"sweep skipped: {sw['skipped']}", file=file)
        return
    render_steps(sw["steps"], file)


def read_json(path, name: str) -> tuple[dict, str]:
    """(document, where) from a run folder (its ``name``) or a file; ValueError with one line when it cannot be read
    or is not a JSON object."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        p = p / name
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"{p} not found") from None
    except OSError as exc:
        raise ValueError(f"{p}: cannot read it ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{p}: not a JSON object")
    return doc, str(p)
