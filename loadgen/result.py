"""Every document echobench writes: its kind, its schema version, the one check every reader uses; and a run's
exit code, which its result document decides.

A reader refuses a document of another kind or of a version it does not know, in one line (``DocumentError``,
a ValueError), never a traceback and never a guess. Bump a version here, and only here, when a document's
meaning changes; the JSON Schema of the run document is ``docs/result-schema.json``.
"""

from __future__ import annotations

RUN = None  # the load generator's result document (loadgen/run.py --json; one per trial in make bench --mode trials)
RUN_VERSION = 2
IDLE = "echobench-idle"  # loadgen/run.py --idle (connection scale)
SUITE = "echobench-suite"  # make bench's suite.json
PAIRED_CELL = "echobench-paired-cell"  # make bench (paired rounds): one model's slices in one cell
COST = "echobench-cost"  # make bench-cost
AB = "echobench-ab"  # make bench-ab
PYTHONS = "echobench-pythons"  # make bench-pythons: the server side under several interpreters / package versions
OVERLOAD = "echobench-overload"  # make bench-overload: each model's spikes beyond its capacity, and its recovery

VERSIONS = {RUN: RUN_VERSION, IDLE: 2, SUITE: 1, PAIRED_CELL: RUN_VERSION, COST: 1, AB: 1, PYTHONS: 1, OVERLOAD: 1}
NAMES = {RUN: "result", IDLE: "connection-scale", SUITE: "suite", PAIRED_CELL: "paired-cell", COST: "cost", AB: "A/B", PYTHONS: "pythons", OVERLOAD: "overload"}


EXIT_OK = 0
EXIT_FAILURES = 1  # integrity failures or errors
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3  # no server, server died, interrupted, connections failed


def exit_code(res: dict) -> int:
    """A result's exit code (the ``result`` of a run document): incomplete 3, integrity failures or errors 1,
    else 0."""
    if not res["complete"]:
        return EXIT_INCOMPLETE
    if res["integrity_failures"] or sum(res["errors"].values()):
        return EXIT_FAILURES
    return EXIT_OK


class DocumentError(ValueError):
    """Not a document of the kind asked for, or of a version this echobench does not read: one line."""


def version(kind: str | None) -> int:
    return VERSIONS[kind]


def check(doc, kind: str | None, where) -> dict:
    """``doc`` if it is a document of ``kind`` (``RUN`` for a result document, which carries no kind) at the
    version this echobench reads; DocumentError otherwise. ``where``: the file, for the message."""
    if not isinstance(doc, dict):
        raise DocumentError(f"{where}: not an echobench document (a JSON object is expected)")
    if kind is not RUN and doc.get("kind") != kind:
        raise DocumentError(f"{where}: not an echobench {NAMES[kind]} document (kind {doc.get('kind')!r})")
    if doc.get("schema_version") != VERSIONS[kind]:
        raise DocumentError(f"{where}: {NAMES[kind]} schema_version {doc.get('schema_version')!r}; this echobench "
                            f"reads {VERSIONS[kind]}")
    return doc
