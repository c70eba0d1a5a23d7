"""``make bench-overload`` / ``python -m loadgen overload``: what each model does when offered more than it can
serve, and how it comes back.

Per model, on a fresh server each time:

1. its **capacity at the SLO** (``--slo``, default p99 <= 1 ms): a short open-loop search (loadgen/modes/capacity.py)
   under the same connections and messages in flight as the profile;
2. a **load profile** from that capacity (loadgen/profile.py): hold 0.5x, spike to 2x, back to 0.5x, spike to 4x,
   back to 0.5x (``--spikes``, ``--hold``, ``--spike``, ``--recover``), one message in flight per connection
   (``--depth``): what is due beyond what the server echoes waits its turn in the schedule, timed from when it
   was due (the coordinated-omission rule), as requests wait for a server that cannot keep up. With many in
   flight (``--depth 16``) an echo server reads and writes them in batches, and its capacity in messages per
   second grows several times (selectors: 395,000 echoed a second at 95% of a CPU here, 16 in flight on 50
   connections): the spikes then test the load generator more than the server;
3. from the run's timeline (exact counts per 100 ms), per spike: the latency peak, the backlog (messages due and
   not yet echoed), when the server caught up and when p99 was back under the SLO (``recover_s``), the errors
   and resets, and the server's memory before and at its peak (does its buffering grow without bound?).

The summary names the model that recovers fastest from the 2x spike and the one whose memory grows most, with
their figures; every model's timeline is drawn (``timelines/<model>.png``). Output: ``results/<stamp>-overload/``
(``overload.json``, versioned; ``overload.md``; ``runs/<model>.json``, each profile run's own document).
Exit status: 0; 2 bad usage; 3 nothing could be measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from servers import registry

from .. import hostload, output, result
from ..config import LoadConfig, OneLineParser, parse_size
from ..envinfo import ROOT, environment
from ..procs import interrupt

KIND = result.OVERLOAD


class UsageError(Exception):
    """A request that cannot be measured as asked: one line, exit 2."""


@dataclass(frozen=True)
class OverloadConfig:
    models: tuple[str, ...] = ()  # (): every model that can run here
    slo: str = "p99=1ms"
    conns: int = 50
    size: int = 1024
    depth: int = 1
    spikes: tuple[float, ...] = (2.0, 4.0)  # multiples of the capacity
    base: float = 0.5  # the load around the spikes, a multiple of the capacity
    hold_s: float = 3.0  # before the first spike
    spike_s: float = 2.0
    recover_s: float = 5.0  # after each spike
    precision: float = 0.10  # the capacity search's
    step_s: float = 1.0
    step_warmup_s: float = 0.5  # a fresh server per step: 0.3 s once left threads starting 50 threads in a measured step
    start_rate: float = 2000.0
    max_steps: int = 18  # with the floor step and each break's retry: a quiet search from 2,000 takes 10-16
    engine: str = "auto"
    results: str = str(ROOT / "results")
    quiet: bool = False
    quiet_host: bool = False  # refuse to start while other processes use the run's CPUs


def profile_text(cfg: OverloadConfig) -> str:
    """The profile in multiples of the capacity: hold, then each spike followed by a recovery hold."""
    parts = [f"hold:{cfg.base:g}x:{cfg.hold_s:g}s"]
    for k in cfg.spikes:
        parts += [f"spike:{k:g}x:{cfg.spike_s:g}s", f"hold:{cfg.base:g}x:{cfg.recover_s:g}s"]
    return ",".join(parts)


def measure_model(m: str, cfg: OverloadConfig, out_dir: Path, log) -> dict:
    """One model: its capacity, then the profile from it; the entry of overload.json."""
    from ..modes.capacity import find
    from ..profile import parse
    from ..runner import RunError, Runner
    from ..target import TargetError
    from .timeline import plot_timeline

    # the capacity is searched under the same load shape as the profile (connections, messages in flight): with
    # 16 in flight a server batches its reads, and its capacity at one in flight is a quarter of it or less here
    base = LoadConfig(server=m, conns=cfg.conns, size=cfg.size, slos=(cfg.slo,), quiet=True, engine=cfg.engine,
                      workers=1, depth=cfg.depth)
    entry: dict = {"model": m}
    t0 = time.monotonic()
    try:
        doc, _code = find(replace(base, find_capacity=True, precision=cfg.precision, start_rate=cfg.start_rate,
                                  max_steps=cfg.max_steps, duration=cfg.step_s, warmup=cfg.step_warmup_s), lambda s: None)
    except (RunError, TargetError) as exc:
        return {**entry, "error": f"the capacity search could not run: {exc}"}
    if doc["result"]["incomplete_reason"] == "interrupted":  # Ctrl-C or SIGTERM: the whole run stops
        raise KeyboardInterrupt
    cap = doc["result"]["capacity"] or {}
    # with the breaks the search ran again (by reason) and the host's latency at a light load (issue 32)
    entry["capacity"] = {k: cap.get(k) for k in ("msgs_per_s", "bracket", "complete", "stopped", "stop", "retried", "floor")}
    entry["capacity_s"] = round(time.monotonic() - t0, 1)
    found = cap.get("msgs_per_s")
    if not found:
        return {**entry, "error": f"no capacity at {cfg.slo} was found ({cap.get('stopped') or 'no rate met it'})"}
    prof = parse(profile_text(cfg), base=found)
    pcfg = replace(base, profile=prof.canonical(), rate=prof.total / prof.duration_s, duration=prof.duration_s,
                   warmup=0.0)
    log(f"overload: {m}: capacity {found:,.0f} msgs/s at {cfg.slo}; profile {pcfg.profile}")
    try:
        pdoc, _pcode = Runner(pcfg, lambda s: None).execute()
    except (RunError, TargetError) as exc:
        return {**entry, "error": f"the profile run could not run: {exc}"}
    if pdoc["result"]["incomplete_reason"] == "interrupted":
        raise KeyboardInterrupt
    (out_dir / "runs").mkdir(exist_ok=True)
    output.write_json(pdoc, str(out_dir / "runs" / f"{m}.json"))
    (out_dir / "timelines").mkdir(exist_ok=True)
    plot_timeline(pdoc, out_dir / "timelines" / f"{m}.png",
                  title=f"{m}: capacity {found:,.0f} msgs/s at {cfg.slo}; {profile_text(cfg)} of it; "
                        f"{cfg.conns} connections x {output.human_size(cfg.size)}, {cfg.depth} in flight each")
    res = pdoc["result"]
    spikes = []
    for k, r in zip(cfg.spikes, res.get("recovery") or []):
        spikes.append({"times_capacity": k, **r})
    rss = [e["server_rss_mb"] for e in res["timeline"] if e.get("server_rss_mb") is not None]
    return {**entry, "profile": pcfg.profile, "spikes": spikes, "errors": res["errors"],
            "integrity_failures": res["integrity_failures"], "complete": res["complete"],
            "incomplete_reason": res["incomplete_reason"], "verdict": res["verdict"],
            "loadgen_pct": res["cpu"].get("loadgen_pct"), "engine": res["engine"]["name"],
            "rss_start_mb": rss[0] if rss else None, "rss_peak_mb": max(rss) if rss else None,
            "rss_end_mb": rss[-1] if rss else None, "elapsed_s": round(time.monotonic() - t0, 1),
            # other processes on the run's CPUs during the profile (loadgen/hostload.py): a spike measured beside
            # them says as much about them as about the model
            "host": res.get("host")}


def summary(entries: list[dict]) -> list[str]:
    """The report's opening: the model that recovers fastest from the first spike and the one whose memory grows
    most, with their figures."""
    ok = [e for e in entries if e.get("spikes")]
    out = []
    if not ok:
        return ["No model was measured."]
    first = [(e, e["spikes"][0]) for e in ok]
    rec = [(e, s) for e, s in first if s["recover_s"] is not None]
    if rec:
        best = min(s["recover_s"] for _e, s in rec)
        tied = [(e, s) for e, s in rec if s["recover_s"] == best]
        e, s = tied[0]
        if len(tied) == 1:
            out.append(f"**Fastest to recover** from the {s['times_capacity']:g}x spike: `{e['model']}`, p99 back under "
                       f"{_us(s['p99_limit_us'])} {s['recover_s']:g} s after the spike ended (peak p99 "
                       f"{_us(s['peak_p99_us'])}, peak backlog {s['peak_backlog']:,} messages).")
        else:  # recovered within the same interval: the timeline cannot order them
            out.append(f"**Fastest to recover** from the {s['times_capacity']:g}x spike, tied at {best:g} s after it "
                       f"ended (p99 back under {_us(s['p99_limit_us'])}): "
                       + ", ".join(f"`{x['model']}` (peak p99 {_us(y['peak_p99_us'])})" for x, y in tied) + ".")
    busy = [(e["model"], e["host"]["worst_share"]) for e in entries
            if (e.get("host") or {}).get("worst_share", 0.0) > hostload.DISTURBED_SHARE]
    if busy:
        out.insert(0, "**Disturbed**: other processes took the run's CPUs during the profile of "
                   + ", ".join(f"`{m}` ({x:.0%})" for m, x in busy)
                   + f" (beyond {hostload.DISTURBED_SHARE:.0%}): their latency, backlog and recovery were measured "
                     "beside them; run again on a quiet host before comparing them.")
    never = [e["model"] for e, s in first if s["recover_s"] is None]
    if never:
        out.append("Not recovered before the run ended: " + ", ".join(f"`{m}`" for m in never) + ".")
    growth = [(e, (e["rss_peak_mb"] or 0) - (e["rss_start_mb"] or 0)) for e in ok if e.get("rss_peak_mb")]
    if growth:
        e, g = max(growth, key=lambda eg: eg[1])
        out.append(f"**Memory grows most** in `{e['model']}`: {e['rss_start_mb']:,.1f} -> {e['rss_peak_mb']:,.1f} MiB "
                   f"(+{g:,.1f}), {e['rss_end_mb']:,.1f} MiB at the end.")
    return out


def _us(x) -> str:
    if x is None:
        return "-"
    return f"{x / 1000:,.1f} ms" if x >= 1000 else f"{x:,.0f} us"


def config_doc(cfg: OverloadConfig) -> dict:
    """``cfg`` as a document's ``config`` (tuples as lists); :func:`config_of` reads it back."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}


