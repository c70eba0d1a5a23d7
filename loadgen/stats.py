"""The stats core: no sockets, no clocks. Histograms, merging, percentiles, fairness, CPU.

Latencies are recorded in **nanoseconds** into HdrHistogram-compatible
histograms (the ``hdrhistogram`` package: its encoding, merging and
percentile output). Recording one value through the package costs ~1.4 us of
pure Python, more than this client's whole per-message budget, so the hot
path only appends to an ``array('q')`` and ``record_batch`` adds a whole
batch with numpy, using the package's own bucket index arithmetic.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_NS = 1
HIGHEST_NS = 3_600 * 10**9  # one hour: anything slower is clamped (and counted)
SIGNIFICANT_FIGURES = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9, "p9999": 99.99}


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_FIGURES)


def _counts_view(h: HdrHistogram) -> np.ndarray:
    return np.ctypeslib.as_array(h.counts)


def counts_indices(h: HdrHistogram, values: np.ndarray) -> np.ndarray:
    """Vectorised ``HdrHistogram._counts_index_for`` (same arithmetic, numpy arrays)."""
    v = values.astype(np.int64, copy=False)
    x = v | h.sub_bucket_mask
    # bit length of x, exact for integers < 2**53 (frexp: x = m * 2**e, 0.5 <= m < 1)
    pow2ceiling = np.frexp(x.astype(np.float64))[1].astype(np.int64)
    bucket = pow2ceiling - h.unit_magnitude - (h.sub_bucket_half_count_magnitude + 1)
    sub_bucket = v >> (bucket + h.unit_magnitude)
    return ((bucket + 1) << h.sub_bucket_half_count_magnitude) + (sub_bucket - h.sub_bucket_half_count)


def record_batch(h: HdrHistogram, values) -> int:
    """Record many values at once; returns how many were clamped to the histogram's range."""
    v = np.asarray(values, dtype=np.int64)
    if v.size == 0:
        return 0
    clamped = int(np.count_nonzero((v < LOWEST_NS) | (v > HIGHEST_NS)))
    if clamped:
        v = np.clip(v, LOWEST_NS, HIGHEST_NS)
    idx = counts_indices(h, v)
    counts = _counts_view(h)
    counts += np.bincount(idx, minlength=counts.size).astype(counts.dtype, copy=False)
    h.total_count += int(v.size)
    h.min_value = min(h.min_value, int(v.min()))
    h.max_value = max(h.max_value, int(v.max()))
    return clamped


class Recorder:
    """Hot-path sample buffer: ``append`` is ``array.append`` (~40 ns); ``flush`` batches into a histogram."""

    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples = array("q")

    def take(self) -> array:
        """Hand over the buffered samples and start a new buffer."""
        s, self.samples = self.samples, array("q")
        return s


def merge(encoded: list[bytes | str]) -> HdrHistogram:
    """One histogram holding every sample of the encoded histograms (exact: bucket counts add)."""
    total = new_histogram()
    for e in encoded:
        if e:
            total.add(HdrHistogram.decode(e))
    return total


def encode(h: HdrHistogram) -> str:
    return h.encode().decode("ascii") if h.get_total_count() else ""


def encode_samples(samples) -> str:
    """One interval's latency samples (int64 ns in any buffer: an array('q'), bytes) as an encoded histogram:
    what a worker of either engine reports once a second."""
    h = new_histogram()
    if len(samples):
        record_batch(h, np.frombuffer(samples, dtype=np.int64))
    return encode(h)


def mean_value(h: HdrHistogram) -> float:
    """``h.get_mean_value()`` computed with numpy: the same sum of each bucket's median-equivalent value times
    its count, without the package's Python loop over every bucket (~80 ms per call, once per run per histogram)."""
    if not h.total_count:
        return 0.0
    counts = _counts_view(h)[: h.counts_len]
    idx = np.nonzero(counts)[0]
    bucket = (idx >> h.sub_bucket_half_count_magnitude) - 1
    sub = (idx & (h.sub_bucket_half_count - 1)) + h.sub_bucket_half_count
    first = bucket < 0  # the first bucket uses its lower half too
    sub = np.where(first, sub - h.sub_bucket_half_count, sub)
    bucket = np.where(first, 0, bucket)
    shift = bucket + h.unit_magnitude
    lowest = sub.astype(np.int64) << shift
    median = lowest + ((np.int64(1) << shift) >> 1)
    return float((counts[idx].astype(np.float64) * median).sum() / h.total_count)


