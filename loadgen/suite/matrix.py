"""A benchmark matrix (``loadgen/suite/matrices/*.toml``): reading and checking it, and the plan it makes.

A matrix is data: ``[run]`` (how cells are measured: paired rounds or fresh trials), ``[[sweep]]`` loads,
``[transports]``, ``[tls]``, ``[capacity]``, ``[connections]`` and ``[overload]``. :func:`load_matrix` refuses a bad one in one
line (MatrixError); :func:`plan` turns a good one into the models and cells to run.
"""

from __future__ import annotations

from pathlib import Path

from servers import registry
from servers.config import ServerConfig

from ..modes import capacity

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


MATRICES = Path(__file__).with_name("matrices")


class MatrixError(Exception):
    pass


def load_matrix(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.suffix:
        path = MATRICES / f"{name_or_path}.toml"
    try:
        m = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise MatrixError(f"no matrix {name_or_path!r} (looked for {path})") from None
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError(f"{path}: {exc}") from None
    run = m.get("run", {})
    for key, typ in (("trials", int), ("duration", (int, float)), ("warmup", (int, float))):
        if not isinstance(run.get(key), typ):
            raise MatrixError(f"{path}: [run] needs {key}")
    check_paired(run, path)
    if not m.get("sweep") and not m.get("connections") and not m.get("tls"):
        raise MatrixError(f"{path}: no [[sweep]] (nor [connections], nor [tls])")
    m.setdefault("sweep", [])
    tr = m.get("transports")
    if tr is not None:
        if not (isinstance(tr.get("compare"), list) and tr["compare"] and isinstance(tr.get("conns"), int)
                and isinstance(tr.get("size"), int)):
            raise MatrixError(f"{path}: [transports] needs compare (a list), conns and size")
        bad = [t for t in tr["compare"] if t not in ("tcp", "udp", "unix")]
        if bad:
            raise MatrixError(f"{path}: [transports] compare: unknown transport(s) {', '.join(map(repr, bad))} (tcp, udp, unix)")
        wanted = tr.get("models", "all")
        unknown = [] if wanted == "all" else [x for x in wanted if x not in registry.MODELS]
        if unknown:
            raise MatrixError(f"{path}: [transports] models: unknown model(s) {', '.join(unknown)}")
    cap = m.get("capacity")
    if cap is not None:
        _check_capacity(cap, path)
    if m.get("tls") is not None:
        _check_tls(m["tls"], path)
    conn = m.get("connections")
    if conn is not None:
        _check_connections(conn, path)
    if m.get("overload") is not None:
        from .overload import config_from_table

        try:
            config_from_table(m["overload"])
        except ValueError as exc:
            raise MatrixError(f"{path}: [overload] {exc}") from None
        _section_models_key(m["overload"], "overload", path)
    m["path"] = str(path)
    return m


MODES = ("paired", "trials")


PAIRED_KEYS = {"rounds": (int, 2), "slice": ((int, float), 0.0), "slice_warmup": ((int, float), -1e-9),
               "instances": (int, 0), "rounds_main": (int, 2),
               # a round with a slice whose CPUs lost more than this share to other processes is rerun (hostload.py)
               "disturbed_share": ((int, float), 0.0), "max_reruns": (int, -1)}  # [run] key -> (type, the value it must exceed)


def cell_rounds(run: dict, transport: str, conns: int, size: int) -> int:
    """Rounds for a paired cell: ``rounds_main`` at the main load (``spectrum_load``, TCP), whose figures are the
    report's answer, ``rounds`` elsewhere."""
    main = run.get("spectrum_load") or {}
    if transport == "tcp" and (main.get("conns"), main.get("size")) == (conns, size):
        return run.get("rounds_main", run["rounds"])
    return run["rounds"]


def check_paired(run: dict, path) -> None:
    """``[run] mode``: "paired" (rounds, slice, slice_warmup, instances) or "trials" (the default)."""
    mode = run.get("mode", "trials")
    if mode not in MODES:
        raise MatrixError(f"{path}: [run] mode: \"paired\" or \"trials\"")
    for key, (typ, above) in PAIRED_KEYS.items():
        v = run.get(key)
        if v is None and mode == "paired" and key not in ("instances", "rounds_main", "disturbed_share", "max_reruns"):
            raise MatrixError(f"{path}: [run] mode = \"paired\" needs {key}")
        if v is not None and (not isinstance(v, typ) or isinstance(v, bool) or v <= above):
            raise MatrixError(f"{path}: [run] {key}: " + {"rounds": "an integer >= 3", "rounds_main": "an integer >= 3", "instances": "an integer >= 1",
                                                          "disturbed_share": "a share of a CPU > 0 (0.05: 5%)",
                                                          "max_reruns": "an integer >= 0"}
                              .get(key, "seconds > 0" if key == "slice" else "seconds >= 0"))


CONNECTIONS_KEYS = {"levels": list, "hold": (int, float), "trickle": (int, float), "models": (list, str),
                    "connect_timeout": (int, float), "server_workers": int}


def _section_models_key(table: dict, section: str, path) -> "str | list[str]":
    """A table's ``models``: "all" (the default) or a list of known models; MatrixError otherwise."""
    wanted = table.get("models", "all")
    if wanted != "all" and (isinstance(wanted, str) or any(x not in registry.MODELS for x in wanted)):
        raise MatrixError(f"{path}: [{section}] models: \"all\" or a list of known models")
    return wanted


def _check_connections(conn: dict, path) -> None:
    unknown = set(conn) - set(CONNECTIONS_KEYS)
    if unknown:
        raise MatrixError(f"{path}: [connections]: unknown key(s) {', '.join(sorted(unknown))}")
    levels = conn.get("levels")
    if (not isinstance(levels, list) or not levels or any(not isinstance(n, int) or isinstance(n, bool) or n < 1
                                                          for n in levels) or levels != sorted(set(levels))):
        raise MatrixError(f"{path}: [connections] levels: increasing connection counts, e.g. [1000, 5000]")
    sw = conn.get("server_workers")
    if sw is not None and (not isinstance(sw, int) or isinstance(sw, bool) or sw < 1):
        raise MatrixError(f"{path}: [connections] server_workers: a process count >= 1 (for multi-process models)")
    for key in ("hold", "trickle", "connect_timeout"):
        v = conn.get(key)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0):
            raise MatrixError(f"{path}: [connections] {key}: seconds > 0")
    _section_models_key(conn, "connections", path)