def config_of(doc_config: dict) -> OverloadConfig:
    """The OverloadConfig a document's ``config`` was written from (lists back to tuples)."""
    return OverloadConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc_config.items()})


def method(cfg: OverloadConfig) -> str:
    """One paragraph: how each model was measured."""
    return (f"Per model, on a fresh server: its capacity at {cfg.slo} (open-loop search, {cfg.precision:.0%} "
            f"precision), then `{profile_text(cfg)}` of that capacity, {cfg.conns} connections x "
            f"{output.human_size(cfg.size)}, {cfg.depth} message{'s' if cfg.depth != 1 else ''} in flight per connection. Latency is timed from "
            "each message's due time. Backlog: messages due and not yet echoed. Recovered: p99 under the SLO with the "
            "backlog gone for three 100 ms intervals in a row, counted from the spike's end.")


def table(cfg: OverloadConfig, entries: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): per model its capacity, each spike's peak p99 / peak backlog / recovery, memory, errors and
    the client."""
    head = ["model", "capacity"] + [f"{k:g}x: peak p99 / peak backlog / recover" for k in cfg.spikes] + [
        "server memory (MiB) start -> peak -> end", "errors", "client"]
    rows = []
    for e in entries:
        if e.get("error"):
            rows.append([e["model"], e["error"]] + [""] * (len(head) - 2))
            continue
        cells = [e["model"], f"{e['capacity']['msgs_per_s']:,.0f}"]
        for s in e["spikes"]:
            rec = f"{s['recover_s']:g} s" if s["recover_s"] is not None else "not recovered"
            behind = " (fell behind)" if s["fell_behind"] else ""
            cells.append(f"{_us(s['peak_p99_us'])} / {s['peak_backlog']:,}{behind} / {rec}")
        cells += [f"{e['rss_start_mb']:,.1f} -> {e['rss_peak_mb']:,.1f} -> {e['rss_end_mb']:,.1f}"
                  if e.get("rss_peak_mb") else "-",
                  ", ".join(f"{k} {v}" for k, v in e["errors"].items()) or "0",
                  f"{e['engine']}, {e['loadgen_pct'] or 0:.0f}%" + (" (saturated)" if e["verdict"] == "client-bound" else "")]
        rows.append(cells)
    return head, rows


def timeline_links(entries: list[dict], folder: str = "timelines") -> str:
    return "Timelines: " + ", ".join(f"[{e['model']}]({folder}/{e['model']}.png)" for e in entries
                                     if e.get("spikes") is not None) + "."


def markdown(doc: dict) -> str:
    cfg = config_of(doc["config"])
    lines = [f"# echobench overload: {len(doc['models'])} models ({doc['timestamp']}, {doc['elapsed_s']:.0f} s)", "",
             method(cfg), ""]
    lines += [f"- {x}" for x in summary(doc["entries"])] + [""]
    head, rows = table(cfg, doc["entries"])
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", timeline_links(doc["entries"])]
    return "\n".join(lines) + "\n"


def _number(lo: float, hi: float = float("inf"), *, integer: bool = False, lo_open: bool = True,
            hi_open: bool = False):
    """A check of one table value: a number (an integer when ``integer``; never a bool) within lo..hi."""
    def ok(v) -> bool:
        if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
            return False
        return (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
    return ok


_SECONDS = _number(0, 600)
_FRACTION = _number(0, 1, hi_open=True)

# a matrix's [overload] table (make bench-full): key -> (OverloadConfig field, check, what it must be)
TABLE_KEYS = {
    "slo": ("slo", lambda v: isinstance(v, str), "a p99 objective, e.g. \"p99=1ms\""),
    "conns": ("conns", _number(1, integer=True, lo_open=False), "a connection count >= 1"),
    "size": ("size", _number(1, integer=True, lo_open=False), "a message size in bytes >= 1"),
    "depth": ("depth", _number(1, integer=True, lo_open=False), "messages in flight >= 1"),
    "spikes": ("spikes", lambda v: isinstance(v, list) and bool(v) and all(map(_number(0, 100), v)),
               "a list of multiples of the capacity, e.g. [2, 4]"),
    "base": ("base", _FRACTION, "a fraction of the capacity between 0 and 1"),
    "hold": ("hold_s", _SECONDS, "seconds (0, 600]"),
    "spike": ("spike_s", _SECONDS, "seconds (0, 600]"),
    "recover": ("recover_s", _SECONDS, "seconds (0, 600]"),
    "precision": ("precision", _FRACTION, "the capacity search's precision, between 0 and 1"),
    "step": ("step_s", _SECONDS, "seconds (0, 600]"),
    "step_warmup": ("step_warmup_s", _number(0, 600, lo_open=False), "seconds [0, 600]"),
    "start_rate": ("start_rate", _number(0), "msgs/s > 0"),
    "max_steps": ("max_steps", _number(1, integer=True, lo_open=False), "a step count >= 1"),
    "models": (None, lambda v: True, ""),  # checked with the other tables' models
}


def config_from_table(table_: dict, **extra) -> OverloadConfig:
    """The OverloadConfig of a matrix's ``[overload]`` table (every key optional: this command's defaults);
    ValueError (one line, without the table's name) when a key is unknown or its value is not what it must be."""
    from ..modes.capacity import parse_slo

    unknown = set(table_) - set(TABLE_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
    fields = {}
    for key, v in table_.items():
        field, ok, what = TABLE_KEYS[key]
        if field is None:
            continue
        if not ok(v):
            raise ValueError(f"{key}: {what}")
        fields[field] = tuple(float(x) for x in v) if key == "spikes" else v
    if "slo" in fields:
        try:
            if parse_slo(fields["slo"]).percentile != "p99":
                raise ValueError
        except ValueError:
            raise ValueError(f"slo: recovery is judged on p99 (e.g. \"p99=1ms\"); got {fields['slo']!r}") from None
    return OverloadConfig(**fields, **extra)


def run(cfg: OverloadConfig, log) -> tuple[Path, dict]:
    t0 = time.monotonic()
    models = list(cfg.models) or [n for n, m in registry.MODELS.items() if m.unavailable_reason() is None]
    for m in models:
        if m not in registry.MODELS:
            raise UsageError(f"{m!r} is not a server model (choose from {', '.join(registry.MODELS)})")
        if (why := registry.get(m).unavailable_reason()) is not None:
            raise UsageError(f"{m}: {why}")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(cfg.results) / f"{stamp}-overload"
    out_dir.mkdir(parents=True, exist_ok=False)
    entries = []
    for i, m in enumerate(models):
        log(f"overload: [{i + 1}/{len(models)}] {m}")
        entries.append(measure_model(m, cfg, out_dir, log))
    doc = {"kind": KIND, "schema_version": result.version(KIND),
           "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "env": environment(),
           "config": config_doc(cfg), "models": models, "entries": entries, "elapsed_s": round(time.monotonic() - t0, 1)}
    output.write_json(doc, str(out_dir / "overload.json"))
    (out_dir / "overload.md").write_text(markdown(doc))
    output.point_latest(Path(cfg.results), out_dir, "latest-overload")
    return out_dir, doc


def _multiples(text: str) -> tuple[float, ...]:
    try:
        xs = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"multiples of the capacity, e.g. 2,4; got {text!r}") from None
    if not xs or any(not 0 < x <= 100 for x in xs):
        raise argparse.ArgumentTypeError(f"multiples of the capacity between 0 and 100, e.g. 2,4; got {text!r}")
    return xs


def _seconds(text: str) -> float:
    x = float(text)
    if not 0 < x <= 600:
        raise argparse.ArgumentTypeError(f"seconds between 0 and 600, got {text}")
    return x


def parse_config(argv=None, prog: str = "python -m loadgen overload") -> OverloadConfig:
    from .cost import positive_count

    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=lambda s: tuple(x for x in s.split(",") if x), default=(),
                   help="comma-separated (default: every model that can run here)")
    p.add_argument("--slo", default="p99=1ms", help="the latency objective for the capacity and for recovery "
                   "(default p99=1ms)")
    p.add_argument("--conns", type=positive_count, default=50)
    p.add_argument("--size", type=parse_size, default=1024)
    p.add_argument("--depth", type=positive_count, default=1, help="messages in flight per connection (default 1)")
    p.add_argument("--spikes", type=_multiples, default=(2.0, 4.0), help="the spikes, multiples of the capacity "
                   "(default 2,4)")
    p.add_argument("--base", type=float, default=0.5, help="the load around the spikes, x capacity (default 0.5)")
    p.add_argument("--hold", dest="hold_s", type=_seconds, default=3.0, help="seconds before the first spike (3)")
    p.add_argument("--spike", dest="spike_s", type=_seconds, default=2.0, help="seconds each spike lasts (2)")
    p.add_argument("--recover", dest="recover_s", type=_seconds, default=5.0, help="seconds after each spike (5)")
    p.add_argument("--engine", choices=["auto", "native", "python"], default="auto")
    p.add_argument("--results", default=str(ROOT / "results"), help="where the run folder goes (default results/)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--quiet-host", action="store_true", help=hostload.QUIET_HOST_HELP)
    a = p.parse_args(argv)
    from ..modes.capacity import parse_slo

    try:
        if parse_slo(a.slo).percentile != "p99":
            p.error(f"--slo: recovery is judged on p99 (e.g. p99=1ms); got {a.slo!r}")
    except ValueError as exc:
        p.error(str(exc))
    if not 0 < a.base < 1:
        p.error("--base must be between 0 and 1 (a fraction of the capacity)")
    return OverloadConfig(models=a.models, slo=a.slo, conns=a.conns, size=a.size, depth=a.depth, spikes=a.spikes,
                          base=a.base, hold_s=a.hold_s, spike_s=a.spike_s, recover_s=a.recover_s, engine=a.engine,
                          results=a.results, quiet=a.quiet,
                    quiet_host=a.quiet_host)


def main(argv=None, prog: str = "python -m loadgen overload") -> int:
    cfg = parse_config(argv, prog)
    if cfg.quiet_host:
        from ..runner import suite_cpus

        if hostload.refuse_if_busy(prog, suite_cpus()):
            return 3

    def log(msg: str) -> None:
        if not cfg.quiet:
            print(msg, file=sys.stderr, flush=True)

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        out_dir, doc = run(cfg, log)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 3
    finally:
        signal.signal(signal.SIGTERM, old)
    sys.stdout.write((out_dir / "overload.md").read_text())
    log(f"overload: {doc['elapsed_s']:.0f} s; {out_dir / 'overload.md'}")
    return 0 if any(e.get("spikes") for e in doc["entries"]) else 3


if __name__ == "__main__":
    sys.exit(main(prog="python -m loadgen.suite.overload"))