def summary_us(h: HdrHistogram) -> dict[str, float | int | None]:
    """Percentiles, max and mean in microseconds (None when empty)."""
    if h.get_total_count() == 0:
        return {**{k: None for k in PERCENTILES}, "max": None, "mean": None, "count": 0}
    out: dict[str, float | int | None] = {
        k: round(h.get_value_at_percentile(p) / 1000.0, 3) for k, p in PERCENTILES.items()
    }
    out["max"] = round(h.get_max_value() / 1000.0, 3)
    out["mean"] = round(mean_value(h) / 1000.0, 3)
    out["count"] = h.get_total_count()
    return out


def percentiles_of(values_ns) -> dict[str, float | None]:
    """Exact percentiles of a small sample (connect times): p50, p90, p99, max in us."""
    if len(values_ns) == 0:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    a = np.asarray(values_ns, dtype=np.float64) / 1000.0
    q = np.percentile(a, [50, 90, 99])
    return {"p50": round(q[0], 3), "p90": round(q[1], 3), "p99": round(q[2], 3), "max": round(a.max(), 3)}


def jain_index(xs) -> float | None:
    """Jain's fairness index: 1.0 = perfectly even, 1/n = one connection got everything."""
    xs = [float(x) for x in xs]
    if not xs:
        return None
    sq = sum(x * x for x in xs)
    if sq == 0:
        return None
    return sum(xs) ** 2 / (len(xs) * sq)


def fairness(per_conn: list[int]) -> dict:
    if not per_conn:
        return {"connections": 0, "min": None, "median": None, "max": None, "jain": None}
    s = sorted(per_conn)
    return {
        "connections": len(s),
        "min": s[0],
        "median": float(np.median(s)),
        "max": s[-1],
        "jain": None if (j := jain_index(s)) is None else round(j, 4),
    }


# -- CPU ---------------------------------------------------------------------------

BUSY = 0.90  # a side using >= 90% of what it may use is the bottleneck


@dataclass(frozen=True)
class SideCpu:
    """CPU seconds one side used over the measured window."""

    seconds: float  # all its processes together
    busiest_process: float  # the most any single process used
    cpus: int  # how many CPUs the side may run on

    def utilisation(self, wall_s: float) -> float:
        """How saturated the side was, 0..1: its busiest single process, or the whole side over its CPUs."""
        if wall_s <= 0:
            return 0.0
        return max(self.busiest_process / wall_s, self.seconds / wall_s / max(1, self.cpus))


def verdict(client: SideCpu, server: SideCpu | None, wall_s: float) -> tuple[str, str]:
    """``(verdict, explanation)``: server-bound, client-bound, both-saturated or neither.

    A verdict must not flatter: when the load generator was at or above ``BUSY`` the cell is never
    ``server-bound``, even if the server was busy too (``both-saturated``): a faster client might have found
    the server a little more, and two such cells cannot be ranked by throughput (server us/msg still can)."""
    cu = client.utilisation(wall_s)
    su = server.utilisation(wall_s) if server else None
    if cu >= BUSY and su is not None and su >= BUSY:
        return "both-saturated", (
            f"both sides saturated (server {su:.0%}, load generator {cu:.0%}): throughput ranks the pair, not the "
            "server alone; compare server us/msg")
    if su is not None and su >= BUSY:
        return "server-bound", f"server {su:.0%} busy, load generator {cu:.0%}"
    if cu >= BUSY:
        return "client-bound", (
            f"WARNING: the load generator was {cu:.0%} busy"
            + (f" and the server only {su:.0%}" if su is not None else "")
            + ": this figure measures the load generator, not the server"
        )
    if su is None:
        return "neither", f"load generator {cu:.0%} busy; server CPU unknown (no --server or --server-pid)"
    return "neither", f"neither side saturated (server {su:.0%}, load generator {cu:.0%}): latency- or rate-bound"


CLIENT_SATURATED = ("client-bound", "both-saturated")  # verdicts whose throughput says nothing about the server alone


def wait_pct(before: dict, after: dict, wall: float) -> float | None:
    """The longest any one process was runnable but waited for a CPU, in % of ``wall`` seconds, from two samples
    of each process's schedstat run delay (seconds, keyed by PID). The longest, not the sum: a starved worker
    offers its connections' load late, while a sum would grow with --workers though none of them waited. None
    when the samples do not cover the same processes (or there are none)."""
    if not before or not after or set(before) != set(after) or wall <= 0:
        return None
    return round(max(after[p] - before[p] for p in after) / wall * 100, 1)


def per_msg_us(cpu_seconds: float, messages: int) -> float | None:
    return None if messages <= 0 else round(cpu_seconds / messages * 1e6, 3)


def finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x