TLS_KEYS = {"conns": int, "sizes": list, "models": (list, str)}


# pseudo-transports of the [tls] table: TCP over TLS 1.3, and plain TCP beside it on the same (Python) engine, so
# that the difference is TLS's and not the engines'
TLS_CELLS = ("tcp-py", "tls")


def _check_tls(t: dict, path) -> None:
    unknown = set(t) - set(TLS_KEYS)
    if unknown:
        raise MatrixError(f"{path}: [tls]: unknown key(s) {', '.join(sorted(unknown))}")
    conns, sizes = t.get("conns"), t.get("sizes")
    if (not isinstance(conns, int) or isinstance(conns, bool) or conns < 1 or not isinstance(sizes, list) or not sizes
            or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes)):
        raise MatrixError(f"{path}: [tls]: conns >= 1 and sizes, a list of message sizes >= 1")
    wanted = _section_models_key(t, "tls", path)
    if wanted != "all" and any(not registry.get(x).tls for x in wanted):
        raise MatrixError(f"{path}: [tls] models: only models that serve TLS "
                          f"({', '.join(n for n, m in registry.MODELS.items() if m.tls)})")


CAPACITY_KEYS = {  # [capacity] in a matrix: key -> (type, required)
    "conns": (int, True), "size": (int, True), "slo": (list, True), "precision": ((int, float), True),
    "duration": ((int, float), True), "warmup": ((int, float), True), "max_steps": (int, True),
    "start": ((int, float), True), "sweep": (list, False), "models": ((list, str), False), "confirm": (bool, False),
}


def _check_capacity(cap: dict, path) -> None:
    for key, (typ, required) in CAPACITY_KEYS.items():
        if key not in cap:
            if required:
                raise MatrixError(f"{path}: [capacity] needs {key}")
        elif not isinstance(cap[key], typ) or (isinstance(cap[key], bool) and typ is not bool):
            raise MatrixError(f"{path}: [capacity] {key}: wrong type {type(cap[key]).__name__}")
    unknown = set(cap) - set(CAPACITY_KEYS)
    if unknown:
        raise MatrixError(f"{path}: [capacity]: unknown key(s) {', '.join(sorted(unknown))}")
    try:
        for t in cap["slo"]:
            capacity.parse_slo(t)
    except (ValueError, TypeError) as exc:
        raise MatrixError(f"{path}: [capacity] slo: {exc}") from None
    if not cap["slo"] or not 0 < cap["precision"] < 1 or cap["duration"] <= 0 or cap["warmup"] < 0 \
            or cap["max_steps"] < 1 or not 0 < cap["start"] or cap["conns"] < 1 or cap["size"] < 1:
        raise MatrixError(f"{path}: [capacity]: needs an slo, 0 < precision < 1, duration > 0, warmup >= 0, "
                          "max_steps >= 1, start > 0, conns and size >= 1")
    if any(not isinstance(f, (int, float)) or isinstance(f, bool) or f <= 0 for f in cap.get("sweep", [])):
        raise MatrixError(f"{path}: [capacity] sweep: fractions of the capacity, each > 0")
    _section_models_key(cap, "capacity", path)


def plan(matrix: dict, only: list[str] | None) -> tuple[list[str], dict[str, str], list[tuple[str, int, int]]]:
    """(models to run, {skipped model: reason}, cells as (transport, conns, size) in a stable order).

    The sweeps are TCP. A ``[transports]`` table adds one load (``conns`` x
    ``size``) over each other transport listed in ``compare``, for the models
    that claim it (``cell_models``).
    """
    wanted = matrix["run"].get("models", "all")
    names = list(registry.MODELS) if wanted == "all" else list(wanted)
    names = [n for n in names if n not in matrix["run"].get("exclude", [])]
    if only:
        names = [n for n in names if n in only]
    unknown = [n for n in names if n not in registry.MODELS]
    if unknown:
        raise MatrixError(f"unknown model(s) in the matrix: {', '.join(unknown)}")
    skipped = {}
    models = []
    for n in names:
        reason = registry.get(n).unavailable_reason()
        if reason is None and registry.get(n).multiprocess:
            reason = registry.get(ServerConfig.inner).unavailable_reason()
        if reason:
            skipped[n] = reason
        else:
            models.append(n)
    cells: list[tuple[str, int, int]] = []
    for sweep in matrix["sweep"]:
        for c in sweep["conns"]:
            for s in sweep["sizes"]:
                if ("tcp", c, s) not in cells:
                    cells.append(("tcp", c, s))
    tr = matrix.get("transports")
    if tr:
        for t in tr["compare"]:
            if (t, tr["conns"], tr["size"]) not in cells:
                cells.append((t, tr["conns"], tr["size"]))
    tl = matrix.get("tls")
    if tl:
        for s in tl["sizes"]:
            for t in TLS_CELLS:
                cells.append((t, tl["conns"], s))
    return models, skipped, cells


def cell_models(matrix: dict, models: list[str], transport: str) -> list[str]:
    """The models that run a cell of ``transport``: all for TCP; for the others, those that claim it
    (and, if ``[transports] models`` lists some, only those)."""
    if transport == "tcp":
        return models
    if transport in TLS_CELLS:
        wanted = matrix.get("tls", {}).get("models", "all")
        return [m for m in models if registry.get(m).tls and (wanted == "all" or m in wanted)]
    wanted = matrix.get("transports", {}).get("models", "all")
    return [m for m in models if transport in registry.get(m).transports and (wanted == "all" or m in wanted)]


def section_models(matrix: dict, section: str, models: list[str]) -> list[str]:
    """The models a matrix table (``[capacity]``, ``[connections]``, ``[overload]``) runs: its ``models`` ("all" by default)."""
    table = matrix.get(section)
    if not table:
        return []
    wanted = table.get("models", "all")
    return [m for m in models if wanted == "all" or m in wanted]
